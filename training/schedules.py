"""Learning-rate schedules: T5's inverse square root, constant, linear and cosine with warmup."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import optax

from fields.choices import require_choice
from fields.integers import require_int

KINDS = ("rsqrt", "constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """`rsqrt` is T5's `base / sqrt(max(step, warmup_steps))` (base 1.0 gives 0.01 for 10k
    steps, then decays). The others warm up linearly from 0 to `learning_rate`."""

    kind: str = "rsqrt"
    learning_rate: float = 1.0
    warmup_steps: int = 10_000
    decay_steps: int = 100_000
    end_value: float = 0.0

    def __post_init__(self):
        require_choice("ScheduleConfig", "kind", self.kind, KINDS)
        if not self.learning_rate > 0:
            raise ValueError(f"ScheduleConfig.learning_rate={self.learning_rate} must be > 0")
        require_int("ScheduleConfig", "warmup_steps", self.warmup_steps, 0)
        require_int("ScheduleConfig", "decay_steps", self.decay_steps)
        if self.kind in ("linear", "cosine") and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"ScheduleConfig.decay_steps={self.decay_steps} must exceed "
                             f"warmup_steps={self.warmup_steps} for a {self.kind} schedule")


def make_schedule(cfg: ScheduleConfig) -> optax.Schedule:
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    if cfg.kind == "rsqrt":
        return lambda step: lr * jnp.reciprocal(jnp.sqrt(jnp.maximum(step, max(warm, 1))))
    warmup = optax.linear_schedule(0.0, lr, max(warm, 1))
    if cfg.kind == "constant":
        after = optax.constant_schedule(lr)
    elif cfg.kind == "linear":
        after = optax.linear_schedule(lr, cfg.end_value, cfg.decay_steps - warm)
    else:
        after = optax.cosine_decay_schedule(lr, cfg.decay_steps - warm,
                                            alpha=cfg.end_value / lr)
    if warm == 0:
        return after
    return optax.join_schedules([warmup, after], [warm])
