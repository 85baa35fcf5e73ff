"""Orbax checkpoints of the train state, each host's input position and the model's identity.

A CheckpointManager writes asynchronously. Orbax finalises a step by renaming its
temporary directory (on a local disk) or by writing its `commit_success.txt` (on gs://,
which has no rename), so a write that was cut off is never listed. Just before that commit
every file of the step gets a checksum (checkpoint_verify); a restore verifies them and the
restored values are checked finite, and the train loop falls back to the newest step that
passes, setting the damaged ones aside. A state holding NaN/inf is never saved; old steps
are evicted (keep-last-N) only once a newer step has committed; a failed background save
raises once, at the next step boundary, naming the step and the last good one. Restores
take target shardings, so a checkpoint written on one mesh loads onto any other. Paths go
through the one path layer (fields/paths.py); s3:// is refused (`refuse_s3`).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from fields import old_formats, paths
from fields.choices import require_choice
from training.checkpoints.abandoned_writes import close_abandoned_writes
from training.checkpoints.array_rows import array_name, read_rows
from training.checkpoints.lock import ensure_held
from training.checkpoints.host_state import HostStateRestore, HostStateSave
from training.checkpoints.verify import (MANIFEST, DamagedCheckpoint, has_manifest, read_json,
                                       verify_step, write_manifest)
from training.finite import all_finite, nonfinite_leaves
from training.train_state import TrainState

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # where orbax writes a step before renaming it
COMMIT_MARKER = "commit_success.txt"  # orbax's commit of a step on a bucket
DAMAGED_NOTE = "t5pod_damaged.txt"


def refuse_s3(directory: str, flag: str = "the checkpoint directory") -> None:
    """Orbax 0.12 cannot write checkpoints to s3:// (its tensorstore path handling turns
    `s3://b/x` into the relative `s3:/b/x` and refuses it; no public option avoids that)."""
    if paths.scheme(directory) == "s3":
        raise ValueError(f"{flag}={directory}: t5pod cannot keep checkpoints on s3:// (orbax "
                         "0.12 writes local paths and gs:// only); use gs:// or a local/NFS "
                         "path for the model_dir. s3:// works for task caches, data files, "
                         "metrics (tools.eval --metrics_dir) and exports (tools.convert "
                         "--to_hf_dir).")


class CheckpointSaveError(RuntimeError):
    """A background save failed; the run must stop (its message names the last good step)."""


class NonFiniteState(RuntimeError):
    """The state to save holds NaN/inf; it was not saved over the good checkpoints."""


class NoGoodCheckpoint(RuntimeError):
    """Every checkpoint step in the directory is damaged (nothing was changed)."""


def _choose_replica_writes(replica_parallel: bool | None) -> None:
    """Who writes a replicated array: its first replica whole, or each replica a slice.

    Orbax's default splits a replicated array among its replicas, which write their slices
    in parallel (orbax already turns this off on GPUs). On CPU every slice is a separately
    compiled op: a tiny T5's first save on 8 CPU devices took 3.5 s, 0.6 s without it, so
    None (the default) writes whole replicas on CPU and keeps orbax's choice elsewhere;
    True / False force it (tools.bench --checkpoint times both). A forced or CPU handler
    keeps no per-array metadata file, which orbax reads back only for typed PRNG keys (the
    train state holds raw key data): what is restored is the same. Orbax takes this choice
    only globally, for every jax.Array it saves in this process.
    """
    require_choice("Checkpointer", "replica_parallel", replica_parallel, (None, True, False),
                   meaning="None: t5pod's choice")
    if replica_parallel is None:
        if jax.default_backend() != "cpu":
            return
        replica_parallel = False
    handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=replica_parallel)
    log = logging.getLogger("absl")  # orbax warns of every override, i.e. on every CPU run
    log.addFilter(_not_an_override)
    try:
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    finally:
        log.removeFilter(_not_an_override)


def _not_an_override(record: logging.LogRecord) -> bool:
    return "overriding" not in record.getMessage()


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
                 identity: dict | None = None, read_only: bool = False,
                 replica_parallel: bool | None = None, per_branch=None):
        """`identity` (e.g. the model config) is stored with every step and checked on restore.

        `read_only`: restore only (e.g. a pretrained checkpoint on a read-only mount); nothing
        is created, saved, evicted or set aside. `replica_parallel`: see
        _choose_replica_writes. `per_branch`: a tree of bools shaped like the states saved,
        True where an array leads with a TreeDNN `branch` axis (Trainer.per_branch): such an
        array is stored one chunk per branch, so one branch can be read alone
        (`restore_branch_params`); the values saved and restored are the same."""
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1 checkpoints")
        directory = os.fspath(directory)
        refuse_s3(directory)
        self.directory = directory if paths.is_bucket(directory) else os.path.abspath(directory)
        self.identity = identity or {}
        self.keep, self.async_save = keep, async_save
        self.per_branch = per_branch
        self.last_good: int | None = None  # newest step known complete and finite
        self._pending: int | None = None   # step being written in the background
        self._failed = False
        self._primary = jax.process_index() == 0
        self.read_only = read_only
        if not read_only:
            self._check_writable()
            _choose_replica_writes(replica_parallel)
        # Always orbax's async checkpointer (its commit hook writes the manifest); a
        # synchronous Checkpointer waits inside save. Eviction is ours (max_to_keep=None).
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=None, enable_async_checkpointing=True, create=not read_only,
                read_only=read_only,
                async_options=ocp.options.AsyncOptions(
                    post_finalization_callback=self._write_manifest)))

    def _check_writable(self) -> None:
        if paths.is_bucket(self.directory):
            from fields.conditional_writes import bucket_problem

            problem = bucket_problem(self.directory)
            if problem:
                raise PermissionError(f"checkpoint directory {self.directory} is not writable: "
                                      f"{problem}")
            return
        parent = self.directory
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK):
            raise PermissionError(f"checkpoint directory {self.directory} is not writable "
                                  f"({parent} refuses writes)")

    def step_dir(self, step: int) -> str:
        return paths.join(self.directory, str(step))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def verify(self, step: int, data: bool = True) -> bool:
        """True if `step` matches its checksums, False if it has none (older t5pod); raises
        DamagedCheckpoint naming the bad file otherwise. For tools that read one step.
        `data=False`: the array data files are checked by size only (verify_step)."""
        verified = verify_step(self.step_dir(step), data)
        older = [s for s in self.all_steps() if s < step and has_manifest(self.step_dir(s))]
        if not verified and older:  # this t5pod commits the manifest with the step
            raise DamagedCheckpoint(paths.join(self.step_dir(step), MANIFEST),
                                    f"missing, though the older step {older[-1]} has one")
        return verified

    def check_identity(self, step: int | None = None) -> None:
        """Refuse a directory whose checkpoints belong to a different model.

        Without `step`: the newest step whose identity is readable (damage is reported by
        the restore that needs the step)."""
        if not self.identity:
            return
        if step is None:
            for candidate in reversed(self.all_steps()):
                try:
                    return self.check_identity(candidate)
                except DamagedCheckpoint:
                    continue
            return
        path = paths.join(self.step_dir(step), "identity", "metadata")
        if not paths.exists(path):
            return
        stored = old_formats.identity(read_json(path))
        diff = {k: (stored.get(k), self.identity.get(k)) for k in set(stored) | set(self.identity)
                if stored.get(k) != self.identity.get(k)}  # a key one side lacks reads as None
        if diff:
            raise ValueError(f"{self.directory} holds checkpoints of a different model "
                             f"(field: (stored, requested) = {diff}); use another directory. "
                             "Nothing was overwritten.")

    # -- saving ----------------------------------------------------------------------------

    def save(self, step: int, state: TrainState, input_state: dict | None = None,
             force: bool = False) -> bool:
        """Start writing `step` (in the background where async); refuses a non-finite state."""
        if self.read_only:
            raise PermissionError(f"{self.directory} was opened read-only; it takes no saves")
        ensure_held()  # a run whose bucket lease was taken over saves nothing more
        self._finish()  # the previous save's error surfaces here at the latest
        if not all_finite(state):
            raise NonFiniteState(
                f"the train state at step {step} holds NaN/inf (e.g. in "
                f"{', '.join(nonfinite_leaves(state))}); it was not saved, and no checkpoint "
                f"in {self.directory} was changed. {self._last_good_text()}")
        self._pending = step
        saved = self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state, save_args=_save_args(self.per_branch)),
            input=HostStateSave(input_state or {}),
            identity=ocp.args.JsonSave(self.identity)), force=force)
        if not saved:
            self._pending = None
        elif not self.async_save:
            self._finish()
        return saved

    def _write_manifest(self) -> None:
        """Orbax's commit hook (process 0, all hosts' files written, not yet renamed)."""
        step = self._pending
        tmp = self.step_dir(step) + _TMP_SUFFIX
        on_disk = not paths.is_bucket(tmp) and os.path.isdir(tmp)  # buckets: written in place
        write_manifest(tmp if on_disk else self.step_dir(step), step)

    def poll(self) -> None:
        """At a step boundary: if the background save has ended, raise its error (once)."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._finish()

    def _finish(self) -> None:
        """Wait for the pending save; on success evict old steps, else CheckpointSaveError."""
        step = self._pending
        if step is None:
            return
        try:
            self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - any failure of the write is reported the same
            self._pending, self._failed = None, True
            close_abandoned_writes()  # else they print tracebacks after this error, at exit
            raise CheckpointSaveError(
                f"saving checkpoint step {step} to {self.step_dir(step)} failed: "
                f"{type(e).__name__}: {e}. {self._last_good_text()}") from None
        self._pending, self.last_good = None, step
        self._evict()

    def _evict(self) -> None:
        """Keep the newest `keep` committed steps (process 0 deletes; all hosts share them)."""
        if not self._primary:
            return
        old = self.all_steps()[:-self.keep]
        for step in old:
            paths.rmtree(self.step_dir(step))
        if old:
            self.manager.reload()

    def _last_good_text(self) -> str:
        if self.last_good is None:
            return f"No checkpoint of this run was saved in {self.directory} yet."
        return f"The last good checkpoint is {self.step_dir(self.last_good)}."

    # -- restoring -------------------------------------------------------------------------

    def _verified(self, step: int, data: bool = True) -> bool:
        """Process 0 reads the checksums and checks the identity; every host gets its verdict."""
        code, error = 0, None
        if self._primary:
            try:
                code = 1 if self.verify(step, data) else 0
                self.check_identity(step)
            except DamagedCheckpoint as e:
                code, error = -1, e
        code = _agree(code)
        if code < 0:
            raise error or DamagedCheckpoint(self.step_dir(step), "damaged (see process 0)")
        return code == 1

    def restore(self, abstract_state: TrainState, step: int | None = None):
        """(state, input_state) of `step` (default latest) laid out as `abstract_state` says;
        DamagedCheckpoint if it fails its checksums or holds NaN/inf."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        verified = self._verified(step)
        state, input_state = self._restore(abstract_state, step, verified)
        self._note_unverified(step, verified)
        return state, input_state

    def _restore(self, abstract_state, step: int, verified: bool):
        old = self._without_streak(step)
        target = old_formats.restore_target(abstract_state) if old else abstract_state
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), input=HostStateRestore()))
        except Exception as e:  # noqa: BLE001
            if verified:  # the files are as written: not damage, a real error
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DamagedCheckpoint(self.step_dir(step), f"orbax cannot restore it "
                                    f"({type(e).__name__}: {first[:300]})") from None
        state = restored.state
        if not all_finite(state):
            raise DamagedCheckpoint(self.step_dir(step), "restored values hold NaN/inf (in "
                                    f"{', '.join(nonfinite_leaves(state))})")
        if old:
            state = old_formats.upgraded(state, abstract_state)
        return state, dict(restored.input or {})

    def _without_streak(self, step: int) -> bool:
        """Whether the step's loss-scale state lacks `skipped_in_a_row` (old_formats)."""
        path = epath.Path(paths.join(self.step_dir(step), "state"))
        try:
            tree = ocp.StandardCheckpointHandler().metadata(path).tree
            return old_formats.loss_scale_without_streak(tree)
        except Exception:  # noqa: BLE001
            return False  # no metadata to tell: restore as the current layout

    def restore_newest_good(self, abstract_state: TrainState):
        """(state, input_state, step) of the newest step that verifies and is finite, or
        (None, None, None) for an empty directory. Damaged newer steps are reported and
        moved to STEP.damaged; if every step is damaged, NoGoodCheckpoint (nothing moved)."""
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                verified = self._verified(step)
                state, input_state = self._restore(abstract_state, step, verified)
            except DamagedCheckpoint as e:
                if self._primary:
                    logger.warning(f"checkpoint step {step} skipped: {e}")
                damaged.append((step, e))
                continue
            if damaged and not self.read_only:
                self._set_aside(damaged)
            self._note_unverified(step, verified)
            self.last_good = step
            return state, input_state, step
        if damaged:
            raise NoGoodCheckpoint(
                f"no checkpoint step in {self.directory} can be restored: "
                + "; ".join(f"step {s}: {e}" for s, e in damaged)
                + ". Nothing was changed; move the directory away to start afresh.")
        return None, None, None

    def _set_aside(self, damaged: list[tuple[int, Exception]]) -> None:
        """Move damaged steps out of orbax's sight (kept for inspection, never reused): one
        rename on a local disk; on a bucket the commit marker moves first (orbax stops
        listing the step at once), then the rest, beside a note saying why."""
        if self._primary:
            for step, why in damaged:
                target, n = self.step_dir(step) + ".damaged", 1
                while paths.exists(target):
                    n += 1
                    target = f"{self.step_dir(step)}.damaged{n}"
                paths.move_tree(self.step_dir(step), target, first=COMMIT_MARKER)
                if paths.is_bucket(target):
                    paths.write_text(paths.join(target, DAMAGED_NOTE),
                                     f"step {step} was set aside by t5pod: {why}\n")
                logger.warning(f"moved the damaged step {step} to {target}")
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("t5pod_checkpoints_set_aside")
        self.manager.reload()

    def _note_unverified(self, step: int, verified: bool) -> None:
        if not verified and self._primary:
            logger.warning(f"checkpoint {self.step_dir(step)} has no checksums (written "
                           "before t5pod verified checkpoints); restored unverified")

    def restore_params(self, abstract_params, step: int | None = None):
        """Only the params (fine-tuning): the optimizer state is never read.

        DamagedCheckpoint (naming the file) if the step fails its checksums or holds NaN/inf."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        verified = self._verified(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": abstract_params},
                restore_args=jax.tree.map(_restore_arg, {"params": abstract_params}),
                partial_restore=True)))
        params = restored.state["params"]
        if not all_finite(params):
            raise DamagedCheckpoint(self.step_dir(step), "params hold NaN/inf (in "
                                    f"{', '.join(nonfinite_leaves(params))})")
        self._note_unverified(step, verified)
        return params

    def restore_branch_params(self, abstract_params, per_branch, branch: int,
                              step: int | None = None) -> tuple[dict, bool]:
        """(params, row_chunked) of a TreeDNN tree's trunk and branch `branch` alone: every
        leaf `per_branch` marks holds that branch's row only (shape [1, ...], numpy), the
        others are restored as `abstract_params` says; no other branch's row is read when
        `row_chunked` (the checkpoint stores per-branch arrays one chunk per branch).

        The step is verified without reading its array data: the manifest, every file's size
        and every other file's checksum (a checksum of the data files would read every
        branch); the values read must be finite. DamagedCheckpoint otherwise."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        verified = self._verified(step, data=False)
        trunk = _without(abstract_params, per_branch)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                item={"params": trunk}, partial_restore=True,
                restore_args=jax.tree.map(_restore_arg, {"params": trunk}))))
        flat = jax.tree_util.tree_flatten_with_path({"params": abstract_params})[0]
        wanted = {array_name(path): leaf for (path, leaf), row in
                  zip(flat, jax.tree.leaves(per_branch), strict=True) if row}
        rows = read_rows(paths.join(self.step_dir(step), "state"), wanted, branch)
        params = _with(restored.state["params"], per_branch, rows.arrays, "params")
        if not all_finite(params):
            raise DamagedCheckpoint(self.step_dir(step), "params hold NaN/inf (in "
                                    f"{', '.join(nonfinite_leaves(params))})")
        self._note_unverified(step, verified)
        return params, rows.row_chunked

    def wait(self) -> None:
        self._finish()

    def close(self) -> None:
        """Wait for the pending save (raising its error) and close; after a failed save, only
        close (the error was raised once already)."""
        try:
            if not self._failed:
                self._finish()
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001
                if not self._failed:
                    raise


