"""Adafactor per matrix, as t5x applies it: factored rows and columns from the logical axes.

`optax.adafactor` treats each leaf as one matrix and factors its two largest dims. t5pod
stacks layers (and experts) into one leaf, so a scanned attention kernel
`[layers, embed, heads, kv]` with `kv` < 128 kept a full second moment there, and the update
clipping and parameter scale were one RMS over every layer. Here, as in t5x, each dim gets a
role from its logical name: `embed` is the row; `vocab`, `mlp`, `heads`, `kv` are columns;
`layers` (and `expert` in an expert's matrix) are batch dims, so each layer's (and expert's)
matrix has its own row/column statistics, clipping RMS and parameter scale.

t5x's rule in full: a param needs both a row and a column dim to be factored by its names
(any other named dim is an error); otherwise (norm scales, relative-position tables
`[heads, buckets]`, the router `[embed, expert]`) it is not, keeping its batch dims. A
param of rank <= 2 with no batch dim falls back to optax's shape heuristic (the two largest
dims, if the smaller is >= `min_dim_size_to_factor`); names factor regardless of size.
The router's `expert` dim is its output, not a stack, so `expert` is a batch dim only in a
param that also has a row and a column.

State: optax's `FactoredState` (one count; trees `v_row`, `v_col`, `v` like the params),
laid out as t5x lays it out: `v_row` is the param with its column dims removed, `v_col` with
its row dims removed (`[layers, embed]` and `[layers, heads, kv]` for an attention kernel),
so each keeps the logical names, and sharding, of the param dims it has; unused entries are
optax's `(1,)`. Not size-1 dims: TPU tiling would pad those to 8x128. The other steps are
optax's own transformations, applied per matrix by vmapping over the batch dims.
"""

from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import numpy as np
import optax

from model_zoo.axes import LogicalAxes

ROW, COLUMN, BATCH = "row", "column", "batch"
FACTOR_RULES = {"embed": ROW, "vocab": COLUMN, "mlp": COLUMN, "heads": COLUMN, "kv": COLUMN,
                "joined_kv": COLUMN, "layers": BATCH, "expert": BATCH}


@dataclasses.dataclass(frozen=True)
class MatrixSpec:
    """One param as a batch of matrices: its batch dims and the dims its second moment is
    averaged over to give `v_row` (the columns) and `v_col` (the rows); both empty: the
    second moment is kept whole."""

    batch: tuple[int, ...]
    rows: tuple[int, ...] = ()
    cols: tuple[int, ...] = ()

    @property
    def factored(self) -> bool:
        return bool(self.rows)


def matrix_spec(names: tuple, shape: tuple, factored: bool = True,
                min_dim_size_to_factor: int = 128) -> MatrixSpec:
    """The `MatrixSpec` t5x's factor rules give a param with logical `names` and `shape`.

    A TreeDNN param's leading `branch` dim is a batch dim over that of the plain model's
    param: each branch is optimized exactly as the plain T5 it exports to."""
    if len(names) != len(shape):
        raise ValueError(f"param of shape {shape} has {len(names)} logical axes {names}")
    if names[:1] == ("branch",):
        inner = matrix_spec(tuple(names[1:]), tuple(shape[1:]), factored,
                            min_dim_size_to_factor)
        shift = lambda dims: tuple(d + 1 for d in dims)  # noqa: E731
        return MatrixSpec((0,) + shift(inner.batch), shift(inner.rows), shift(inner.cols))
    roles = [FACTOR_RULES.get(n) for n in names]
    rows = tuple(i for i, r in enumerate(roles) if r == ROW)
    cols = tuple(i for i, r in enumerate(roles) if r == COLUMN)
    matrix = bool(rows and cols)
    batch = tuple(i for i, (n, r) in enumerate(zip(names, roles, strict=True))
                  if r == BATCH and (matrix or n != "expert"))
    if matrix:
        other = [names[i] for i in range(len(names)) if i not in batch + rows + cols]
        if other:
            raise ValueError(f"Adafactor cannot factor a param with axes {names}: {other} are "
                             f"neither row, column nor batch dims ({FACTOR_RULES})")
    if not batch and len(shape) <= 2:  # optax's (and t5x's) shape heuristic
        rows = cols = ()
        if len(shape) == 2 and min(shape) >= min_dim_size_to_factor:
            small, large = (int(d) for d in np.argsort(shape))
            rows, cols = (small,), (large,)
    elif not matrix:
        rows = cols = ()
    return MatrixSpec(batch, rows, cols) if factored else MatrixSpec(batch)


def _specs(logical_axes, params, factored: bool, min_dim_size_to_factor: int):
    return jax.tree.map(
        lambda a, p: matrix_spec(tuple(a.names), jnp.shape(p), factored, min_dim_size_to_factor),
        logical_axes, params, is_leaf=lambda x: isinstance(x, LogicalAxes))


