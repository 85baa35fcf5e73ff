"""fp16 guards: T5's residual stream clamped as HF clamps it, and a run whose steps are all
skipped stops with an error instead of stalling."""


import jax
import numpy as np
import pytest
import torch

from model_zoo.fp16_clamp import clamp_float16
from tests.train_helpers import copy_batch, make_trainer
from training.loop import LoopConfig, SkippedStepsError, check_skipped_steps, run
from training.loss_scale import LossScaleConfig
from training.metrics_log import read_records

WO_SCALE = 2e4  # feed-forward outputs of the tiny T5 1.1 beyond float16's 65504


def _hf_clamp(x: torch.Tensor) -> torch.Tensor:
    """HF transformers' T5Block rule for float16 hidden states (modeling_t5.py)."""
    limit = torch.where(torch.isinf(x).any(), torch.finfo(x.dtype).max - 1000,
                        torch.finfo(x.dtype).max)
    return torch.clamp(x, min=-limit, max=limit)


def test_clamp_equals_hf_where_hf_clamps_and_leaves_other_dtypes():
    x = np.array([[1.5, -2.0, np.inf, 65000.0], [-np.inf, 3.0, -65504.0, 0.0]], np.float16)
    np.testing.assert_array_equal(np.asarray(clamp_float16(jax.numpy.asarray(x))),
                                  _hf_clamp(torch.from_numpy(x)).numpy())
    big = jax.numpy.asarray([1e6, -np.inf], jax.numpy.float32)
    np.testing.assert_array_equal(np.asarray(clamp_float16(big)), np.asarray(big))


class _Feed:
    def __init__(self):
        self.position = 0

    def __next__(self):
        self.position += 1
        return copy_batch(8, seed=self.position % 4)

    def state(self):
        return {"position": self.position}


def _fp16_run(model_dir, steps: int, limit: int):
    trainer = make_trainer(dtype="float16", optimizer="adamw", lr=1e-3,
                           loss_scale=LossScaleConfig(dynamic=True, initial_scale=8.0))
    params = jax.device_get(trainer.init_state().params)
    big = {side: jax.tree.map(lambda x: x, params[side]) for side in ("encoder", "decoder")}
    for side in big:
        mlp = big[side]["layers"]["layer"]["mlp"]
        mlp["wo"] = mlp["wo"] * WO_SCALE
    loop = LoopConfig(train_steps=steps, log_every=2, async_checkpoints=False,
                      max_consecutive_skipped_steps=limit)
    return trainer, run(trainer, loop, str(model_dir), lambda _: _Feed(), initial_params=big,
                        progress=False)


def test_overflowing_t5_1_1_trains_in_fp16_with_the_clamp(tmp_path):
    trainer, result = _fp16_run(tmp_path, steps=8, limit=4)
    assert result.metrics["skipped"] == 0
    loss = {r["step"]: r["loss"] for r in read_records(tmp_path)}
    assert loss[8] < loss[4] - 0.2, loss  # learning: steps 4 and 8 see the same batch


def test_without_the_clamp_every_step_is_skipped_and_the_run_stops(tmp_path, monkeypatch):
    monkeypatch.setattr("model_zoo.layers.clamp_float16", lambda x: x)
    with pytest.raises(SkippedStepsError) as error:
        _fp16_run(tmp_path, steps=20, limit=5)
    message = str(error.value)
    # stops at the first log step (every 2) at or after the 5th skip in a row
    assert "step 6: the last 6 steps were all skipped" in message
    assert "loss scale is at its floor 1" in message and "float16" in message
    assert "bfloat16" in message and "max_consecutive_skipped_steps=0" in message
    assert not (tmp_path / "checkpoints" / "6").exists()


def test_skip_check_is_off_at_zero_and_quiet_below_the_limit():
    trainer = make_trainer()  # float32: no loss scaling, non-finite steps still skipped
    check_skipped_steps(trainer, 0, 500, {"skipped_in_a_row": 500.0})
    check_skipped_steps(trainer, 100, 99, {"skipped_in_a_row": 99.0})
    with pytest.raises(SkippedStepsError, match="no loss scaling.*compute dtype float32"):
        check_skipped_steps(trainer, 100, 100, {"skipped_in_a_row": 100.0})
    with pytest.raises(ValueError, match="max_consecutive_skipped_steps=-1"):
        LoopConfig(train_steps=1, max_consecutive_skipped_steps=-1)
