"""Learning-rate schedules and optimizer config validation."""

import numpy as np
import pytest

from training.optimizers import OptimizerConfig
from training.schedules import ScheduleConfig, make_schedule


def test_t5_inverse_square_root():
    f = make_schedule(ScheduleConfig(kind="rsqrt", learning_rate=1.0, warmup_steps=10_000))
    assert np.isclose(f(0), 0.01) and np.isclose(f(10_000), 0.01)
    assert np.isclose(f(40_000), 0.005)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_warmup_then_decay(kind):
    f = make_schedule(ScheduleConfig(kind=kind, learning_rate=2.0, warmup_steps=10,
                                     decay_steps=110, end_value=0.2))
    assert np.isclose(f(0), 0.0) and np.isclose(f(5), 1.0) and np.isclose(f(10), 2.0)
    assert np.isclose(f(110), 0.2, atol=1e-6) and f(60) < 2.0


def test_constant_with_warmup():
    f = make_schedule(ScheduleConfig(kind="constant", learning_rate=1e-3, warmup_steps=4))
    assert np.isclose(f(2), 5e-4) and np.isclose(f(100), 1e-3)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="exp"), "kind='exp'"),
    (dict(kind="cosine", warmup_steps=10, decay_steps=5), "decay_steps=5"),
    (dict(learning_rate=0.0), "learning_rate=0.0"),
])
def test_bad_schedules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScheduleConfig(**kwargs)


def test_bad_optimizer_name():
    with pytest.raises(ValueError, match="name='sgd'.*adafactor"):
        OptimizerConfig(name="sgd")
