"""Meshes, logical-axis rules, shardings and multi-host start-up; knows nothing about any model.

`partitioning.distributed` (jax.distributed start-up) is imported on its own, before any
device is touched.
"""

from partitioning.mesh import AXES, MeshConfig, make_mesh, mesh_shape
from partitioning.rules import RULE_SETS, resolve, rule_set, validate_rules
from partitioning.shardings import (activation_resolver, batch_sharding,
                                    check_expert_divisibility, check_sufficient_sharding,
                                    data_parallel_degree, process_rows, tree_shardings,
                                    tree_specs)

__all__ = ["AXES", "MeshConfig", "make_mesh", "mesh_shape", "RULE_SETS", "resolve", "rule_set",
           "validate_rules", "activation_resolver", "batch_sharding", "check_expert_divisibility",
           "check_sufficient_sharding", "data_parallel_degree", "process_rows", "tree_shardings",
           "tree_specs"]
