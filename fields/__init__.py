"""Checks shared by every package's config dataclasses; imports nothing of t5pod."""
