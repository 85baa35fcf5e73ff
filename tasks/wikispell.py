"""WikiSpell (Liu et al. 2022, "Character-Aware Models Improve Visual Text Rendering"):
spell a word, character by character.

Words come from a frequency-ranked list (by default the English list of the `wordfreq`
package, letters a-z only) and are bucketed by rank: the top 1%, 1-10%, 10-20%, 20-30%
and the bottom 50%. Train: `train_size` words, half uniformly from the bottom 50% and half
frequency-weighted from the top 50%. Validation and test: `eval_per_bucket` words per
bucket, disjoint from train and from each other. Input: the word; target: its characters
separated by spaces ("cat" -> "c a t").

    tasks.wikispell.seed = 0
    tasks.wikispell.train_size = 10000
    tasks.wikispell.eval_per_bucket = 1000
    tasks.wikispell.word_list = '/data/words.tsv'   # optional: "word[<TAB>count]" lines,
                                                    # most frequent first
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging

import numpy as np

from fields import paths
from fields.choices import require_choice

from tasks import settings_scope

# (name, first rank fraction, end rank fraction): the paper's buckets.
BUCKETS = (("top_1", 0.0, 0.01), ("top_1_10", 0.01, 0.10), ("top_10_20", 0.10, 0.20),
           ("top_20_30", 0.20, 0.30), ("bottom_50", 0.50, 1.0))
BUCKET_NAMES = tuple(name for name, _, _ in BUCKETS)
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class WikiSpellConfig:
    seed: int = 0
    train_size: int = 10000
    eval_per_bucket: int = 1000
    word_list: str | None = None    # None: wordfreq's English list

    def __post_init__(self):
        if self.train_size < 2 or self.eval_per_bucket < 1:
            raise ValueError(f"WikiSpell train_size={self.train_size} must be >= 2 and "
                             f"eval_per_bucket={self.eval_per_bucket} >= 1")


def wikispell(seed: int = 0, train_size: int = 10000, eval_per_bucket: int = 1000,
              word_list: str | None = None) -> WikiSpellConfig:
    return WikiSpellConfig(seed, train_size, eval_per_bucket, word_list)


def spell(word: str) -> str:
    """The target: the word's characters separated by spaces."""
    return " ".join(word)


def check_bucket(name: str) -> str:
    require_choice("WikiSpell", "bucket", name, BUCKET_NAMES)
    return name


def wordfreq_words() -> tuple[list[str], np.ndarray]:
    """English words of letters a-z from wordfreq, most frequent first, with frequencies."""
    import wordfreq

    freqs = wordfreq.get_frequency_dict("en", wordlist="large")
    items = sorted(((w, f) for w, f in freqs.items() if w.isascii() and w.isalpha()),
                   key=lambda wf: (-wf[1], wf[0]))
    return [w for w, _ in items], np.array([f for _, f in items], np.float64)


def read_word_list(path: str) -> tuple[list[str], np.ndarray, dict]:
    """A user's list: one `word` or `word<TAB>count` per line, most frequent first.

    Empty lines and words that are not ASCII letters are skipped and counted (bytes of
    other scripts are fine for ByT5, but the SentencePiece baseline and the bucket ranks
    assume the letters-only list the paper used). Without counts, frequencies follow
    Zipf's law (1 / rank). Duplicates keep their first (most frequent) rank.
    """
    if not paths.isfile(path):
        raise FileNotFoundError(f"WikiSpell word_list {path} does not exist")
    words, counts, seen = [], [], set()
    skipped = {"empty": 0, "not_ascii_letters": 0, "duplicate": 0}
    with io.StringIO(paths.read_text(path)) as f:
        for number, line in enumerate(f, 1):
            word, _, count = line.rstrip("\n").partition("\t")
            word = word.strip()
            if not word:
                skipped["empty"] += 1
                continue
            if not (word.isascii() and word.isalpha()):
                skipped["not_ascii_letters"] += 1
                continue
            if word in seen:
                skipped["duplicate"] += 1
                continue
            try:
                counts.append(float(count) if count.strip() else None)
            except ValueError:
                raise ValueError(f"{path}:{number}: count {count!r} is not a number") from None
            seen.add(word)
            words.append(word)
    if not words:
        raise ValueError(f"WikiSpell word_list {path} holds no usable word ({skipped})")
    if any(c is None for c in counts):
        freqs = 1.0 / np.arange(1, len(words) + 1)
    else:
        freqs = np.array(counts, np.float64)
    return words, freqs, skipped


