"""The embedded demo corpus: CPython's own documentation prose, present on every machine.

`pydoc_data.topics` ships with CPython: the Python Language Reference and Library topics
that `help()` shows (about 460 KB of English prose and code). Licence: the Python
documentation is distributed under the PSF License Agreement (Python Software Foundation).
"""

from __future__ import annotations

import hashlib

from fields.choices import require_choice

MIN_WORDS = 8
VALIDATION_EVERY = 20  # 1 paragraph in 20 (by content hash) is held out


def paragraphs() -> list[str]:
    """Prose paragraphs (indented code blocks dropped), each joined onto one line."""
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            if not block.strip() or block.startswith(" "):
                continue
            text = " ".join(block.split())
            if len(text.split()) >= MIN_WORDS:
                out.append(text)
    return out


def _held_out(text: str) -> bool:
    return int(hashlib.sha1(text.encode()).hexdigest(), 16) % VALIDATION_EVERY == 0


def split(name: str) -> list[str]:
    """The `train` or `validation` paragraphs; disjoint, stable across machines."""
    require_choice("demo corpus", "split", name, ("train", "validation"))
    return [p for p in paragraphs() if _held_out(p) == (name == "validation")]
