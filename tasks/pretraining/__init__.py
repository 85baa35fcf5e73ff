"""Pretraining: span corruption and the corpora it reads (embedded demo, Zipf, a user's files)."""
