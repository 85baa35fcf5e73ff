"""TreeDNN (Singh et al. 2022): a shared trunk and one branch per dataset, in one model.

A stack of a tree model is a `TreeStack`: its first `split` layers (the trunk) scanned as
usual, then the layers above the split, one copy per branch, their params stacked on a
leading logical `branch` axis (`Branched`). A batch names its branch by index and the
forward pass slices that branch's params out (`Branched.at`), so one compiled step serves
every branch and the gradient of every other branch is exactly zero.

`branch_params` turns a tree's params into the plain T5 of one branch (trunk layers, then
that branch's layers, its final norms and head), `grow` the reverse (a plain T5 copied into
every branch, e.g. to start a tree from a pretrained checkpoint).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from model_zoo.config import ModelConfig
from model_zoo.scan import ScannedLayers, stacked_copies

BRANCH = "branch"
SIDES = ("encoder", "decoder")


class Branched(nnx.Module):
    """`count` copies of `make(rngs)`, their params stacked on a leading `branch` axis."""

    def __init__(self, make: Callable[[nnx.Rngs], nnx.Module], count: int, rngs: nnx.Rngs):
        self.stack = stacked_copies(make, count, BRANCH, rngs)
        self.count = count

    def at(self, branch) -> nnx.Module:
        """The module of branch `branch` (an int or a traced int scalar)."""
        graphdef, state = nnx.split(self.stack)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[branch], state))


def _joined(parts: list[dict]) -> dict:
    """The per-layer aux entries of consecutive stacks, concatenated along the layers."""
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=0), *parts)


class TreeStack(nnx.Module):
    """A stack of `depth` layers: the first `split` shared (the trunk), the rest per branch."""

    def __init__(self, make_layer: Callable[[nnx.Rngs], nnx.Module], depth: int, split: int,
                 count: int, remat_policy: str, rngs: nnx.Rngs):
        self.split, self.above = split, depth - split
        if self.split:
            self.trunk = ScannedLayers(make_layer, split, remat_policy, rngs)
        if self.above:
            self.branches = Branched(
                lambda r: ScannedLayers(make_layer, self.above, remat_policy, r,
                                        first_layer=split), count, rngs)

    def forward(self, x, *args, rng=None, deterministic=True, weights=None, branch=None):
        """(outputs, aux) of the trunk, then branch `branch`'s layers (ScannedLayers.forward)."""
        parts = []
        stacks = ([self.trunk] if self.split else []) + (
            [self.branches.at(branch)] if self.above else [])
        for stack in stacks:
            x, aux = stack.forward(x, *args, rng=rng, deterministic=deterministic,
                                   weights=weights)
            parts.append(aux)
        return x, _joined(parts)


def make_final_norm(cfg: ModelConfig, side: str, make_norm: Callable, rngs: nnx.Rngs):
    """A tree stack's final norm: per branch above a split, shared when the split is the top."""
    depth = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
    if cfg.tree.split(side) == depth:
        return make_norm(cfg, rngs)
    return Branched(lambda r: make_norm(cfg, r), len(cfg.tree.branches), rngs)


def at_branch(module: nnx.Module, branch) -> nnx.Module:
    """`module` itself, or branch `branch` of a `Branched` module."""
    return module.at(branch) if isinstance(module, Branched) else module


def check_branch(cfg: ModelConfig, branch) -> None:
    """A tree model needs a branch index, a plain one none."""
    if cfg.tree is not None and branch is None:
        raise ValueError(f"this model is a tree with branches {list(cfg.tree.branches)}: call "
                         "it with branch=INDEX (a batch's `branch_index`), or take one "
                         "branch's plain T5 with model_zoo.tree.branch_params")
    if cfg.tree is None and branch is not None:
        raise ValueError(f"branch={branch!r} given to a model without a tree "
                         "(ModelConfig.tree is None)")


# Params: a tree's and one branch's plain T5 ------------------------------------------------

def plain_config(cfg: ModelConfig) -> ModelConfig:
    """The plain T5 a branch of `cfg` is: the same model without the tree."""
    return cfg.replace(tree=None)


def branch_index(cfg: ModelConfig, branch: int | str) -> int:
    if isinstance(branch, str):
        return cfg.tree.index(branch)
    if not 0 <= int(branch) < len(cfg.tree.branches):
        raise ValueError(f"branch index {branch} is out of range for branches "
                         f"{list(cfg.tree.branches)}")
    return int(branch)


def _concat(*trees):
    lib = jnp if any(isinstance(x, jax.Array) for x in jax.tree.leaves(trees)) else np
    return jax.tree.map(lambda *a: lib.concatenate(a, axis=0), *trees)


def _take(tree, index: int):
    return jax.tree.map(lambda a: a[index], tree)


def branch_params(params: dict, cfg: ModelConfig, branch: int | str) -> dict:
    """The params of branch `branch` (name or index) as a plain T5 of `plain_config(cfg)`:
    every stack's trunk layers then the branch's, its final norms, and its head."""
    b = branch_index(cfg, branch)
    out = dict(params)
    for side in SIDES:
        stack = dict(params[side])
        layers = stack["layers"]
        parts = ([layers["trunk"]] if "trunk" in layers else []) + (
            [_take(layers["branches"]["stack"], b)] if "branches" in layers else [])
        stack["layers"] = _concat(*parts) if len(parts) > 1 else parts[0]
        if "stack" in stack["final_norm"]:
            stack["final_norm"] = _take(stack["final_norm"]["stack"], b)
        out[side] = stack
    if cfg.tree.branch_head:
        out["lm_head"] = params["lm_head"][b]
    return out


def _split_layers(layers: dict, split: int, depth: int, count: int) -> dict:
    out = {}
    if split:
        out["trunk"] = jax.tree.map(lambda a: a[:split], layers)
    if depth - split:
        out["branches"] = {"stack": jax.tree.map(
            lambda a: np.broadcast_to(np.asarray(a[split:]), (count,) + a[split:].shape),
            layers)}
    return out


def grow(plain: dict, cfg: ModelConfig) -> dict:
    """Tree params of `cfg` whose every branch is the plain T5 `plain` (numpy arrays)."""
    plain = jax.tree.map(np.asarray, plain)
    count = len(cfg.tree.branches)
    every = lambda tree: jax.tree.map(  # noqa: E731
        lambda a: np.broadcast_to(a, (count,) + a.shape), tree)
    out = dict(plain)
    for side in SIDES:
        depth = cfg.num_encoder_layers if side == "encoder" else cfg.num_decoder_layers
        split = cfg.tree.split(side)
        stack = dict(plain[side])
        stack["layers"] = _split_layers(plain[side]["layers"], split, depth, count)
        if split < depth:
            stack["final_norm"] = {"stack": every(plain[side]["final_norm"])}
        out[side] = stack
    if cfg.tree.branch_head:
        out["lm_head"] = every(plain["lm_head"])
    return jax.tree.map(np.ascontiguousarray, out)


def is_branch_leaf(names: tuple) -> bool:
    """Whether a param with logical `names` is per-branch (leads with the `branch` axis)."""
    return bool(names) and names[0] == BRANCH