def _agree(value: int) -> int:
    """Process 0's value on every host."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _without(tree: dict, drop) -> dict:
    """Nested dict `tree` without the leaves `drop` (a tree of bools) marks, nor the dicts
    that leaves empty."""
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            kept = _without(value, drop[key])
            if kept:
                out[key] = kept
        elif not drop[key]:
            out[key] = value
    return out


def _with(tree: dict, marks, arrays: dict, name: str) -> dict:
    """`tree` (a nested dict missing the leaves `marks` marks) with each of those leaves
    taken from `arrays` by its orbax name (`name` is the dict's own, dotted)."""
    if not isinstance(marks, dict):
        return arrays[name] if marks else tree
    return {key: _with(tree.get(key, {}), mark, arrays, f"{name}.{key}")
            for key, mark in marks.items()}


def _save_args(per_branch):
    """Orbax save args: an array `per_branch` marks is chunked along its leading axis, one
    chunk per branch; every other array as orbax chooses (None: all)."""
    if per_branch is None:
        return None
    return jax.tree.map(lambda row: ocp.SaveArgs(shard_axes=(0,)) if row else ocp.SaveArgs(),
                        per_branch)


def _restore_arg(x):
    return ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype)


def abstract_with_shardings(abstract, shardings):
    """ShapeDtypeStructs carrying the target shardings, for restore."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        abstract, shardings)
