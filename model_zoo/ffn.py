"""The T5 feed-forward math, named t5x/MaxText style by its activations.

`mlp_activations` names one activation per input projection: ("relu",) is T5 1.0's
relu MLP, ("gelu", "linear") T5 1.1's gated-GELU, ("silu", "linear") gated-SiLU (GLU
variants, Shazeer 2020). With one activation the projection is `wi`, with several they
are `wi_0`, `wi_1`, ... (t5x names); the hidden is the product of the activated
projections, then dropout and `wo`. "gelu" is the tanh approximation (flax's default, as
t5x and HF's "gelu_new" use). The dense MLP and the MoE experts both call `feed_forward`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from model_zoo.axes import constrain
from model_zoo.dropout import dropout

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "linear": lambda x: x,
}


def check_activations(value, owner: str = "ModelConfig.mlp_activations") -> tuple[str, ...]:
    """`value` as a tuple of known activation names (a list from JSON or gin is taken)."""
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{owner}={value!r} is invalid: expected a non-empty tuple of "
                         f"activation names from {tuple(ACTIVATIONS)}, e.g. ('gelu', 'linear')")
    unknown = [a for a in value if a not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"{owner}={tuple(value)!r}: unknown activation(s) {unknown}; valid "
                         f"activations: {tuple(ACTIVATIONS)}")
    return tuple(value)


def projection_names(activations: tuple[str, ...]) -> tuple[str, ...]:
    """The input projections' param names: `wi` for one activation, `wi_i` for several."""
    return ("wi",) if len(activations) == 1 else tuple(f"wi_{i}" for i in range(len(activations)))


def feed_forward(x: jax.Array, wi: list[jax.Array], wo: jax.Array,
                 activations: tuple[str, ...], hidden_axes: tuple, dropout_rate: float,
                 rng=None, deterministic: bool = True, experts: bool = False,
                 matmul: Callable | None = None) -> jax.Array:
    """prod_i act_i(x @ wi[i]), dropout, @ wo. x [..., d], wi [d, f], wo [f, d]; with
    `experts`, a leading expert axis on all of them: x [E, ..., d], wi [E, d, f].
    `matmul(x, w)` replaces `x @ w` (e.g. a grouped matmul over tokens sorted by expert)."""
    if matmul is None:
        e = "e" if experts else ""
        matmul = partial(jnp.einsum, f"{e}...i,{e}io->{e}...o")
    h = None
    for name, w in zip(activations, wi, strict=True):
        a = ACTIVATIONS[name](matmul(x, w))
        h = a if h is None else h * a
    h = constrain(h, hidden_axes)
    h = dropout(h, dropout_rate, rng, deterministic)
    return matmul(h, wo)
