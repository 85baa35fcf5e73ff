"""One loader for every checkpoint source: an HF directory, a t5x checkpoint, a t5pod model_dir.

`open_checkpoint(path, what)` finds which a path holds and the model it holds:
- an HF directory (config.json + safetensors, either transformers era: `model_zoo.interop.hf`);
- a t5x checkpoint (`checkpoint_N`, its msgpack `checkpoint` file, or a t5x model_dir:
  `model_zoo.interop.t5x`). t5x stores no config: the caller's ModelConfig is the config (without
  one, the shapes and t5x's config.gin give it); the dimensions its shapes imply go
  through the identity check, and `model_zoo.interop.t5x` checks every shape again as it reads;
- a t5pod model_dir (model.json + checkpoints/; `DIR/checkpoints/STEP` names one step).
  The step is verified before it is restored: a damaged one is refused with its path.

`check_model` is the one identity check (`model_zoo.identity`): a checkpoint of another
model is refused with every differing field, checkpoint value vs run value, before any
weight is read. `restore` gives the params sharded on a mesh; `place` puts (parts of)
them onto a trainer's shardings. runner/initial_params.py (a run's start, a hybrid's two
parts), `load` (inference) and tools.convert all load through here.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np

import partitioning
from fields import paths
from model_zoo import EncoderDecoder, ModelConfig
from model_zoo.interop import hf, t5x
from model_zoo import tree as tree_lib
from training.checkpoints import array_rows, kinds, stored_layout
from model_zoo.identity import differences, identity_of
from model_zoo.model_def import ModelDef, model_def
from training.checkpoints.model_json import MODEL_JSON, branch_task, read_model_json
from training.checkpoints.verify import DamagedCheckpoint
from training.checkpoints.manager import Checkpointer, abstract_with_shardings
from training.run_dir import CHECKPOINTS, RunDir

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk and the model it holds (nothing restored yet)."""

    what: str             # how the user named it, for messages: "INITIAL_CHECKPOINT_PATH"
    path: str
    kind: str             # "hf" | "t5x" | "t5pod"
    config: ModelConfig   # the model it holds (t5x: the one it is read as)
    identity: dict | None  # the fields its params depend on (None: t5x shapes gave none)
    task: str | None = None
    model_dir: str | None = None   # t5pod
    step: int | None = None        # t5pod: the step to restore (None: the newest)
    t5x_params: dict | None = dataclasses.field(default=None, repr=False, compare=False)
    url: str | None = None  # where it was read from, when `path` is its local download

    @property
    def name(self) -> str:
        return f"{self.what}={self.url or self.path}"


def _t5pod_dir(path: str) -> tuple[str | None, int | None]:
    """(model_dir, step) for DIR, DIR/checkpoints or DIR/checkpoints/STEP; (None, None)."""
    parent = paths.parent(path)
    candidates = [(path, None)]
    if paths.name(path) == CHECKPOINTS:
        candidates.append((parent, None))
    if paths.name(path).isdigit() and paths.name(parent) == CHECKPOINTS:
        candidates.append((paths.parent(parent), int(paths.name(path))))
    for model_dir, step in candidates:
        if paths.isfile(paths.join(model_dir, MODEL_JSON)):
            return model_dir, step
    return None, None


