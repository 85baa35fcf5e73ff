"""The train step (gradient accumulation, loss scaling, skip-on-overflow) and the eval step.

Both are pure functions of (state, batch) built around a `ModelDef`; `training.trainer`
jits them with shardings. Batches use t5x feature names: encoder_input_tokens,
decoder_input_tokens, decoder_target_tokens, decoder_loss_weights (+ optional segment ids
and positions for packed inputs). A TreeDNN tree's batch also holds `branch_index` [batch]
(every row its branch, one branch per batch): the step runs that branch and updates the
trunk and that branch only (`branch_masks`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fields.integers import require_int
from model_zoo.chunked_cross_entropy import chunked_cross_entropy_loss
from model_zoo.model_def import ModelDef
from model_zoo.losses import LossSums, cross_entropy_loss
from training.loss_normalization import check_factor, factor_and_weights, target_weights
from training.loss_scale import LossScaleConfig, all_finite, update_loss_scale
from training.train_state import TrainState
from training.throughput import nonpadding_tokens

MODEL_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "encoder_segment_ids",
                  "decoder_segment_ids", "encoder_positions", "decoder_positions",
                  "byte_encoder_input_tokens", "byte_encoder_segment_ids",
                  "byte_encoder_positions")


BRANCH_INDEX = "branch_index"

# Per-token weights of the objective when they are not decoder_loss_weights (a per-sequence
# average); the train step adds them to the global batch before splitting it.
_LOSS_WEIGHTS = "_objective_loss_weights"


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """`vocab_chunk` > 0: fuse the output layer with the loss over that many target
    positions at a time (model_zoo.chunked_cross_entropy), never holding whole logits.

    `loss_normalizing_factor` is t5x's (training.loss_normalization): what the train step
    divides the summed token losses of the global batch by. The train metrics `loss`,
    `z_loss`, `accuracy` and the eval step stay per-token means over the target weights
    whatever it is (comparable across runs); `normalized_loss` is the normalized objective.
    """

    z_loss: float = 1e-4
    label_smoothing: float = 0.0
    vocab_chunk: int = 0
    loss_normalizing_factor: float | str = "NUM_REAL_TARGET_TOKENS"

    def __post_init__(self):
        require_int("LossConfig", "vocab_chunk", self.vocab_chunk, 0,
                    meaning="0: plain logits; N: target positions per fused chunk")
        try:
            factor = check_factor(self.loss_normalizing_factor)
        except ValueError as e:
            raise ValueError(f"LossConfig.{e}") from None
        object.__setattr__(self, "loss_normalizing_factor", factor)


def _forward_sums(mdef: ModelDef, params, batch, loss: LossConfig, *, rng,
                  deterministic: bool) -> tuple[LossSums, dict]:
    """Loss sums over the targets, and the model's auxiliary losses/metrics (scalars).

    `aux["loss"]` (e.g. ACT's ponder cost, MoE balancing) is a per-token mean that the
    train step adds to the objective.
    """
    features = {k: batch[k] for k in MODEL_FEATURES if k in batch}
    if BRANCH_INDEX in batch:
        features["branch"] = batch[BRANCH_INDEX][0]
    model = mdef.bind(params)
    out, aux = model(**features, deterministic=deterministic, dropout_rng=rng,
                     return_aux=True, return_hidden=loss.vocab_chunk > 0)
    weights, loss_weights = target_weights(batch), batch.get(_LOSS_WEIGHTS)
    if loss.vocab_chunk:
        kernel, scale = model.output_projection(features.get("branch"))
        sums = chunked_cross_entropy_loss(out, kernel, batch["decoder_target_tokens"], weights,
                                          scale=scale, chunk=loss.vocab_chunk,
                                          z_loss=loss.z_loss,
                                          label_smoothing=loss.label_smoothing,
                                          loss_weights=loss_weights)
    else:
        sums = cross_entropy_loss(out, batch["decoder_target_tokens"], weights,
                                  z_loss=loss.z_loss, label_smoothing=loss.label_smoothing,
                                  loss_weights=loss_weights)
    return sums, {k: v for k, v in aux.items() if jnp.ndim(v) == 0}


def split_microbatches(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...] taking every k-th example, so a data-sharded batch stays local."""
    def split(x):
        return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _selected(is_branch: bool, new, old, branch):
    """`new` where a leaf is not per-branch; else `new` in row `branch`, `old` elsewhere."""
    if not is_branch:
        return new
    rows = (jnp.arange(new.shape[0]) == branch).reshape((-1,) + (1,) * (new.ndim - 1))
    return jnp.where(rows, new, old)


def keep_other_branches(masks: tuple, branch, new_params, old_params, new_opt, old_opt):
    """(params, opt_state) with every per-branch leaf's other branches' rows unchanged.

    Optimizers move params and their state even where a gradient is zero (momentum, decayed
    second moments, weight decay), so a branch's params and state change only on its own
    batches. `masks`: (params, opt_state)-shaped trees of bools, True for a leaf that leads
    with the `branch` axis (training.trainer.branch_masks)."""
    param_mask, opt_mask = masks
    pick = lambda m, n, o: _selected(m, n, o, branch)  # noqa: E731
    return (jax.tree.map(pick, param_mask, new_params, old_params),
            jax.tree.map(pick, opt_mask, new_opt, old_opt))


def make_train_step(mdef: ModelDef, optimizer: optax.GradientTransformation,
                    schedule: Callable, loss: LossConfig, loss_scale: LossScaleConfig,
                    microbatches: int = 1, deterministic: bool = False,
                    frozen: tuple[str, ...] = (), branch_masks: tuple | None = None):
    """(state, batch) -> (state, metrics). Grads of every microbatch are summed in fp32.

    Params under the top-level names in `frozen` are never updated. The loss normalizing
    factor (and a per-sequence average's token weights) come from the whole batch. With
    `branch_masks` (a tree), the batch's `branch_index` picks the branch that is updated;
    the metrics hold it as `branch_index`.
    """

    def train_step(state: TrainState, batch: dict):
        total_weight = jnp.maximum(jnp.sum(target_weights(batch)), 1.0)
        factor, loss_weights = factor_and_weights(loss.loss_normalizing_factor, batch)
        if loss.loss_normalizing_factor == "AVERAGE_PER_SEQUENCE":
            batch = {**batch, _LOSS_WEIGHTS: loss_weights}
        scale = state.loss_scale.scale
        step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

        def grads_of(micro, index):
            def objective(params):
                sums, aux = _forward_sums(mdef, params, micro, loss,
                                          rng=jax.random.fold_in(step_rng, index),
                                          deterministic=deterministic)
                total = sums.objective / factor + aux["loss"] / microbatches
                return total * scale, (sums, aux)
            return jax.grad(objective, has_aux=True)(state.params)

        if microbatches == 1:
            grads, (sums, aux) = grads_of(batch, 0)
        else:
            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            zero_sums = LossSums(*(jnp.zeros((), jnp.float32),) * 5)
            zero_aux = jax.eval_shape(lambda: grads_of(
                jax.tree.map(lambda x: x[0], split_microbatches(batch, microbatches)), 0)[1][1])
            zero_aux = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zero_aux)

            def body(carry, xs):
                acc, acc_sums, acc_aux = carry
                micro, index = xs
                g, (s, a) = grads_of(micro, index)
                return (jax.tree.map(jnp.add, acc, g), jax.tree.map(jnp.add, acc_sums, s),
                        jax.tree.map(lambda u, v: u + v / microbatches, acc_aux, a)), None

            (grads, sums, aux), _ = jax.lax.scan(
                body, (zeros, zero_sums, zero_aux),
                (split_microbatches(batch, microbatches), jnp.arange(microbatches)))

        grads = jax.tree.map(lambda g: g.astype(jnp.float32) / scale, grads)
        finite = all_finite(grads)
        updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
        updates = {k: jax.tree.map(jnp.zeros_like, u) if k in frozen else u
                   for k, u in updates.items()}
        new_params = optax.apply_updates(state.params, updates)
        if branch_masks is not None:
            branch = batch[BRANCH_INDEX][0]
            new_params, new_opt = keep_other_branches(branch_masks, branch, new_params,
                                                      state.params, new_opt, state.opt_state)
        keep = lambda new, old: jax.tree.map(  # noqa: E731
            lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(
            step=state.step + 1, params=keep(new_params, state.params),
            opt_state=keep(new_opt, state.opt_state), rng=state.rng,
            loss_scale=update_loss_scale(loss_scale, state.loss_scale, finite))
        metrics = {
            "loss": sums.loss / total_weight, "z_loss": sums.z_loss / total_weight,
            "accuracy": sums.correct / total_weight, "tokens": sums.weight,
            "nonpadding_tokens": nonpadding_tokens(batch),
            "normalized_loss": sums.objective / factor,
            "grad_norm": jnp.where(finite, _global_norm(grads), jnp.inf),
            "loss_scale": scale, "skipped": new_state.loss_scale.skipped,
            "skipped_in_a_row": new_state.loss_scale.skipped_in_a_row,
            # the optimizer counts applied steps only (skipped ones are not)
            "learning_rate": jnp.asarray(schedule(state.step - state.loss_scale.skipped),
                                         jnp.float32),
            **{("aux_loss" if k == "loss" else k): v for k, v in aux.items()},
        }
        if branch_masks is not None:
            metrics["branch_index"] = batch[BRANCH_INDEX][0]
        return new_state, metrics

    return train_step


def make_eval_step(mdef: ModelDef, loss: LossConfig):
    """(params, batch) -> metric sums (loss, z_loss, correct, weight) for aggregation."""

    def eval_step(params, batch):
        sums, _ = _forward_sums(mdef, params, batch, loss, rng=None, deterministic=True)
        return {"loss": sums.loss, "z_loss": sums.z_loss, "correct": sums.correct,
                "weight": sums.weight}

    return eval_step
