"""A pretraining corpus in which words occur with their real frequencies, generated locally.

Documents are drawn from wordfreq's English list (the WikiSpell word list, letters a-z)
with a cache model of burstiness: each word after the first is, with probability
`repeat_probability`, a copy of a uniformly chosen earlier word of the same document, and
otherwise a fresh draw by frequency. Both choices keep every word's expected frequency
equal to its wordfreq frequency (a copied word was itself drawn by frequency), so frequent
words occur far more often than rare ones, as in real text, and a word tends to come back
within its document, as in real text.

For the char-blind model the text is tokenized with its SentencePiece model by subword
sampling (Kudo 2018) at `sampling_alpha`: most occurrences keep the usual segmentation
(a frequent word is one piece), some are split into smaller pieces. This stands in for
the surface variety a web corpus gives a token model (case, hyphenation, typos, inflected
forms): the only way a char-blind model can learn what its single-piece words are made
of. Span corruption that hides one occurrence of a word while another, segmented
differently, stays visible asks for exactly that. `sampling_alpha = 0` gives T5's single
segmentation: no occurrence of a one-piece word then shows its characters.

    tasks.zipf_corpus.documents = 20000
    tasks.zipf_corpus.words_per_document = 32
    tasks.zipf_corpus.repeat_probability = 0.5
    tasks.zipf_corpus.sampling_alpha = 0.1
    tasks.zipf_corpus.seed = 0
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from fields.choices import require_choice

SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class ZipfCorpusConfig:
    documents: int = 20000            # train; validation has documents // 100 (at least 10)
    words_per_document: int = 32
    repeat_probability: float = 0.5
    sampling_alpha: float = 0.1       # 0: the usual single segmentation
    seed: int = 0

    def __post_init__(self):
        if self.documents < 1 or self.words_per_document < 1:
            raise ValueError(f"zipf_corpus documents={self.documents} and "
                             f"words_per_document={self.words_per_document} must be >= 1")
        if not 0.0 <= self.repeat_probability < 1.0:
            raise ValueError(f"zipf_corpus repeat_probability={self.repeat_probability} "
                             "must be in [0, 1)")
        if self.sampling_alpha < 0.0:
            raise ValueError(f"zipf_corpus sampling_alpha={self.sampling_alpha} must be >= 0 "
                             "(0: no subword sampling)")


def zipf_corpus(documents: int = 20000, words_per_document: int = 32,
                repeat_probability: float = 0.5, sampling_alpha: float = 0.1,
                seed: int = 0) -> ZipfCorpusConfig:
    return ZipfCorpusConfig(documents, words_per_document, repeat_probability,
                            sampling_alpha, seed)


def check_split(split: str) -> str:
    require_choice("zipf_corpus", "split", split, SPLITS)
    return split


def word_ids(config: ZipfCorpusConfig, split: str, freqs: np.ndarray) -> np.ndarray:
    """[documents, words_per_document] ranks into the word list (0 = most frequent)."""
    count = config.documents if check_split(split) == "train" else max(config.documents // 100,
                                                                        10)
    rng = np.random.default_rng([config.seed, SPLITS.index(split)])
    ids = rng.choice(len(freqs), size=(count, config.words_per_document), p=freqs / freqs.sum())
    repeat = rng.random(ids.shape) < config.repeat_probability
    rows = np.arange(count)
    for i in range(1, config.words_per_document):
        earlier = ids[rows, (rng.random(count) * i).astype(np.int64)]
        ids[:, i] = np.where(repeat[:, i], earlier, ids[:, i])
    return ids


@functools.lru_cache(maxsize=4)
def texts(config: ZipfCorpusConfig, split: str) -> tuple[str, ...]:
    """The documents as lines of space-separated words, deterministic for the config."""
    from tasks.wikispell import wordfreq_words

    words, freqs = wordfreq_words()
    return tuple(" ".join(words[i] for i in row) for row in word_ids(config, split, freqs))


@functools.lru_cache(maxsize=4)
def sentencepiece_ids(config: ZipfCorpusConfig, split: str, model_file: str) -> tuple:
    """The documents as SentencePiece ids, subword-sampled at `sampling_alpha` (seeded)."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
    docs = texts(config, split)
    if config.sampling_alpha == 0.0:
        return tuple(sp.encode(list(docs)))
    sentencepiece.set_random_generator_seed(config.seed * 2 + SPLITS.index(split) + 1)
    # one thread: the sampler's random stream is then one deterministic sequence
    return tuple(sp.encode(list(docs), enable_sampling=True, alpha=config.sampling_alpha,
                           nbest_size=-1, num_threads=1))
