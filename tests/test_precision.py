"""fp16 dynamic loss scaling, mixed-precision loss curves, and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.loss_scale import LossScaleConfig
from tests.train_helpers import copy_batch, make_trainer


def test_injected_overflow_skips_the_update_and_halves_the_scale():
    trainer = make_trainer(dtype="float16")
    state = trainer.init_state()
    assert float(state.loss_scale.scale) == 2.0 ** 15  # dynamic by default for fp16
    state, _ = trainer.train_step(state, copy_batch(8))  # one normal step first
    huge = jax.device_put(jnp.float32(3e38), trainer.state_shardings.loss_scale.scale)
    state.loss_scale.scale = huge  # scaled loss overflows to inf
    before = jax.device_get((state.params, state.opt_state))
    state, metrics = trainer.train_step(state, copy_batch(8))
    after = jax.device_get((state.params, state.opt_state))
    jax.tree.map(np.testing.assert_array_equal, after, before)  # bitwise unchanged
    assert float(state.loss_scale.scale) == np.float32(3e38) / 2
    assert int(state.loss_scale.skipped) == 1 and int(metrics["skipped"]) == 1
    assert not np.isfinite(float(metrics["grad_norm"]))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(after[0]))


def test_scale_grows_after_period_of_finite_steps():
    trainer = make_trainer(dtype="float16",
                           loss_scale=LossScaleConfig(dynamic=True, initial_scale=2.0 ** 10,
                                                      period=3))
    state = trainer.init_state()
    scales = []
    for _ in range(4):
        state, metrics = trainer.train_step(state, copy_batch(8))
        scales.append(float(metrics["loss_scale"]))
    assert scales == [2.0 ** 10] * 3 + [2.0 ** 11]
    assert int(state.loss_scale.skipped) == 0


def test_scale_never_drops_below_floor():
    trainer = make_trainer(dtype="float16", loss_scale=LossScaleConfig(
        dynamic=True, initial_scale=4.0, floor=2.0))
    state = trainer.init_state()
    for _ in range(3):
        state.loss_scale.scale = jax.device_put(jnp.float32(jnp.inf),
                                                trainer.state_shardings.loss_scale.scale)
        state, _ = trainer.train_step(state, copy_batch(8))
        assert float(state.loss_scale.scale) >= 2.0


# Each step's true gradient (one value): 1.0 is finite at every scale up to 2^127; 4.0
# overflows float32 at 2^127 and 2^126 once scaled; inf and nan overflow at any scale.
TO_THE_TOP = [1.0] * 10 + [4.0, 4.0] + [1.0] * 6 + [float("inf")] + [1.0] * 5 + [float("nan")]


def _torch_grad_scaler_steps(grads, initial_scale, period):
    """(scale after the step, skipped) per step of torch.amp.GradScaler on one parameter."""
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([param], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=initial_scale, growth_factor=2.0,
                                  backoff_factor=0.5, growth_interval=period)
    out = []
    for grad in grads:
        sgd.zero_grad()
        before = param.item()
        scaler.scale((param * grad).sum()).backward()
        scaler.step(sgd)
        scaler.update()
        out.append((scaler.get_scale(), param.item() == before))
    return out


def _t5pod_steps(grads, initial_scale, period):
    """The same through training.loss_scale, the grads scaled and unscaled in float32 as
    training.step does."""
    from training.loss_scale import all_finite, init_loss_scale, update_loss_scale

    cfg = LossScaleConfig(dynamic=True, initial_scale=initial_scale, period=period)
    state, out = init_loss_scale(cfg), []
    for grad in grads:
        finite = all_finite({"w": jnp.float32(grad) * state.scale / state.scale})
        state = update_loss_scale(cfg, state, finite)
        out.append((float(state.scale), not bool(finite)))
    return out


@pytest.mark.parametrize("initial_scale,period", [(2.0 ** 120, 1), (2.0 ** 124, 3)])
def test_loss_scale_equals_torch_grad_scaler_up_to_two_to_the_127(initial_scale, period):
    grads = TO_THE_TOP * (1 if period == 1 else 2)
    reference = _torch_grad_scaler_steps(grads, initial_scale, period)
    assert max(s for s, _ in reference) == 2.0 ** 127  # the scenario reaches the top
    assert sum(skipped for _, skipped in reference) >= 3
    assert _t5pod_steps(grads, initial_scale, period) == reference


def test_loss_scale_stops_at_two_to_the_127_in_the_train_step():
    """GradScaler's rule: 2^127 x 2 is inf, so the scale stays at 2^127 and no step skips
    (growing to inf would skip every step after and never back off)."""
    from training.step import LossConfig

    trainer = make_trainer(loss=LossConfig(loss_normalizing_factor=233472.0),
                           loss_scale=LossScaleConfig(dynamic=True, initial_scale=2.0 ** 125,
                                                      period=1))
    state, scales = trainer.init_state(), []
    for _ in range(5):
        state, metrics = trainer.train_step(state, copy_batch(8))
        scales.append(float(metrics["loss_scale"]))
    assert scales == [2.0 ** 125, 2.0 ** 126, 2.0 ** 127, 2.0 ** 127, 2.0 ** 127]
    assert float(state.loss_scale.scale) == 2.0 ** 127 and int(state.loss_scale.skipped) == 0


def test_an_initial_scale_beyond_float32_is_refused():
    with pytest.raises(ValueError, match=r"initial_scale=1e\+39 must be a finite float32"):
        LossScaleConfig(dynamic=True, initial_scale=1e39)


@pytest.fixture(scope="module")
def curves():
    out = {}
    for dtype in ("float32", "bfloat16", "float16"):
        trainer = make_trainer(dtype=dtype, optimizer="adamw", lr=3e-3)
        state = trainer.init_state()
        losses = []
        for step in range(40):
            state, metrics = trainer.train_step(state, copy_batch(8, seed=step % 4))
            losses.append(float(metrics["loss"]))
        params = jax.device_get(state.params)
        assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params)), dtype
        out[dtype] = np.array(losses)
    return out


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_tracks_fp32(curves, dtype):  # 40 steps of a toy copy task
    """Stated tolerance: every step's loss within 0.15 nats (fp16: 0.05) of fp32's."""
    ref, got = curves["float32"], curves[dtype]
    assert ref[-1] < ref[0] - 1.0  # the task is being learned
    tol = 0.15 if dtype == "bfloat16" else 0.05
    assert np.max(np.abs(got - ref)) < tol, np.abs(got - ref).max()


def test_four_microbatches_equal_one_batch():
    results = []
    for micro in (1, 4):
        trainer = make_trainer(batch_size=16, optimizer="adamw", lr=3e-3, eps=1e-4,
                               microbatches=micro, ici={"data": 2})
        state = trainer.init_state()
        state, metrics = trainer.train_step(state, copy_batch(16))
        results.append((jax.device_get(state.params), float(metrics["loss"]),
                        float(metrics["grad_norm"])))
    (p1, l1, g1), (p4, l4, g4) = results
    assert abs(l1 - l4) < 1e-5 and abs(g1 - g4) < 1e-5 * g1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), p4, p1)
