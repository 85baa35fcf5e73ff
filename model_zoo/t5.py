"""The T5 encoder-decoder (Raffel et al. 2020) in Flax NNX: dense or Universal stacks.

Called with t5x/seqio feature names and returns float32 logits [batch, target_len, vocab].
Plain T5 is `__call__`: embed, encode, decode, project. The variants enter at named points:
the stacks (`universal.make_stack`: scanned, Universal or with MoE layers; `make_norm`:
KL-Norm), `_encode_bytes` (the hybrid's byte encoder, model_zoo/hybrid_inputs.py) and the
auxiliary losses (model_zoo/aux_losses.py: ACT, router losses, KL-Norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from model_zoo import hybrid_inputs, masks
from model_zoo.aux_losses import auxiliary
from model_zoo.axes import constrain, in_use, param
from model_zoo.config import ModelConfig
from model_zoo.dropout import dropout, fold
from model_zoo.features import check_same_shape, check_tokens
from model_zoo.hybrid_inputs import check_byte_inputs
from model_zoo.layers import DecoderLayer, EncoderLayer
from model_zoo.mixed_einsum import mixed_einsum
from model_zoo.norm import make_norm, token_mean
from model_zoo.relative_position import RelativePositionBias
from model_zoo.tree import TreeStack, at_branch, check_branch, make_final_norm
from model_zoo.universal import make_stack


def _relpos(cfg: ModelConfig, bidirectional: bool, rngs: nnx.Rngs) -> RelativePositionBias:
    return RelativePositionBias(cfg.relative_attention_num_buckets,
                                cfg.relative_attention_max_distance, cfg.num_heads,
                                bidirectional, cfg.d_model ** -0.5, rngs)


def _final_norm(norm, x, aux: dict, weights, rng, deterministic: bool):
    """The stack's final norm; with KL-Norm, aux["kl_norm"] becomes the stack's KL per real
    token: its layers' (each a per-token mean of its norms' sum) plus the final norm's."""
    x, kl = norm.forward(x, rng=rng, deterministic=deterministic)
    if kl is None:
        return x, aux
    layers_kl = jnp.sum(aux["kl_norm"]) if "kl_norm" in aux else 0.0
    return x, {**aux, "kl_norm": layers_kl + token_mean(kl, weights)}


def _layers_and_norm(cfg: ModelConfig, make_layer, side: str, rngs: nnx.Rngs):
    """A stack and its final norm: plain, or a tree's trunk and branches (model_zoo/tree.py)."""
    depth = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
    if cfg.tree is None:
        return make_stack(cfg, make_layer, depth, rngs, side), make_norm(cfg, rngs)
    layers = TreeStack(make_layer, depth, cfg.tree.split(side), len(cfg.tree.branches),
                       cfg.remat_policy, rngs)
    return layers, make_final_norm(cfg, side, make_norm, rngs)


def _branch_kw(branch) -> dict:
    return {} if branch is None else {"branch": branch}


class Encoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.relative_position_bias = _relpos(cfg, True, rngs)
        self.layers, self.final_norm = _layers_and_norm(
            cfg, lambda r, sparse=False: EncoderLayer(cfg, r, sparse), "encoder", rngs)
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x, tokens, segment_ids, positions, *, rng, deterministic, branch=None):
        positions = masks.default_positions(tokens) if positions is None else positions
        bias = self.relative_position_bias(positions, positions)
        mask = masks.encoder_mask(tokens, segment_ids)
        x = dropout(x, self.dropout_rate, fold(rng, 0), deterministic)
        x, aux = self.layers.forward(x, bias, mask, rng=fold(rng, 1), deterministic=deterministic,
                                     weights=tokens > 0, **_branch_kw(branch))
        x, aux = _final_norm(at_branch(self.final_norm, branch), x, aux, tokens > 0,
                             fold(rng, 3), deterministic)
        return dropout(x, self.dropout_rate, fold(rng, 2), deterministic), aux


class Decoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.relative_position_bias = _relpos(cfg, False, rngs)
        self.layers, self.final_norm = _layers_and_norm(
            cfg, lambda r, sparse=False: DecoderLayer(cfg, r, sparse), "decoder", rngs)
        self.dropout_rate = cfg.dropout_rate

    def __call__(self, x, tokens, encoded, cross_mask, segment_ids, positions, *, rng,
                 deterministic, branch=None):
        positions = masks.default_positions(tokens) if positions is None else positions
        bias = self.relative_position_bias(positions, positions)
        mask = masks.decoder_mask(tokens.shape[1], segment_ids)
        x = dropout(x, self.dropout_rate, fold(rng, 0), deterministic)
        # real positions: a segment (packed) or the start id and non-padding tokens
        valid = (segment_ids > 0 if segment_ids is not None
                 else (tokens > 0) | (jnp.arange(tokens.shape[1]) == 0)[None, :])
        x, aux = self.layers.forward(x, bias, mask, encoded, cross_mask, rng=fold(rng, 1),
                                     deterministic=deterministic, weights=valid,
                                     **_branch_kw(branch))
        x, aux = _final_norm(at_branch(self.final_norm, branch), x, aux, valid, fold(rng, 3),
                             deterministic)
        return dropout(x, self.dropout_rate, fold(rng, 2), deterministic), aux

    def step(self, x, index, cache):
        """One position [batch, 1, d_model] through every layer, reading/writing the KV cache."""
        max_len = cache["k"].shape[2]
        keys = jnp.arange(max_len, dtype=jnp.int32)[None, :]
        bias = self.relative_position_bias(jnp.full((1, 1), index, jnp.int32), keys)
        mask = (keys <= index)[:, None, None, :]
        x, cache = self.layers.scan(lambda layer, h, c, _: layer.step(h, bias, mask, c, index),
                                    x, cache)
        return self.final_norm(x), cache


