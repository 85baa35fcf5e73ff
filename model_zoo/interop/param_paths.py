"""A t5pod param by its dotted path (`encoder.final_norm.scale`) in a nested param dict,
as the HF and t5x converters name the params they read and write."""

from __future__ import annotations


def get(tree: dict, dotted: str):
    """The value at `dotted` (KeyError naming the first missing part)."""
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def put(tree: dict, dotted: str, value) -> None:
    """Set `dotted` to `value`, making the dicts above it where missing."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value
