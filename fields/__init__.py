"""Checks shared by every package's config dataclasses, the path layer, and the readers of
older stored formats (old_formats); imports nothing of t5pod."""
