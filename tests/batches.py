"""Small random batches in t5x/seqio feature layout, padded with id 0."""

from __future__ import annotations

import numpy as np


def padded_batch(vocab: int, batch: int, input_len: int, target_len: int, seed: int = 0):
    """Encoder inputs, decoder inputs (shifted targets, start id 0), targets; ragged lengths."""
    rng = np.random.default_rng(seed)
    enc = np.zeros((batch, input_len), np.int32)
    tgt = np.zeros((batch, target_len), np.int32)
    for b in range(batch):
        n_in = input_len - (b * 5) % (input_len // 2)
        n_out = target_len - (b * 3) % (target_len // 2)
        enc[b, :n_in] = rng.integers(2, vocab, n_in)
        tgt[b, :n_out] = rng.integers(2, vocab, n_out)
        tgt[b, n_out - 1] = 1  # eos
    dec = np.zeros_like(tgt)
    dec[:, 1:] = tgt[:, :-1]
    return enc, dec, tgt
