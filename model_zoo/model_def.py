"""Functional core: a model as (ModelDef, params) where params is a plain dict of arrays.

Step functions jit over plain params (optax, orbax and shardings see ordinary pytrees) and
bind them to the module structure inside the traced function.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
from flax import nnx

from model_zoo.axes import logical_axes


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The structure of a model: its graphdef and an abstract state with axis metadata."""

    graphdef: nnx.GraphDef
    template: nnx.State

    def bind(self, params: dict) -> nnx.Module:
        """The module holding `params` (a dict shaped like `abstract_params()`)."""
        state = jax.tree.map(lambda v: v, self.template, is_leaf=lambda x: isinstance(
            x, nnx.Variable))
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state)

    def abstract_params(self) -> dict:
        return nnx.to_pure_dict(self.template)

    def logical_axes(self) -> dict:
        return logical_axes(self.template)


def model_def(make_model: Callable[[nnx.Rngs], nnx.Module]) -> ModelDef:
    """Trace `make_model` abstractly (no memory) to get its ModelDef."""
    graphdef, template = nnx.split(nnx.eval_shape(lambda: make_model(nnx.Rngs(0))))
    return ModelDef(graphdef, template)


def split_params(model: nnx.Module) -> tuple[ModelDef, dict]:
    """(ModelDef, params dict) of a concrete model."""
    graphdef, state = nnx.split(model)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return ModelDef(graphdef, template), nnx.to_pure_dict(state)


def init_params(make_model: Callable[[nnx.Rngs], nnx.Module], seed: int | jax.Array) -> dict:
    """Params of `make_model(nnx.Rngs(seed))` as a dict; call under jit to create them sharded."""
    return nnx.to_pure_dict(nnx.state(make_model(nnx.Rngs(seed))))
