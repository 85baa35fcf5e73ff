"""Autoregressive decoding with a KV cache: greedy, temperature sampling (top-k / top-p),
and beam search with a GNMT length penalty ((5 + len) / 6) ** alpha.

Outputs are [batch, max_decode_length] ids: the sequence up to and including EOS, then 0.
Everything runs inside one jit (lax.while_loop), on whatever mesh the params live on; beam
search keeps each example's beams on the devices holding that example (its bookkeeping
runs per device on its own examples, the cache is reordered within each example), so a
batch-sharded decode gathers no batch per step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fields.choices import require_choice
from fields.integers import require_int
from model_zoo.axes import per_example

METHODS = ("greedy", "sample", "beam")
NEG_INF = -1.0e7


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    max_decode_length: int = 64
    method: str = "greedy"
    temperature: float = 1.0
    top_k: int = 0          # 0: no top-k filter
    top_p: float = 1.0      # 1.0: no nucleus filter
    num_beams: int = 4
    length_penalty: float = 0.6
    eos_id: int = 1

    def __post_init__(self):
        require_choice("DecodeConfig", "method", self.method, METHODS)
        if self.max_decode_length < 1:
            raise ValueError(f"DecodeConfig.max_decode_length={self.max_decode_length} must "
                             "be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"DecodeConfig.temperature={self.temperature} must be > 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"DecodeConfig.top_p={self.top_p} must be in (0, 1]")
        require_int("DecodeConfig", "top_k", self.top_k, 0, meaning="0: no top-k filter")
        require_int("DecodeConfig", "num_beams", self.num_beams, 1)


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """Logits outside the top-k / the top-p probability mass set to NEG_INF (>= 1 kept)."""
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # keep tokens whose preceding mass is < top_p (the first is always kept)
        keep = jnp.concatenate([jnp.ones_like(cumulative[..., :1], bool),
                                cumulative[..., :-1] < top_p], axis=-1)
        cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < cutoff, NEG_INF, logits)
    return logits


def _sample_loop(model, encoder_input_tokens, byte_tokens, cfg: DecodeConfig, rng):
    batch = encoder_input_tokens.shape[0]
    encoded = model.encode(encoder_input_tokens, byte_encoder_input_tokens=byte_tokens)
    cache = model.init_cache(encoded, encoder_input_tokens, cfg.max_decode_length, byte_tokens)
    out = jnp.zeros((batch, cfg.max_decode_length), jnp.int32)

    def cond(state):
        i, _, _, _, done, _ = state
        return (i < cfg.max_decode_length) & ~jnp.all(done)

    def body(state):
        i, cache, last, out, done, rng = state
        logits, cache = model.decode_step(cache, last, i)
        if cfg.method == "greedy":
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            rng, key = jax.random.split(rng)
            logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
            token = jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
        token = jnp.where(done, 0, token)
        out = out.at[:, i].set(token)
        return i + 1, cache, token, out, done | (token == cfg.eos_id), rng

    state = (jnp.int32(0), cache, jnp.zeros((batch,), jnp.int32), out,
             jnp.zeros((batch,), bool), rng)
    return jax.lax.while_loop(cond, body, state)[3]


def _length_penalty(length, alpha: float):
    return ((5.0 + length) / 6.0) ** alpha


def _reorder_beams(x: jax.Array, parent: jax.Array) -> jax.Array:
    """Cache entry x [depth, batch * beams, ...] with each example's beams taken from
    `parent` [batch, beams]: a gather within each example, which stays on its devices."""
    b, k = parent.shape
    grouped = x.reshape(x.shape[0], b, k, *x.shape[2:])
    index = parent.reshape((1, b, k) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(grouped, index, axis=2).reshape(x.shape)


def _beam_step(i, logp, live_seqs, live_lp, fin_seqs, fin_scores, cfg: DecodeConfig):
    """One step of beam bookkeeping for each example, given the next-token log-probs
    logp [batch, beams, vocab]: the new live and finished beams, each live beam's last
    token and the beam it extends (`parent`)."""
    k, vocab = logp.shape[1], logp.shape[2]
    candidates = (live_lp[:, :, None] + logp).reshape(logp.shape[0], k * vocab)
    cand_lp, cand_idx = jax.lax.top_k(candidates, 2 * k)
    cand_beam, cand_token = cand_idx // vocab, (cand_idx % vocab).astype(jnp.int32)
    cand_seqs = jnp.take_along_axis(live_seqs, cand_beam[:, :, None], axis=1)
    cand_seqs = cand_seqs.at[:, :, i].set(cand_token)
    is_eos = cand_token == cfg.eos_id
    # live: best k candidates that did not just end
    live_lp, pick = jax.lax.top_k(jnp.where(is_eos, NEG_INF, cand_lp), k)
    live_seqs = jnp.take_along_axis(cand_seqs, pick[:, :, None], axis=1)
    parent = jnp.take_along_axis(cand_beam, pick, axis=1)
    last = jnp.take_along_axis(cand_token, pick, axis=1)
    # finished: merge those that ended here, scored with the length penalty
    ended = jnp.where(is_eos, cand_lp / _length_penalty(i + 1.0, cfg.length_penalty), NEG_INF)
    all_scores = jnp.concatenate([fin_scores, ended], axis=1)
    all_seqs = jnp.concatenate([fin_seqs, cand_seqs], axis=1)
    fin_scores, keep = jax.lax.top_k(all_scores, k)
    fin_seqs = jnp.take_along_axis(all_seqs, keep[:, :, None], axis=1)
    return live_seqs, live_lp, fin_seqs, fin_scores, last, parent


def _beam_search(model, encoder_input_tokens, byte_tokens, cfg: DecodeConfig):
    b, k, t = encoder_input_tokens.shape[0], cfg.num_beams, cfg.max_decode_length
    alpha = cfg.length_penalty
    enc = jnp.repeat(encoder_input_tokens, k, axis=0)
    byte_enc = None if byte_tokens is None else jnp.repeat(byte_tokens, k, axis=0)
    cache = model.init_cache(model.encode(enc, byte_encoder_input_tokens=byte_enc), enc, t,
                             byte_enc)
    live_seqs = jnp.zeros((b, k, t), jnp.int32)
    live_lp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))
    fin_seqs = jnp.zeros((b, k, t), jnp.int32)
    fin_scores = jnp.full((b, k), NEG_INF, jnp.float32)
    last = jnp.zeros((b, k), jnp.int32)

    def cond(state):
        i, _, _, live_lp, _, fin_scores, _ = state
        best_live = live_lp[:, 0] / _length_penalty(t, alpha)
        worst_finished = jnp.min(fin_scores, axis=1)
        return (i < t) & ~jnp.all(worst_finished > best_live)

    def body(state):
        i, cache, live_seqs, live_lp, fin_seqs, fin_scores, last = state
        logits, cache = model.decode_step(cache, last.reshape(-1), i)
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(b, k, -1)
        live_seqs, live_lp, fin_seqs, fin_scores, last, parent = per_example(
            lambda *a: _beam_step(*a, cfg), i, logp, live_seqs, live_lp, fin_seqs, fin_scores)
        cache = jax.tree.map(lambda x: _reorder_beams(x, parent), cache)
        return i + 1, cache, live_seqs, live_lp, fin_seqs, fin_scores, last

    state = (jnp.int32(0), cache, live_seqs, live_lp, fin_seqs, fin_scores, last)
    _, _, live_seqs, live_lp, fin_seqs, fin_scores, _ = jax.lax.while_loop(cond, body, state)
    any_finished = fin_scores[:, 0] > NEG_INF / 2
    best = jnp.where(any_finished[:, None], fin_seqs[:, 0], live_seqs[:, 0])
    score = jnp.where(any_finished, fin_scores[:, 0],
                      live_lp[:, 0] / _length_penalty(t, alpha))
    return best, score


def decode(model, encoder_input_tokens: jax.Array, cfg: DecodeConfig, rng=None,
           byte_encoder_input_tokens: jax.Array | None = None):
    """Token ids [batch, max_decode_length] (and, for beam search, scores [batch]).

    A hybrid model also takes the bytes of the same inputs, `byte_encoder_input_tokens`.
    """
    if encoder_input_tokens.ndim != 2:
        raise ValueError(f"encoder_input_tokens must be [batch, length], got shape "
                         f"{encoder_input_tokens.shape}")
    vocab = model.config.vocab_size
    if cfg.top_k > vocab or (cfg.method == "beam" and cfg.num_beams > vocab):
        raise ValueError(f"DecodeConfig top_k={cfg.top_k} / num_beams={cfg.num_beams} exceed "
                         f"the model's vocab_size={vocab}")
    if cfg.method == "beam":
        return _beam_search(model, encoder_input_tokens, byte_encoder_input_tokens, cfg)
    if cfg.method == "sample" and rng is None:
        raise ValueError("DecodeConfig.method='sample' needs an rng")
    return _sample_loop(model, encoder_input_tokens, byte_encoder_input_tokens, cfg, rng)
