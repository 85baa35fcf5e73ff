"""The eval of one TreeDNN branch reads only the trunk and that branch: a training checkpoint
stores per-branch arrays one chunk per branch, and `--branch` loading reads the trunk and
that branch's chunks only. Shown two ways: every stored byte of the checkpoint except the
trunk's and that branch's params is overwritten with garbage and the branch still loads
exactly (while loading another branch fails on the garbage), and tensorstore's count of the
bytes read leaves out the other branches' stored bytes."""

import os
import re
import shutil

import jax
import numpy as np
import pytest

import partitioning
from model_zoo import tree as tree_lib
from model_zoo.config import TreeConfig
from model_zoo.identity import identity_of
from tests.train_helpers import TINY, make_trainer
from training.checkpoints import array_rows, loader, stored_layout
from training.checkpoints.manager import Checkpointer
from training.checkpoints.model_json import write_model_json

TREE = TINY.replace(num_encoder_layers=3, num_decoder_layers=2,
                    tree=TreeConfig(("spell", "nli", "topic"), encoder_split=1,
                                    decoder_split=1, branch_head=True))
TASKS = {"spell": "task_spell", "nli": "task_nli", "topic": "task_topic"}


@pytest.fixture(scope="module")
def trainer():
    return make_trainer(model_cfg=TREE)


def _model_dir(path: str, trainer, per_branch: bool) -> str:
    """A tree model_dir whose step 0 is a trainer's state, saved as the train loop saves it
    (or, `per_branch=False`, as t5pod saved trees before it chunked per branch)."""
    ckpt = Checkpointer(os.path.join(path, "checkpoints"), async_save=False,
                        identity=identity_of(TREE),
                        per_branch=trainer.per_branch if per_branch else None)
    ckpt.save(0, trainer.init_state(), {})
    ckpt.close()
    write_model_json(path, TREE, "task_spell", {"inputs": 16, "targets": 8}, TASKS)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, trainer):
    return _model_dir(str(tmp_path_factory.mktemp("tree")), trainer, per_branch=True)


@pytest.fixture(scope="module")
def mesh():
    return partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 1}),
                                  devices=jax.devices()[:1])


def _state(path: str) -> str:
    return os.path.join(path, "checkpoints", "0", "state")


def _per_branch_names() -> set:
    mdef = loader.model_def(lambda r: loader.EncoderDecoder(TREE, rngs=r))
    flat = jax.tree_util.tree_flatten_with_path(
        {"params": mdef.logical_axes()}, is_leaf=lambda x: hasattr(x, "names"))[0]
    return {array_rows.array_name(p) for p, a in flat if tree_lib.is_branch_leaf(a.names)}


def _whole_tree(path: str, mesh) -> dict:
    _, params = loader.restore(loader.open_checkpoint(path), mesh)
    return jax.tree.map(np.asarray, jax.device_get(params))


def _damage_all_but(path: str, branch: int) -> int:
    """Overwrite every value stored in a data file except the params of the trunk and of
    `branch` with random bytes (same length); the bytes overwritten."""
    per_branch, damaged = _per_branch_names(), 0
    rng = np.random.default_rng(0)
    for key, value in stored_layout.stored_values(_state(path)).items():
        if value.file is None:
            continue   # inline in a tree node (metadata, tiny arrays): not a branch's bytes
        chunk = stored_layout.chunk_index(key)
        keep = key.startswith("params.") and chunk is not None and (
            chunk[0] not in per_branch or chunk[1][0] == branch)
        if not keep:
            with open(os.path.join(_state(path), value.file), "r+b") as f:
                f.seek(value.offset)
                f.write(rng.integers(0, 256, value.size, np.uint8).tobytes())
            damaged += value.size
    return damaged


def test_a_branch_loads_exactly_with_every_other_stored_byte_garbage(model_dir, mesh, tmp_path,
                                                                     capsys):
    sizes = loader.branch_sizes(_state(model_dir), TREE)
    assert sizes["unsplit"] == 0 and all(sizes[b] > 0 for b in TREE.tree.branches)
    whole = _whole_tree(model_dir, mesh)
    damaged = shutil.copytree(model_dir, str(tmp_path / "damaged"))
    overwritten = _damage_all_but(damaged, TREE.tree.index("nli"))
    # the other branches' params (all but a few inline bytes) and every optimizer state
    assert overwritten > 0.9 * (sizes["spell"] + sizes["topic"])
    capsys.readouterr()
    mdef, params, cfg, task = loader.load(damaged, mesh, branch="nli")
    assert cfg.tree is None and task == "task_nli"
    want = tree_lib.branch_params(whole, TREE, "nli")
    for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        assert np.asarray(got).tobytes() == expected.tobytes()   # bitwise
    assert "the other branches'" in capsys.readouterr().err
    with pytest.raises(Exception, match="(?i)decod|corrupt|invalid|zstd|damaged"):
        loader.load(damaged, mesh, branch="spell")   # the garbage is read when it is needed
    with pytest.raises(loader.DamagedCheckpoint):
        loader.restore(loader.open_checkpoint(damaged), mesh)   # the whole tree: checksums


def test_the_bytes_read_leave_out_the_other_branches(model_dir, mesh, capsys):
    before = array_rows.bytes_read()
    _whole_tree(model_dir, mesh)
    whole = array_rows.bytes_read() - before
    sizes = loader.branch_sizes(_state(model_dir), TREE)
    # each reader (orbax for the trunk, tensorstore for the rows) reads the OCDBT manifest
    # and B-tree once: at most twice what they take on disk
    meta = sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(_state(model_dir)) for f in files
               if f == "manifest.ocdbt" or (os.path.basename(root) == "d"
                                            and "ocdbt.process_" not in root))
    for name in TREE.tree.branches:
        capsys.readouterr()
        loader.restore_branch(loader.open_checkpoint(model_dir), mesh, "data_parallel", name)
        note = capsys.readouterr().err
        read = int(re.search(r"read ([\d,]+) bytes", note).group(1).replace(",", ""))
        others = sum(sizes[b] for b in TREE.tree.branches if b != name)
        assert f"the other branches' {others:,} bytes of which were not read" in note
        assert 0 < read and read + others <= whole + 2 * meta, (name, read, others, whole, meta)


def test_a_checkpoint_without_branch_chunks_still_loads_and_says_so(trainer, mesh, tmp_path,
                                                                     capsys):
    path = _model_dir(str(tmp_path / "old"), trainer, per_branch=False)
    sizes = loader.branch_sizes(_state(path), TREE)
    assert sizes["unsplit"] > 0 and sizes["spell"] == 0
    _, params, _, _ = loader.load(path, mesh, branch="topic")
    want = tree_lib.branch_params(_whole_tree(path, mesh), TREE, "topic")
    for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        assert np.asarray(got).tobytes() == expected.tobytes()
    assert "so every branch was read" in capsys.readouterr().err
