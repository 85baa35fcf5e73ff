"""A power law loss = a * x^-b (x: training FLOPs C or parameters N), fitted as Tay et al.
2022 ("Scaling Laws vs Model Architectures") and Kaplan et al. 2020 fit theirs: a straight
line through (log x, log loss) by least squares, so b is minus the slope and a the
intercept's exponential."""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    r2: float      # of the straight line in log-log space (1.0 for two points)
    points: int

    def __call__(self, x):
        return self.a * np.asarray(x, dtype=np.float64) ** -self.b


def fit_power_law(x, loss) -> PowerLaw:
    """Least-squares fit of log(loss) = log(a) - b log(x); needs two or more distinct x > 0
    and losses > 0."""
    x, loss = np.asarray(x, np.float64), np.asarray(loss, np.float64)
    if x.shape != loss.shape or x.ndim != 1:
        raise ValueError(f"fit_power_law: x and loss must be 1-D of one length; got shapes "
                         f"{x.shape} and {loss.shape}")
    if np.any(x <= 0) or np.any(loss <= 0) or not np.all(np.isfinite(x * loss)):
        raise ValueError(f"fit_power_law: x and loss must be finite and > 0; got x={x.tolist()}, "
                         f"loss={loss.tolist()}")
    if len(np.unique(x)) < 2:
        raise ValueError(f"fit_power_law: needs two or more distinct x; got {x.tolist()}")
    lx, ly = np.log(x), np.log(loss)
    dx = lx - lx.mean()
    slope = float(np.sum(dx * (ly - ly.mean())) / np.sum(dx * dx))
    intercept = float(ly.mean() - slope * lx.mean())
    residual = ly - (intercept + slope * lx)
    total = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if total > 0 else 1.0
    return PowerLaw(a=math.exp(intercept), b=-slope, r2=r2, points=len(x))
