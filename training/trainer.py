"""The partitioned trainer: sharded state init, and train/eval steps jitted with shardings.

Everything a bad config can get wrong is checked here, before anything compiles: batch and
microbatch divisibility, rules against the mesh, params left replicated, fp16 on TPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fields.integers import require_int
import partitioning
from model_zoo import EncoderDecoder, ModelConfig
from model_zoo.axes import activation_rules
from model_zoo.model_def import init_params, model_def
from training.checkpoints.manager import abstract_with_shardings
from training.loss_scale import LossScaleConfig
from training.optimizers import OptimizerConfig, make_optimizer
from training.schedules import make_schedule
from training.step import LossConfig, make_eval_step, make_train_step
from training.train_state import TrainState, init_train_state


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    microbatches: int = 1
    seed: int = 0
    rules: str | tuple = "data_parallel"  # a name in partitioning.RULE_SETS or a table
    max_replicated_fraction: float = 0.25
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    loss_scale: LossScaleConfig | None = None  # None: dynamic for float16, off otherwise
    deterministic: bool = False  # True disables dropout

    def __post_init__(self):
        require_int("TrainConfig", "seed", self.seed)
        require_int("TrainConfig", "batch_size", self.batch_size, 1)
        require_int("TrainConfig", "microbatches", self.microbatches, 1)
        if self.batch_size % self.microbatches:
            raise ValueError(f"TrainConfig.microbatches={self.microbatches} must divide "
                             f"batch_size={self.batch_size}")
        partitioning.rule_set(self.rules)


def _suffix_match(path, table: dict):
    """The longest suffix of `path` (dict keys only) that is a key of `table`, or None."""
    keys = tuple(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
    for start in range(len(keys)):
        if keys[start:] in table:
            return table[keys[start:]]
    return None


def _reduced_names(names: tuple, shape: tuple, leaf_shape: tuple) -> tuple:
    """Names for an optimizer leaf whose shape is the param's with some dims dropped (factored
    second moments): the names of the dims it keeps, None where dims could be matched
    more than one way."""
    if tuple(leaf_shape) == tuple(shape):
        return tuple(names)
    fits = [kept for kept in itertools.combinations(range(len(shape)), len(leaf_shape))
            if tuple(shape[i] for i in kept) == tuple(leaf_shape)]
    if not fits:
        return (None,) * len(leaf_shape)
    return tuple(names[c[0]] if len({names[i] for i in c}) == 1 else None
                 for c in zip(*fits, strict=True))


def _param_table(abstract_params, logical_params) -> dict:
    """{param path: (logical names, shape)}."""
    params_flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    names_flat = jax.tree.leaves(logical_params, is_leaf=lambda x: hasattr(x, "names"))
    return {tuple(p.key for p in path): (tuple(n), x.shape)
            for (path, x), n in zip(params_flat, names_flat, strict=True)}


def _opt_leaf_names(path, x, table: dict) -> tuple | None:
    """The logical names of an optimizer leaf's dims (those of the param it tracks), or
    None for a leaf that tracks no param (a count) or a scalar."""
    hit = _suffix_match(path, table)
    if hit is None or x.ndim == 0:
        return None
    return _reduced_names(hit[0], tuple(hit[1]), tuple(x.shape))


def branch_masks(abstract: TrainState, logical_params) -> tuple:
    """(params, opt_state)-shaped trees of bools: True where a leaf leads with the TreeDNN
    `branch` axis (training.step.keep_other_branches)."""
    table = _param_table(abstract.params, logical_params)
    params = jax.tree.map(lambda a: tuple(a.names)[:1] == ("branch",), logical_params,
                          is_leaf=lambda x: hasattr(x, "names"))

    def opt_leaf(path, x) -> bool:  # the optimizers keep a param's batch dims leading
        hit = _suffix_match(path, table)
        return (hit is not None and hit[0][:1] == ("branch",) and x.ndim > 0
                and x.shape[0] == hit[1][0])

    return params, jax.tree_util.tree_map_with_path(opt_leaf, abstract.opt_state)


def state_shardings(abstract: TrainState, logical_params, rules, mesh: Mesh) -> TrainState:
    """Params by the rules; optimizer leaves like the param they track; scalars replicated."""
    ms = partitioning.mesh_shape(mesh)
    table = _param_table(abstract.params, logical_params)

    def opt_leaf(path, x):
        names = _opt_leaf_names(path, x, table)
        if names is None:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, partitioning.resolve(names, rules, ms, x.shape))

    replicated = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        step=replicated,
        params=partitioning.tree_shardings(logical_params, abstract.params, rules, mesh),
        opt_state=jax.tree_util.tree_map_with_path(opt_leaf, abstract.opt_state),
        rng=replicated,
        loss_scale=jax.tree.map(lambda _: replicated, abstract.loss_scale))


def check_precision_platform(compute_dtype: str, platform: str) -> None:
    if compute_dtype == "float16" and platform == "tpu":
        raise ValueError("dtype='float16' is not supported on TPU (no fp16 matmul units); "
                         "use dtype='bfloat16', which needs no loss scaling")


def check_attention_platform(attention_impl: str | None, platform: str) -> None:
    if attention_impl == "cudnn" and platform != "gpu":
        raise ValueError(f"attention_impl='cudnn' needs NVIDIA GPUs; this mesh's devices are "
                         f"{platform!r}: use attention_impl='einsum' or 'xla'")


class Trainer:
    """Builds the sharded train state and the jitted steps for one model on one mesh.

    Its contract with the model is the ModelConfig: the module is `EncoderDecoder(model)`,
    steps compute in `model.dtype`, the optimizer leaves `model.frozen` unchanged, and
    `model.attention_impl` is checked against the mesh's platform.
    """

    def __init__(self, model: ModelConfig, config: TrainConfig, mesh: Mesh):
        self.config, self.mesh, self.model = config, mesh, model
        self.compute_dtype = compute_dtype = model.dtype

        def make_model(rngs):
            return EncoderDecoder(model, rngs=rngs)

        self.rules = partitioning.rule_set(config.rules)
        partitioning.validate_rules(self.rules, mesh.axis_names)
        dp = partitioning.data_parallel_degree(self.rules, mesh)
        micro = config.batch_size // config.microbatches
        if micro % dp:
            raise ValueError(
                f"batch_size={config.batch_size} / microbatches={config.microbatches} = {micro} "
                f"is not divisible by the data-parallel degree {dp} of mesh "
                f"{partitioning.mesh_shape(mesh)} under rules {config.rules!r}")
        check_precision_platform(compute_dtype, mesh.devices.flat[0].platform)
        self.loss_scale = config.loss_scale or LossScaleConfig(dynamic=compute_dtype == "float16")

        self.model_def = model_def(make_model)
        logical = self.model_def.logical_axes()
        abstract_params = self.model_def.abstract_params()
        check_attention_platform(model.attention_impl, mesh.devices.flat[0].platform)
        self.frozen = tuple(model.frozen)
        unknown = set(self.frozen) - set(abstract_params)
        if unknown:
            raise ValueError(f"ModelConfig.frozen names {sorted(unknown)}, which this model "
                             f"does not have; its top-level params are {sorted(abstract_params)}")
        partitioning.check_expert_divisibility(logical, abstract_params, self.rules, mesh)
        self.replicated_fraction = partitioning.check_sufficient_sharding(
            logical, abstract_params, self.rules, mesh, config.max_replicated_fraction)

        self.schedule = make_schedule(config.optimizer.schedule)
        self.optimizer = make_optimizer(config.optimizer, logical, self.schedule)

        def init():
            params = init_params(make_model, config.seed)
            return init_train_state(params, self.optimizer, config.seed, self.loss_scale)

        abstract = jax.eval_shape(init)
        self.state_shardings = state_shardings(abstract, logical, self.rules, mesh)
        # a tree's batch also holds `branch_index` [batch]: a spec of the batch dim alone
        self.batch_sharding = partitioning.batch_sharding(self.rules, mesh,
                                                          1 if model.tree is not None else 2)
        self._init = jax.jit(init, out_shardings=self.state_shardings)
        masks = branch_masks(abstract, logical) if model.tree is not None else None
        # a TrainState of bools: True for an array with a leading `branch` axis (checkpoints
        # store those one chunk per branch: Checkpointer's per_branch); None without a tree
        self.per_branch = None if masks is None else dataclasses.replace(
            jax.tree.map(lambda _: False, abstract), params=masks[0], opt_state=masks[1])
        step = make_train_step(self.model_def, self.optimizer, self.schedule, config.loss,
                               self.loss_scale, config.microbatches, config.deterministic,
                               self.frozen, masks)
        replicated = NamedSharding(mesh, PartitionSpec())
        self._train = jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding),
                              out_shardings=(self.state_shardings, replicated),
                              donate_argnums=(0,))
        self._eval = jax.jit(make_eval_step(self.model_def, config.loss),
                             in_shardings=(self.state_shardings.params, self.batch_sharding),
                             out_shardings=replicated)

    def _context(self):
        ctx = jax.set_mesh(self.mesh)
        rules = activation_rules(partitioning.activation_resolver(self.rules, self.mesh))
        stack = contextlib.ExitStack()
        stack.enter_context(ctx)
        stack.enter_context(rules)
        return stack

    def abstract_state(self) -> TrainState:
        """The train state as ShapeDtypeStructs carrying their shardings (nothing allocated)."""
        return abstract_with_shardings(jax.eval_shape(self._init), self.state_shardings)

    def init_state(self) -> TrainState:
        """A freshly initialised state, created already sharded."""
        with self._context():
            return self._init()

    def shard_batch(self, batch: dict) -> dict:
        """This process's rows of the global batch -> global jax.Arrays on the mesh. Arrays
        already placed with the batch sharding (training.prefetch) pass through untouched."""
        return {k: v if self._placed(v) else
                jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
                for k, v in batch.items()}

    def _placed(self, value) -> bool:
        return isinstance(value, jax.Array) and value.sharding == self.batch_sharding

    def train_step(self, state: TrainState, batch: dict):
        with self._context():
            return self._train(state, self.shard_batch(batch))

    def eval_step(self, params, batch: dict) -> dict:
        with self._context():
            return self._eval(params, self.shard_batch(batch))

    def lower_train_step(self, batch_shapes: dict):
        """The train step traced for {feature: (shape, dtype)}; returns the Lowered object."""
        abstract_state = self.abstract_state()
        batch = {k: jax.ShapeDtypeStruct(s, d, sharding=self.batch_sharding)
                 for k, (s, d) in batch_shapes.items()}
        with self._context():
            return self._train.lower(abstract_state, batch)

    def compile_train_step(self, batch_shapes: dict):
        """Ahead-of-time compile for {feature: (shape, dtype)}; returns the Compiled object."""
        return self.lower_train_step(batch_shapes).compile()