class EncoderDecoder(nnx.Module):
    """T5: shared input embedding, encoder, decoder, tied (scaled) or untied output logits."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, v = config.d_model, config.vocab_size
        self.shared = param(rngs, jax.nn.initializers.normal(1.0), (v, d), ("vocab", "embed"))
        self.encoder = Encoder(config, rngs)
        self.decoder = Decoder(config, rngs)
        if config.tree is not None and config.tree.branch_head:  # one head per branch
            self.lm_head = param(rngs, jax.nn.initializers.normal(d ** -0.5),
                                 (len(config.tree.branches), d, v), ("branch", "embed", "vocab"))
        elif not config.tie_word_embeddings:
            self.lm_head = param(rngs, jax.nn.initializers.normal(d ** -0.5), (d, v),
                                 ("embed", "vocab"))
        b = config.byte_encoder
        if b is not None:  # hybrid: a byte encoder with its own embedding
            self.byte_shared = param(rngs, jax.nn.initializers.normal(1.0),
                                     (b.vocab_size, b.d_model), ("vocab", "embed"))
            self.byte_encoder = Encoder(b.encoder_config(config), rngs)
            if b.d_model != d:
                self.byte_projection = param(rngs, jax.nn.initializers.normal(b.d_model ** -0.5),
                                             (b.d_model, d), (None, "embed"))

    def embed(self, tokens: jax.Array, table: nnx.Param | None = None) -> jax.Array:
        """Rows of `table` (default: the shared token embedding) in the compute dtype."""
        # FSDP gathers the table (fp32: the gradient's scatter-add needs it) before the lookup;
        # a vocab-sharded lookup would move [global batch, length, d_model] activations.
        table = in_use((self.shared if table is None else table)[...], ("vocab", "embed"))
        x = jnp.take(table, tokens, axis=0).astype(self.config.compute_dtype)
        return constrain(x, ("batch", "length", "embed"))

    def encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None, *,
               byte_encoder_input_tokens=None, byte_encoder_segment_ids=None,
               byte_encoder_positions=None, deterministic: bool = True,
               dropout_rng=None) -> jax.Array:
        """Encoder outputs [batch, input_len (+ byte_len), d_model] in the compute dtype.

        A hybrid model (config.byte_encoder) appends the byte encoder's outputs. A tree
        model decodes one branch as a plain T5 (model_zoo.tree.branch_params).
        """
        check_branch(self.config, None)
        return self._encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                            byte_encoder_input_tokens, byte_encoder_segment_ids,
                            byte_encoder_positions, deterministic=deterministic,
                            dropout_rng=dropout_rng)[0]

    def _encode(self, encoder_input_tokens, encoder_segment_ids=None, encoder_positions=None,
                byte_encoder_input_tokens=None, byte_encoder_segment_ids=None,
                byte_encoder_positions=None, *, deterministic: bool = True, dropout_rng=None,
                branch=None):
        check_tokens("encoder_input_tokens", encoder_input_tokens)
        check_same_shape("encoder_segment_ids", encoder_segment_ids,
                         "encoder_input_tokens", encoder_input_tokens)
        check_same_shape("encoder_positions", encoder_positions,
                         "encoder_input_tokens", encoder_input_tokens)
        x, aux = self.encoder(self.embed(encoder_input_tokens), encoder_input_tokens,
                              encoder_segment_ids, encoder_positions, rng=fold(dropout_rng, 0),
                              deterministic=deterministic, branch=branch)
        if "encoder" in self.config.frozen:
            x = jax.lax.stop_gradient(x)
        check_byte_inputs(self.config.byte_encoder is not None, encoder_input_tokens,
                          encoder_segment_ids, byte_encoder_input_tokens,
                          byte_encoder_segment_ids, byte_encoder_positions)
        if self.config.byte_encoder is None:
            return x, aux
        return jnp.concatenate([x, self._encode_bytes(
            byte_encoder_input_tokens, byte_encoder_segment_ids, byte_encoder_positions,
            fold(dropout_rng, 2), deterministic)], axis=1), aux

    def _encode_bytes(self, tokens, segment_ids, positions, rng, deterministic):
        x, _ = self.byte_encoder(self.embed(tokens, self.byte_shared), tokens, segment_ids,
                                 positions, rng=rng, deterministic=deterministic)
        if hasattr(self, "byte_projection"):
            x = jnp.einsum("bte,ed->btd", x,
                           self.byte_projection[...].astype(self.config.compute_dtype))
        if "byte_encoder" in self.config.frozen:
            x = jax.lax.stop_gradient(x)
        return x

    encoder_keys = staticmethod(hybrid_inputs.encoder_keys)

    def decode(self, encoded, encoder_input_tokens, decoder_input_tokens,
               encoder_segment_ids=None, decoder_segment_ids=None, decoder_positions=None, *,
               byte_encoder_input_tokens=None, byte_encoder_segment_ids=None,
               deterministic: bool = True, dropout_rng=None) -> jax.Array:
        """Float32 logits [batch, target_len, vocab] given the encoder outputs."""
        check_branch(self.config, None)
        keys, key_segments = self.encoder_keys(encoder_input_tokens, encoder_segment_ids,
                                               byte_encoder_input_tokens,
                                               byte_encoder_segment_ids)
        return self._decode(encoded, keys, decoder_input_tokens, key_segments,
                            decoder_segment_ids, decoder_positions,
                            deterministic=deterministic, dropout_rng=dropout_rng)[0]

    def _decode(self, encoded, encoder_keys, decoder_input_tokens, encoder_key_segments=None,
                decoder_segment_ids=None, decoder_positions=None, *,
                deterministic: bool = True, dropout_rng=None, project: bool = True,
                branch=None):
        check_tokens("decoder_input_tokens", decoder_input_tokens, encoded.shape[0])
        check_same_shape("decoder_segment_ids", decoder_segment_ids,
                         "decoder_input_tokens", decoder_input_tokens)
        check_same_shape("decoder_positions", decoder_positions,
                         "decoder_input_tokens", decoder_input_tokens)
        cross = masks.cross_mask(encoder_keys, decoder_segment_ids, encoder_key_segments)
        x, aux = self.decoder(self.embed(decoder_input_tokens), decoder_input_tokens, encoded,
                              cross, decoder_segment_ids, decoder_positions,
                              rng=fold(dropout_rng, 1), deterministic=deterministic,
                              branch=branch)
        return (self.logits(x, branch) if project else x), aux

    def init_cache(self, encoded: jax.Array, encoder_input_tokens: jax.Array,
                   max_decode_length: int, byte_encoder_input_tokens=None) -> dict:
        """KV cache for decoding: empty self k/v per layer, cross k/v of `encoded`."""
        cfg = self.config
        check_branch(cfg, None)
        cross_k, cross_v = self.decoder.layers.map_layers(
            lambda layer: layer.cross_attention.project_kv(encoded))
        depth, batch = cross_k.shape[0], encoded.shape[0]
        shape = (depth, batch, max_decode_length, cfg.num_heads, cfg.d_kv)
        zeros = jnp.zeros(shape, cfg.compute_dtype)
        keys, _ = self.encoder_keys(encoder_input_tokens, None, byte_encoder_input_tokens)
        mask = masks.cross_mask(keys, None, None).dense
        return {"k": zeros, "v": zeros, "cross_k": cross_k, "cross_v": cross_v,
                "cross_mask": jnp.broadcast_to(mask, (depth,) + mask.shape)}

    def decode_step(self, cache: dict, tokens: jax.Array, index) -> tuple[jax.Array, dict]:
        """Float32 logits [batch, vocab] for decoder input `tokens` [batch] at `index`."""
        x, cache = self.decoder.step(self.embed(tokens[:, None]), index, cache)
        return self.logits(x)[:, 0], cache

    def output_projection(self, branch=None) -> tuple[jax.Array, float]:
        """(kernel [d_model, vocab] in the compute dtype, scale): logits = scale * x @ kernel.

        Tied embeddings rescale by d_model^-0.5 first, as Mesh-TF T5 did. A tree with
        `branch_head` takes branch `branch`'s head.
        """
        cfg = self.config
        if cfg.tree is not None and cfg.tree.branch_head:
            check_branch(cfg, branch)
            return self.lm_head[...][branch].astype(cfg.compute_dtype), 1.0
        if cfg.tie_word_embeddings:
            return self.shared[...].astype(cfg.compute_dtype).T, cfg.d_model ** -0.5
        return self.lm_head[...].astype(cfg.compute_dtype), 1.0

    def logits(self, x: jax.Array, branch=None) -> jax.Array:
        kernel, scale = self.output_projection(branch)
        if scale != 1.0:
            x = x * scale
        logits = mixed_einsum("btd,dv->btv", x, kernel)
        return constrain(logits, ("batch", "length", "vocab"))

    def __call__(self, encoder_input_tokens, decoder_input_tokens, encoder_segment_ids=None,
                 decoder_segment_ids=None, encoder_positions=None, decoder_positions=None, *,
                 byte_encoder_input_tokens=None, byte_encoder_segment_ids=None,
                 byte_encoder_positions=None, deterministic: bool = True, dropout_rng=None,
                 return_aux: bool = False, return_hidden: bool = False, branch=None):
        """Float32 logits; with `return_aux`, also {'loss': auxiliary loss to add, metrics...}.

        `byte_encoder_*`: the bytes of the same inputs, for a hybrid model only.
        `branch`: a tree model's branch index (an int scalar, traced or not), None otherwise.
        `return_hidden`: the decoder's outputs before `output_projection` instead of logits
        (for a loss that projects them itself, e.g. chunked_cross_entropy).
        """
        if not deterministic and dropout_rng is None and (
                self.config.dropout_rate > 0 or self.config.norm == "kl"):
            raise ValueError("deterministic=False with dropout_rate="
                             f"{self.config.dropout_rate}, norm={self.config.norm!r} needs a "
                             "dropout_rng")
        check_branch(self.config, branch)
        encoded, enc_aux = self._encode(encoder_input_tokens, encoder_segment_ids,
                                        encoder_positions, byte_encoder_input_tokens,
                                        byte_encoder_segment_ids, byte_encoder_positions,
                                        deterministic=deterministic, dropout_rng=dropout_rng,
                                        branch=branch)
        keys, key_segments = self.encoder_keys(encoder_input_tokens, encoder_segment_ids,
                                               byte_encoder_input_tokens,
                                               byte_encoder_segment_ids)
        logits, dec_aux = self._decode(encoded, keys, decoder_input_tokens, key_segments,
                                       decoder_segment_ids, decoder_positions,
                                       deterministic=deterministic, dropout_rng=dropout_rng,
                                       project=not return_hidden, branch=branch)
        if not return_aux:
            return logits
        moe_layers = {side: getattr(self, side).layers.moe_layer_indices
                      for side in ("encoder", "decoder") if self.config.moe is not None}
        return logits, auxiliary(self.config, enc_aux, dec_aux, moe_layers)
