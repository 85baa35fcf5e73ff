"""Is every floating value of a pytree finite? One on-device reduction, one host sync.

Checked before a save (a NaN state never goes over a good checkpoint) and after a
restore (a checkpoint holding NaN is skipped like a damaged one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _all_finite(leaves):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree) -> bool:
    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
    if not leaves:
        return True
    if not all(isinstance(x, jax.Array) for x in leaves):
        return bool(all(np.all(np.isfinite(np.asarray(x))) for x in leaves))
    return bool(_all_finite(leaves))


def nonfinite_leaves(tree, limit: int = 3) -> list[str]:
    """Paths of (up to `limit`) leaves holding NaN or inf, for an error message."""
    out = []
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact) and not bool(
                jnp.all(jnp.isfinite(x))):
            out.append(jax.tree_util.keystr(path))
            if len(out) >= limit:
                break
    return out