def bucket_ranges(n: int) -> dict[str, range]:
    """The rank range (0 = most frequent) of each bucket in a list of n words."""
    return {name: range(int(round(lo * n)), int(round(hi * n))) for name, lo, hi in BUCKETS}


@functools.lru_cache(maxsize=4)
def splits(config: WikiSpellConfig) -> dict[str, list[tuple[str, str]]]:
    """{split: [(word, bucket), ...]}, deterministic for the config (seed included)."""
    if config.word_list:
        words, freqs, skipped = read_word_list(config.word_list)
        if any(skipped.values()):
            logging.getLogger(__name__).warning("WikiSpell word_list %s: skipped %s lines",
                                                config.word_list, skipped)
    else:
        words, freqs = wordfreq_words()
    n, rng = len(words), np.random.default_rng(config.seed)
    ranges = bucket_ranges(n)
    bucket_of = np.empty(n, object)
    for name, r in ranges.items():
        bucket_of[r.start:r.stop] = name

    # Validation and test first (the top 1% is too small to leave 2 x 1000 words after a
    # frequency-weighted train draw), then train from the rest.
    taken = np.zeros(n, bool)
    out = {"train": [], "validation": [], "test": []}
    for name, r in ranges.items():
        need = 2 * config.eval_per_bucket
        if len(r) < need:
            raise ValueError(f"WikiSpell bucket {name!r} holds {len(r)} words, fewer than "
                             f"validation + test = {need}; lower eval_per_bucket "
                             f"({config.eval_per_bucket}) or use a longer word list")
        picked = rng.choice(np.arange(r.start, r.stop), need, replace=False)
        taken[picked] = True
        out["validation"] += [(words[i], name) for i in picked[:config.eval_per_bucket]]
        out["test"] += [(words[i], name) for i in picked[config.eval_per_bucket:]]

    half = config.train_size // 2
    top = np.array([i for i in range(n // 2) if not taken[i]], np.int64)
    bottom = np.array([i for i in range(n // 2, n) if not taken[i]], np.int64)
    if half > len(bottom) or config.train_size - half > len(top):
        raise ValueError(f"WikiSpell train_size={config.train_size} needs {half} unused words "
                         f"in each half of the list; it has {len(top)} (top) and "
                         f"{len(bottom)} (bottom) left after validation and test")
    train = np.concatenate([
        rng.choice(top, config.train_size - half, replace=False,
                   p=freqs[top] / freqs[top].sum()),
        rng.choice(bottom, half, replace=False)])
    out["train"] = [(words[i], bucket_of[i] or "top_30_50") for i in rng.permutation(train)]
    return out


def examples(split: str, config: WikiSpellConfig | None = None,
             bucket: str | None = None) -> list[dict]:
    """[{'inputs', 'targets', 'bucket'}] of a split, optionally one bucket only."""
    require_choice("WikiSpell", "split", split, SPLITS)
    if bucket is not None:
        check_bucket(bucket)
    rows = splits(config or settings_scope.get("wikispell", WikiSpellConfig))[split]
    return [{"inputs": w, "targets": spell(w), "bucket": b} for w, b in rows
            if bucket is None or b == bucket]


def exact_match_by_bucket(targets, predictions) -> dict[str, float]:
    """Exact match (%) overall and per bucket; targets/predictions are (bucket, text) pairs."""
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    hits: dict[str, list[bool]] = {}
    for (bucket, target), (_, prediction) in zip(targets, predictions, strict=True):
        hits.setdefault(bucket, []).append(target == prediction)
    out = {"exact_match": 100.0 * float(np.mean([h for v in hits.values() for h in v]))}
    for name in BUCKET_NAMES:
        if name in hits:
            out[f"exact_match/{name}"] = 100.0 * float(np.mean(hits[name]))
    return out


def with_bucket(output: str, example=None, is_target: bool = False):
    """seqio postprocessor: (bucket, text), so the metric can group by bucket."""
    bucket = example["bucket"] if example is not None and "bucket" in example else b""
    bucket = bucket.decode() if isinstance(bucket, bytes) else str(bucket)
    text = output.decode() if isinstance(output, bytes) else output
    return bucket, text.strip()


def frequency_weighted_text(lines: int = 20000, words_per_line: int = 16,
                            seed: int = 0) -> list[str]:
    """Lines of words drawn by corpus frequency: what a SentencePiece model of ordinary
    text sees, so that frequent words become single pieces (a character-blind vocabulary)."""
    words, freqs = wordfreq_words()
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(words), size=(lines, words_per_line), p=freqs / freqs.sum())
    return [" ".join(words[i] for i in row) for row in ids]