def _is_spec(x) -> bool:
    return isinstance(x, MatrixSpec)


def _unused(x) -> jax.Array:
    return jnp.zeros((1,), jnp.result_type(x))


def _map(f, specs, *trees):
    """`f(spec, *leaves)` per param; a tuple result gives a tuple of trees."""
    treedef = jax.tree.structure(specs, is_leaf=_is_spec)
    out = [f(s, *xs) for s, *xs in zip(treedef.flatten_up_to(specs),
                                        *(treedef.flatten_up_to(t) for t in trees), strict=True)]
    if out and isinstance(out[0], tuple):
        return tuple(treedef.unflatten(col) for col in zip(*out, strict=True))
    return treedef.unflatten(out)


def scale_by_factored_rms(logical_axes, factored: bool = True, decay_rate: float = 0.8,
                          min_dim_size_to_factor: int = 128,
                          epsilon: float = 1e-30) -> optax.GradientTransformation:
    """Shazeer & Stern's factored second-moment scaling, each batch slice its own matrix."""

    def init(params):
        specs = _specs(logical_axes, params, factored, min_dim_size_to_factor)

        def zeros(spec, p):
            if not spec.factored:
                return _unused(p), _unused(p), jnp.zeros_like(p)
            kept = [tuple(n for i, n in enumerate(p.shape) if i not in dims)
                    for dims in (spec.cols, spec.rows)]
            return jnp.zeros(kept[0], p.dtype), jnp.zeros(kept[1], p.dtype), _unused(p)

        return optax.FactoredState(jnp.zeros([], jnp.int32), *_map(zeros, specs, params))

    def update(grads, state, params):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)
        specs = _specs(logical_axes, params, factored, min_dim_size_to_factor)
        decay = 1.0 - jnp.asarray(state.count + 1, jnp.float32) ** -decay_rate

        def one(spec, g, v_row, v_col, v):
            g2 = jnp.square(g) + epsilon
            if spec.factored:  # in the param's rank (averaged dims of size 1), then squeezed
                r, c = jnp.expand_dims(v_row, spec.cols), jnp.expand_dims(v_col, spec.rows)
                r = decay * r + (1 - decay) * jnp.mean(g2, spec.cols, keepdims=True)
                c = decay * c + (1 - decay) * jnp.mean(g2, spec.rows, keepdims=True)
                u = g * (r / jnp.mean(r, spec.rows, keepdims=True)) ** -0.5 * c ** -0.5
                v_row, v_col = jnp.squeeze(r, spec.cols), jnp.squeeze(c, spec.rows)
            else:
                v = decay * v + (1 - decay) * g2
                u = g * v ** -0.5
            return tuple(x.astype(g.dtype) for x in (u, v_row, v_col, v))

        u, v_row, v_col, v = _map(one, specs, grads, state.v_row, state.v_col, state.v)
        return u, optax.FactoredState(optax.safe_increment(state.count), v_row, v_col, v)

    return optax.GradientTransformation(init, update)


def per_matrix(tx: optax.GradientTransformation, logical_axes) -> optax.GradientTransformation:
    """A stateless per-leaf optax transformation (e.g. `clip_by_block_rms`) applied to each
    batch slice of every param on its own, by vmapping over the param's batch dims."""

    def update(updates, state, params):
        if params is None:
            raise ValueError(optax.NO_PARAMS_MSG)

        def one(spec, u, p):
            def f(u, p):
                return tx.update(u, optax.EmptyState(), p)[0]

            for _ in spec.batch:
                f = jax.vmap(f)
            front = list(range(len(spec.batch)))
            out = f(jnp.moveaxis(u, spec.batch, front), jnp.moveaxis(p, spec.batch, front))
            return jnp.moveaxis(out, front, spec.batch)

        return _map(one, _specs(logical_axes, params, True, 0), updates, params), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def adafactor(learning_rate, logical_axes, *, factored: bool = True, decay_rate: float = 0.8,
              min_dim_size_to_factor: int = 128, clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True, weight_decay_rate: float | None = None,
              eps: float = 1e-30) -> optax.GradientTransformation:
    """`optax.adafactor`'s chain (same steps, same order) with every per-leaf step per matrix.

    `logical_axes`: a tree like the params with a `LogicalAxes` leaf per param.
    """
    tx = [scale_by_factored_rms(logical_axes, factored, decay_rate, min_dim_size_to_factor, eps)]
    if clipping_threshold is not None:
        tx.append(per_matrix(optax.clip_by_block_rms(clipping_threshold), logical_axes))
    tx.append(optax.scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        tx.append(per_matrix(optax.scale_by_param_block_rms(), logical_axes))
    if weight_decay_rate is not None:
        tx.append(optax.add_decayed_weights(weight_decay_rate))
    tx.append(optax.scale(-1))
    return optax.chain(*tx)
