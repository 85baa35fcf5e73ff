"""A step on disk: the orbax manager, its manifest and verification, the model_dir lock and
model.json, and the one loader of params from any source (loader.py)."""