def open_checkpoint(path: str, what: str = "checkpoint", model: ModelConfig | None = None,
                    step: int | None = None, **overrides) -> Checkpoint:
    """The checkpoint at `path`. `model`: the ModelConfig a t5x checkpoint is read as (for
    the others it is checked with `check_model`). `overrides` replace ModelConfig fields that
    leave the params unchanged (dtype, dropout_rate, ...). `step`: a t5pod step."""
    path = paths.user_path(path, what)
    if not paths.exists(path):
        raise FileNotFoundError(f"{what}={path} does not exist")
    model_dir, path_step = _t5pod_dir(path)
    if model_dir is None:
        try:
            kind = kinds.detect(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{what}={e}") from None
    else:
        kind, step = "t5pod", path_step if step is None else step
    if step is not None and kind != "t5pod":
        raise ValueError(f"{what}={path}: a step ({step}) names a t5pod checkpoint; this is "
                         f"{'an HF directory' if kind == 'hf' else 'a t5x checkpoint'}")
    url = path if kind != "t5pod" and paths.is_bucket(path) else None
    path = paths.downloaded(path) if url else path  # safetensors / t5x readers: local files
    if kind == "hf":
        cfg = hf.read_config(path, **overrides)
        return Checkpoint(what, path, kind, cfg, identity_of(cfg), url=url)
    if kind == "t5pod":
        cfg, task = read_model_json(model_dir)
        cfg = cfg.replace(**overrides) if overrides else cfg
        return Checkpoint(what, path, kind, cfg, identity_of(cfg), task, model_dir, step)
    flat = t5x.read_target(path)
    if model is None:
        cfg = t5x.read_config(path, flat, **overrides)
    else:
        cfg = model.replace(**overrides) if overrides else model
    return Checkpoint(what, path, kind, cfg, _t5x_identity(path, flat), t5x_params=flat,
                      url=url)


def _t5x_identity(path: str, flat: dict) -> dict | None:
    """The identity t5x param shapes (and config.gin's activations) imply, or None where they
    imply no ModelConfig (then model_zoo.interop.t5x's per-param shape checks decide)."""
    try:
        return identity_of(t5x.read_config(path, flat))
    except Exception:  # noqa: BLE001 - an unusual layout: the reader's own checks report it
        return None


def report(ckpt: Checkpoint, diff: dict, target: str = "this run", side: str = "run") -> None:
    """The one message for a checkpoint of another model: {field: (checkpoint, `side`)}."""
    if diff:
        fields = "; ".join(f"{k}: checkpoint {have!r}, {side} {want!r}"
                           for k, (have, want) in diff.items())
        raise ValueError(f"{ckpt.name} holds a different model than {target} ({fields}); "
                         "nothing was loaded")


def check_model(ckpt: Checkpoint, want: ModelConfig, target: str = "this run",
                side: str = "run") -> None:
    """Refuse `ckpt` unless it holds `want`'s model (identity fields equal)."""
    if ckpt.identity is not None:
        report(ckpt, differences(ckpt.identity, identity_of(want)), target, side)


def check_fields(ckpt: Checkpoint, want: dict, target: str) -> None:
    """Refuse `ckpt` unless its ModelConfig has `want`'s {field: value}."""
    report(ckpt, {k: (getattr(ckpt.config, k), v) for k, v in want.items()
                  if getattr(ckpt.config, k) != v}, target)


def _check_tree(ckpt: Checkpoint, pure: dict, abstract: dict) -> None:
    given = dict(jax.tree_util.tree_flatten_with_path(pure)[0])
    for path, spec in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        name = jax.tree_util.keystr(path)
        if path not in given:
            raise ValueError(f"{ckpt.name} lacks param {name} of the model it is read as")
        if np.shape(given[path]) != spec.shape:
            raise ValueError(f"{ckpt.name}: param {name} has shape {np.shape(given[path])}, "
                             f"the model needs {spec.shape}")


def restore(ckpt: Checkpoint, mesh, rules="data_parallel", config: ModelConfig | None = None,
            shardings=None) -> tuple[ModelDef, dict]:
    """(ModelDef, params) of `config` (default: the checkpoint's), sharded by `shardings`
    (default: `rules` on `mesh`). Only params are read (no optimizer state)."""
    cfg = config or ckpt.config
    mdef = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    abstract = mdef.abstract_params()
    if shardings is None:
        shardings = partitioning.tree_shardings(mdef.logical_axes(), abstract,
                                                partitioning.rule_set(rules), mesh)
    if ckpt.kind == "t5pod":
        return mdef, _restore_t5pod(ckpt, abstract_with_shardings(abstract, shardings))
    pure = (hf.read_params(ckpt.path, cfg) if ckpt.kind == "hf"
            else t5x.params_from_t5x(ckpt.t5x_params, cfg))
    _check_tree(ckpt, pure, abstract)
    pure = jax.tree.map(lambda x, a: np.asarray(x, a.dtype), pure, abstract)
    return mdef, jax.device_put(pure, shardings)


def _restore_t5pod(ckpt: Checkpoint, target: dict, branch: tuple | None = None):
    """The params of the checkpoint's step; `branch` = (per_branch mask, index): a tree's
    trunk and that branch only, as (params with [1, ...] rows, row_chunked, step dir)."""
    directory = RunDir.of(ckpt.model_dir).checkpoints
    checkpointer = Checkpointer(directory, async_save=False, read_only=True)
    steps = checkpointer.all_steps()
    step = steps[-1] if ckpt.step is None and steps else ckpt.step
    if step is None:
        raise FileNotFoundError(f"{ckpt.name}: {directory} holds no complete checkpoint")
    if step not in steps:
        raise FileNotFoundError(f"{ckpt.name}: {directory} has no step {step} (steps: {steps})")
    try:
        if branch is None:
            return checkpointer.restore_params(target, step)
        params, row_chunked = checkpointer.restore_branch_params(target, *branch, step=step)
        return params, row_chunked, checkpointer.step_dir(step)
    except DamagedCheckpoint as e:
        others = [s for s in steps if s != step]
        hint = (f"; name an older step as {directory}/STEP (steps: {others})" if others else "")
        raise DamagedCheckpoint(e.path, f"{e.reason}. {ckpt.what} step {step} is damaged and "
                                f"was not loaded{hint}") from None


def check_branch(ckpt: Checkpoint, branch: str | None) -> None:
    """Refuse `--branch` for a plain T5, a plain export of a tree, or an unknown branch
    (did you mean), before anything is read."""
    tree = ckpt.config.tree
    if branch is None:
        return
    if tree is None:
        raise ValueError(f"{ckpt.name} holds a plain T5 (no TreeDNN tree): drop --branch={branch}")
    tree.index(branch)


def restore_branch(ckpt: Checkpoint, mesh, rules, branch: str) -> tuple[ModelDef, dict]:
    """(ModelDef, params) of the plain T5 that branch `branch` of a tree checkpoint is: its
    trunk, then the branch (model_zoo.tree.branch_params). Only the trunk and that branch
    are read (Checkpointer.restore_branch_params); a note on stderr says how many bytes that
    was against the whole tree's params."""
    check_branch(ckpt, branch)
    cfg = ckpt.config
    index = cfg.tree.index(branch)
    tree_def = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    abstract = tree_def.abstract_params()
    per_branch = jax.tree.map(lambda a: tree_lib.is_branch_leaf(tuple(a.names)),
                              tree_def.logical_axes(), is_leaf=lambda x: hasattr(x, "names"))
    shardings = partitioning.tree_shardings(tree_def.logical_axes(), abstract,
                                            partitioning.rule_set(rules), mesh)
    before = array_rows.bytes_read()
    params, row_chunked, step_dir = _restore_t5pod(
        ckpt, abstract_with_shardings(abstract, shardings), (per_branch, index))
    read = array_rows.bytes_read() - before
    plain = tree_lib.plain_config(cfg)
    mdef = model_def(lambda r: EncoderDecoder(plain, rngs=r))
    plain_shardings = partitioning.tree_shardings(mdef.logical_axes(), mdef.abstract_params(),
                                                  partitioning.rule_set(rules), mesh)
    params = jax.device_put(tree_lib.branch_params(params, cfg, 0), plain_shardings)
    if jax.process_index() == 0:
        logger.info(branch_read_note(step_dir, cfg, branch, read, row_chunked))
    return mdef, params


def branch_read_note(step_dir: str, cfg: ModelConfig, branch: str, read: int,
                     row_chunked: bool) -> str:
    """What loading `branch` read, against the bytes the whole tree's params take."""
    sizes = branch_sizes(paths.join(step_dir, "state"), cfg)
    whole = sum(sizes.values())
    others = sum(sizes[b] for b in cfg.tree.branches if b != branch)
    text = (f"note: --branch={branch} read {read:,} bytes of {step_dir} (its trunk and "
            f"branch); the whole tree's params take {whole:,} bytes there")
    if not row_chunked:
        return (text + "; this checkpoint stores each per-branch array in one chunk (written "
                "before t5pod stored them one chunk per branch), so every branch was read")
    return text + f", the other branches' {others:,} bytes of which were not read"


def branch_sizes(item_dir: str, cfg: ModelConfig) -> dict[str, int]:
    """Stored bytes of a tree checkpoint's params (stored_layout, nothing of them read):
    {"trunk": ..., BRANCH: ... for each branch, "unsplit": ...}; a per-branch array's chunk
    counts for its row's branch, or as "unsplit" where one chunk holds every branch."""
    tree_def = model_def(lambda r: EncoderDecoder(cfg, rngs=r))
    flat = jax.tree_util.tree_flatten_with_path(
        {"params": tree_def.logical_axes()}, is_leaf=lambda x: hasattr(x, "names"))[0]
    per_branch = {array_rows.array_name(path) for path, a in flat
                  if tree_lib.is_branch_leaf(tuple(a.names))}
    values = {k: v for k, v in stored_layout.stored_values(item_dir).items()
              if k.startswith("params.")}
    chunks = {k: stored_layout.chunk_index(k) for k in values}
    rows = {}  # per-branch array: how many chunks along its branch axis
    for chunk in chunks.values():
        if chunk is not None and chunk[0] in per_branch:
            rows[chunk[0]] = max(rows.get(chunk[0], 0), chunk[1][0] + 1)
    count = len(cfg.tree.branches)
    sizes = dict.fromkeys(("trunk", *cfg.tree.branches, "unsplit"), 0)
    for key, value in values.items():
        chunk = chunks[key]
        if chunk is None or chunk[0] not in per_branch:
            sizes["trunk"] += value.size   # shared arrays and every array's metadata
        elif rows[chunk[0]] == count:
            sizes[cfg.tree.branches[chunk[1][0]]] += value.size
        else:
            sizes["unsplit"] += value.size
    return sizes


def place(params: dict, shardings: dict, names=None) -> dict:
    """The top-level `names` of `params` (default all) on `shardings` (a trainer's)."""
    names = list(params) if names is None else [k for k in names if k in params]
    return {k: jax.device_put(params[k], shardings[k]) for k in names}


def load(path: str, mesh, rules="data_parallel", step: int | None = None,
         model: ModelConfig | None = None, what: str = "model_dir", branch: str | None = None,
         **overrides):
    """(ModelDef, sharded params, ModelConfig, task name or None) for inference, from a t5pod
    model_dir (`step`: one of its steps), an HF directory or a t5x checkpoint
    (training/checkpoints/py). `model`: the ModelConfig a t5x checkpoint is read as
    (default: its shapes and config.gin); for the others it must be the model they hold.
    `overrides` replace fields that leave the params unchanged (dtype, ...). `branch`: a
    TreeDNN tree's branch, loaded as its plain T5 (the task: the branch's)."""
    ckpt = open_checkpoint(path, what, model=model, step=step, **overrides)
    check_branch(ckpt, branch)
    if branch is not None:
        mdef, params = restore_branch(ckpt, mesh, rules, branch)
        task = branch_task(ckpt.model_dir, branch) if ckpt.model_dir else None
        return mdef, params, tree_lib.plain_config(ckpt.config), task or ckpt.task
    if ckpt.config.tree is not None:
        raise ValueError(f"{ckpt.name} holds a TreeDNN tree with branches "
                         f"{list(ckpt.config.tree.branches)}: load one with --branch=NAME")
    if model is not None:
        check_model(ckpt, model, "the model given", "given")
        cfg = model.replace(**overrides) if overrides else model
    else:
        cfg = ckpt.config
    mdef, params = restore(ckpt, mesh, rules, config=cfg)
    return mdef, params, cfg, ckpt.task
