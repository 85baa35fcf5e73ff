"""Optimizers: Adafactor with T5's defaults (per matrix, t5x's factoring), or AdamW;
global-norm clipping in front."""

from __future__ import annotations

import dataclasses

import optax

from fields.choices import require_choice
from training.adafactor import adafactor
from training.schedules import ScheduleConfig, make_schedule

NAMES = ("adafactor", "adamw")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adafactor (Shazeer & Stern 2018) as T5 used it: factored second moments, decay 0.8,
    update clipping 1.0, parameter-scale-relative steps, no momentum; each layer's (and
    expert's) matrix on its own (training/adafactor.py). `min_dim_size_to_factor` applies
    only where the logical axes name no row and column (t5x's fallback for 2-D params)."""

    name: str = "adafactor"
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    grad_clip_norm: float | None = None
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    decay_rate: float = 0.8
    clipping_threshold: float = 1.0
    multiply_by_parameter_scale: bool = True
    factored: bool = True
    min_dim_size_to_factor: int = 128

    def __post_init__(self):
        require_choice("OptimizerConfig", "name", self.name, NAMES)
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"OptimizerConfig.grad_clip_norm={self.grad_clip_norm} must be > 0 "
                             "or None")
        if self.weight_decay < 0:
            raise ValueError(f"OptimizerConfig.weight_decay={self.weight_decay} must be >= 0")
        if self.min_dim_size_to_factor < 1:
            raise ValueError(f"OptimizerConfig.min_dim_size_to_factor="
                             f"{self.min_dim_size_to_factor} must be >= 1")


def make_optimizer(cfg: OptimizerConfig, logical_axes, lr=None) -> optax.GradientTransformation:
    """`logical_axes`: a tree like the params with a `LogicalAxes` leaf per param
    (`ModelDef.logical_axes()`); Adafactor picks rows, columns and batch dims from it. `lr`:
    the schedule (step -> rate) the caller also logs; default: built from `cfg.schedule`."""
    lr = make_schedule(cfg.schedule) if lr is None else lr
    if cfg.name == "adafactor":
        opt = adafactor(lr, logical_axes, decay_rate=cfg.decay_rate,
                        clipping_threshold=cfg.clipping_threshold,
                        multiply_by_parameter_scale=cfg.multiply_by_parameter_scale,
                        factored=cfg.factored, min_dim_size_to_factor=cfg.min_dim_size_to_factor,
                        weight_decay_rate=cfg.weight_decay or None)
    else:
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.grad_clip_norm is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
    return opt
