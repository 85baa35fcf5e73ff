"""Adafactor per matrix: stacked layers/experts give what optax.adafactor gives each layer's
(and expert's) own matrix; its state is laid out like the params."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from model_zoo.axes import LogicalAxes
from tests.train_helpers import make_trainer
from training.adafactor import adafactor, matrix_spec

L, E, D, H, K, F, V, B = 2, 2, 8, 2, 6, 16, 20, 4
MIN_DIM = 4  # small enough that optax's own heuristic factors each [D, H*K] / [D, F] slice

# name: (shape, logical axes, the per-matrix slices as a [n, ...] array, written out here)
LEAVES = {
    "query": ((L, D, H, K), ("layers", "embed", "heads", "kv"), lambda x: x.reshape(L, D, H * K)),
    "out": ((L, H, K, D), ("layers", "heads", "kv", "embed"), lambda x: x.reshape(L, H * K, D)),
    "wi": ((L, E, D, F), ("layers", "expert", "embed", "mlp"), lambda x: x.reshape(L * E, D, F)),
    "wo": ((L, E, F, D), ("layers", "expert", "mlp", "embed"), lambda x: x.reshape(L * E, F, D)),
    "router": ((L, D, E), ("layers", "embed", "expert"), lambda x: x),
    "shared": ((V, D), ("vocab", "embed"), lambda x: x[None]),
    "final_norm": ((D,), ("embed",), lambda x: x[None]),
    "layer_norm": ((L, D), ("layers", "embed"), lambda x: x),
    "relpos": ((H, B), ("heads", "relpos_buckets"), lambda x: x[None]),
}
FACTORED = {"query", "out", "wi", "wo", "shared"}
STEPS, SPIKE = 4, 2


def _params_and_grads():
    rng = np.random.default_rng(0)
    params, grads = {}, []
    for name, (shape, axes, _) in LEAVES.items():
        x = rng.normal(size=shape).astype(np.float32)
        if axes[0] == "layers":  # layers of different scale: the parameter scale is per layer
            x *= (1.0 + 3.0 * np.arange(L)).reshape((L,) + (1,) * (len(shape) - 1))
        params[name] = jnp.asarray(x)
    for step in range(STEPS):
        g = {}
        for name, (shape, axes, _) in LEAVES.items():
            x = rng.normal(size=shape).astype(np.float32) * 1e-2
            if step == SPIKE and axes[0] == "layers":
                x[0] *= 100.0  # layer 0 only: its update clipping triggers, layer 1's must not
            g[name] = jnp.asarray(x)
        grads.append(g)
    return params, grads


def _optax(factored, clipping=1.0, weight_decay=1e-3):
    return optax.adafactor(1e-2, min_dim_size_to_factor=MIN_DIM, factored=factored,
                           clipping_threshold=clipping, weight_decay_rate=weight_decay)


def _reference(params, grads, factored, clipping=1.0):
    """optax.adafactor on every layer's/expert's matrix on its own: params after each step
    and the last second-moment state, as [n, ...] per leaf."""
    out_params, out_state = [], {}
    slices = {n: list(LEAVES[n][2](p)) for n, p in params.items()}
    opt = _optax(factored, clipping)
    states = {n: [opt.init(s) for s in ss] for n, ss in slices.items()}
    for g in grads:
        for n, ss in slices.items():
            gs = LEAVES[n][2](g[n])
            for i, s in enumerate(ss):
                u, states[n][i] = opt.update(gs[i], states[n][i], s)
                ss[i] = optax.apply_updates(s, u)
        out_params.append({n: jnp.stack(ss).reshape(params[n].shape) for n, ss in slices.items()})
    for n in slices:
        rms = [st[0] for st in states[n]]
        out_state[n] = {k: np.stack([getattr(r, k) for r in rms]) for k in ("v_row", "v_col", "v")}
    return out_params, out_state


def _ours(params, grads, factored):
    axes = {n: LogicalAxes(a) for n, (_, a, _) in LEAVES.items()}
    opt = adafactor(1e-2, axes, factored=factored, min_dim_size_to_factor=MIN_DIM,
                    weight_decay_rate=1e-3)
    state = opt.init(params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (optax.apply_updates(p, u), s))(
        *opt.update(g, s, p)))
    out = []
    for g in grads:
        params, state = step(params, state, g)
        out.append(params)
    return out, state[0]


@pytest.mark.parametrize("factored", [True, False])
def test_matches_optax_per_matrix(factored):
    params, grads = _params_and_grads()
    want, want_state = _reference(params, grads, factored)
    got, got_state = _ours(params, grads, factored)
    for step in range(STEPS):
        for n in LEAVES:
            np.testing.assert_allclose(got[step][n], want[step][n], rtol=2e-5, atol=1e-7,
                                       err_msg=f"{n} after step {step}")
    factored_here = {n for n, s in want_state.items() if s["v_row"][0].size > 1}
    assert factored_here == (FACTORED if factored else set())  # the reference does factor
    for n, s in want_state.items():  # batch dims lead: our state leaf is [n slices, ...]
        used = ("v_row", "v_col") if n in factored_here else ("v",)
        for k in used:
            ours = np.asarray(getattr(got_state, k)[n]).reshape(s[k].shape)
            np.testing.assert_allclose(ours, s[k], rtol=2e-5, err_msg=f"{k} of {n}")


def test_reference_discriminates():
    """At the spike layer 0's update RMS is well above the clipping threshold (1.0) and layer
    1's is not, and the stacked leaf as one matrix (plain optax.adafactor) gives other
    updates: the comparison above can fail."""
    params, grads = _params_and_grads()
    rms = optax.scale_by_factored_rms(min_dim_size_to_factor=MIN_DIM)
    layers = list(LEAVES["query"][2](params["query"]))
    states = [rms.init(p) for p in layers]
    for g in grads[:SPIKE + 1]:
        out = [rms.update(x, s, p) for x, s, p in zip(LEAVES["query"][2](g["query"]), states,
                                                       layers, strict=True)]
        states = [s for _, s in out]
    spike_rms = [float(jnp.sqrt(jnp.mean(jnp.square(u)))) for u, _ in out]
    assert spike_rms[0] > 1.3 and spike_rms[1] < 1.0, spike_rms
    stacked = optax.apply_updates(params, _optax(True).update(
        grads[0], _optax(True).init(params), params)[0])
    ours, _ = _ours(params, grads[:1], True)
    assert not np.allclose(stacked["query"][1], ours[0]["query"][1], rtol=1e-3)


def test_factor_rule():
    assert matrix_spec(("layers", "embed", "heads", "kv"), (2, 8, 2, 6)).rows == (1,)
    assert matrix_spec(("layers", "heads", "kv", "embed"), (2, 2, 6, 8)).cols == (1, 2)
    spec = matrix_spec(("layers", "expert", "mlp", "embed"), (2, 2, 512, 512))
    assert (spec.batch, spec.rows, spec.cols) == ((0, 1), (3,), (2,))
    # the router's expert dim is its output, not a stack of matrices
    assert matrix_spec(("layers", "embed", "expert"), (2, 512, 8)).batch == (0,)
    # 2-D and unbatched: optax's heuristic, never below min_dim_size_to_factor
    assert not matrix_spec(("vocab", "embed"), (32128, 64)).factored
    assert matrix_spec(("vocab", "embed"), (32128, 768)).rows == (1,)
    assert not matrix_spec(("heads", "relpos_buckets"), (64, 32)).factored
    with pytest.raises(ValueError, match="relpos_buckets"):
        matrix_spec(("layers", "embed", "mlp", "relpos_buckets"), (2, 8, 8, 8))


def test_state_sharded_like_param():
    trainer = make_trainer({"fsdp": 2, "tensor": 2}, "fsdp_tensor", batch_size=4,
                           max_replicated_fraction=0.6)
    rms = trainer.state_shardings.opt_state[0]
    attention = ("encoder", "layers", "layer", "attention")

    def at(tree, path):
        for key in path:
            tree = tree[key]
        return tree.spec

    assert at(trainer.state_shardings.params, attention + ("query",)) == P(
        None, "fsdp", "tensor", None)
    assert at(rms.v_row, attention + ("query",)) == P(None, "fsdp")  # [layers, embed]
    assert at(rms.v_col, attention + ("query",)) == P(None, "tensor", None)  # [.., heads, kv]
    assert at(rms.v_col, attention + ("out",)) == P(None, "tensor", None)
