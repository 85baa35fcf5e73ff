"""Training a TreeDNN tree: a split at the top is the shared model, a batch of one branch
leaves the others' params and optimizer state bitwise unchanged, and a run stopped and
resumed mid-way equals the uninterrupted run (the branch order and every branch's feed
position travel in the checkpoint)."""

import os
import signal

import jax
import numpy as np
import pytest

from model_zoo import tree
from model_zoo.config import TreeConfig
from tasks.feeding.branch_feed import BranchFeed, BranchFeedConfig
from tasks.feeding.branch_order import branch_at
from tests.train_helpers import TINY, copy_batch, make_trainer
from training.checkpoints.manager import Checkpointer

TOP = TINY.replace(tree=TreeConfig(("a", "b"), encoder_split=2, decoder_split=2))
ONE = TINY.replace(tree=TreeConfig(("a",), encoder_split=1, decoder_split=1, branch_head=True))
THREE = TINY.replace(tree=TreeConfig(("a", "b", "c"), encoder_split=1, decoder_split=0,
                                     branch_head=True))


def _batch(seed: int, branch: int | None = None) -> dict:
    batch = copy_batch(8, seed=seed)
    if branch is not None:
        batch["branch_index"] = np.full((8,), branch, np.int32)
    return batch


def _train(trainer, params, batches):
    state = trainer.init_state()
    state.params = jax.device_put(params, trainer.state_shardings.params)
    for batch in batches:
        state, _ = trainer.train_step(state, batch)
    return jax.tree.map(np.asarray, jax.device_get(state.params))


@pytest.mark.parametrize("cfg", [TOP, ONE], ids=["split_at_top", "one_branch"])
def test_a_tree_trains_as_the_shared_model_on_the_same_batches(cfg):
    shared = make_trainer(model_cfg=TINY, microbatches=2)
    start = jax.tree.map(np.asarray, jax.device_get(shared.init_state().params))
    branches = [0, 1, 1, 0] if len(cfg.tree.branches) == 2 else [0, 0, 0, 0]
    want = _train(shared, start, [_batch(i) for i in range(4)])
    got = _train(make_trainer(model_cfg=cfg, microbatches=2), tree.grow(start, cfg),
                 [_batch(i, b) for i, b in enumerate(branches)])
    for b in set(branches):
        diff = jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))),
                            tree.branch_params(got, cfg, b), want)
        assert max(jax.tree.leaves(diff)) <= 1e-6, diff
    assert max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), want,
                                            start))) > 1e-3  # it trained


def _rows(tree_of_arrays, masks, index):
    """{path: row `index`} of every per-branch leaf."""
    flat = jax.tree_util.tree_flatten_with_path(tree_of_arrays)[0]
    mask = jax.tree.leaves(masks)
    return {jax.tree_util.keystr(p): np.array(x[index]) for (p, x), m in
            zip(flat, mask, strict=True) if m}


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_a_batch_of_one_branch_leaves_the_others_bitwise_unchanged(optimizer):
    trainer = make_trainer(model_cfg=THREE, optimizer=optimizer, weight_decay=0.1)
    state = trainer.init_state()
    for i, b in enumerate([1, 2, 0, 1, 2]):  # every branch has optimizer state by now
        state, _ = trainer.train_step(state, _batch(i, b))
    before = jax.tree.map(np.array, jax.device_get(state))
    param_mask, opt_mask = trainer_masks_of(trainer)
    assert sum(jax.tree.leaves(opt_mask)) >= sum(jax.tree.leaves(param_mask)) > 0
    state, metrics = trainer.train_step(state, _batch(9, 0))
    after = jax.tree.map(np.array, jax.device_get(state))
    assert int(metrics["branch_index"]) == 0
    for other in (1, 2):
        for name, mask in (("params", param_mask), ("opt_state", opt_mask)):
            old = _rows(getattr(before, name), mask, other)
            new = _rows(getattr(after, name), mask, other)
            assert old.keys() == new.keys()
            for path in old:  # bitwise
                assert old[path].tobytes() == new[path].tobytes(), (other, name, path)
    moved = _rows(after.params, param_mask, 0)
    for path, row in _rows(before.params, param_mask, 0).items():
        assert not np.array_equal(row, moved[path]), path  # the batch's branch trained
    # ... and the other branches' state was live: an unmasked update would have moved it
    nonzero = [np.any(r != 0) for r in _rows(before.opt_state, opt_mask, 1).values()]
    assert sum(nonzero) > len(nonzero) // 2
    trunk = before.params["encoder"]["layers"]["trunk"]["layer"]["attention"]["query"]
    assert not np.array_equal(trunk, after.params["encoder"]["layers"]["trunk"]["layer"]
                              ["attention"]["query"])


def trainer_masks_of(trainer):
    from training.trainer import branch_masks

    return branch_masks(trainer.abstract_state(), trainer.model_def.logical_axes())


class _Synthetic:
    """A branch's feed: batch k of branch `seed` is copy_batch(seed=1000 * seed + k)."""

    def __init__(self, seed: int, state: dict | None, on_read=None):
        self.seed, self.position, self.on_read = seed, (state or {}).get("position", 0), on_read

    def __next__(self):
        self.position += 1
        if self.on_read is not None:
            self.on_read()
        return copy_batch(8, seed=1000 * self.seed + self.position)

    def state(self):
        return {"position": self.position}


CONFIG = BranchFeedConfig({"a": "task_a", "b": "task_b", "c": "task_c"},
                          rates={"a": 3, "b": 1, "c": 2}, seed=7)


def test_the_branch_order_follows_the_rates_and_restores_at_any_position():
    order = [branch_at(k, (3.0, 1.0, 2.0), 7) for k in range(3000)]
    shares = np.bincount(order, minlength=3) / len(order)
    np.testing.assert_allclose(shares, [0.5, 1 / 6, 1 / 3], atol=0.03)
    assert order != [branch_at(k, (3.0, 1.0, 2.0), 8) for k in range(3000)]
    straight = BranchFeed(CONFIG, ("a", "b", "c"), lambda b, s: _Synthetic(ord(b), s))
    first = [next(straight) for _ in range(5)]
    resumed = BranchFeed(CONFIG, ("a", "b", "c"), lambda b, s: _Synthetic(ord(b), s),
                         state=straight.state())
    rest = [next(straight) for _ in range(7)]
    assert [int(x["branch_index"][0]) for x in first + rest] == order[:12]
    for x, y in zip(rest, [next(resumed) for _ in range(7)], strict=True):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    other = BranchFeedConfig(CONFIG.tasks, rates={"a": 1, "b": 1, "c": 2}, seed=7)
    with pytest.raises(ValueError, match="branch rates=.*resuming would not replay"):
        BranchFeed(other, ("a", "b", "c"), lambda b, s: _Synthetic(ord(b), s),
                   state=straight.state())


@pytest.mark.parametrize("fields, message", [
    (dict(tasks={"a": "t1", "b": "t1"}), "task.* in several branches"),
    (dict(tasks={"a": "t1"}, rates={"a": 0}), r"rates\['a'\]=0 is invalid"),
    (dict(tasks={"a": "t1"}, rates={"a": 1, "bb": 1}), "branch 'bb', which has no task"),
])
def test_branch_feed_config_refuses_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        BranchFeedConfig(**fields)


def test_branch_feed_config_must_cover_the_tree():
    with pytest.raises(ValueError, match="branch 'c' of the model's tree has no task"):
        BranchFeedConfig({"a": "t1", "b": "t2"}).check_branches(("a", "b", "c"))
    with pytest.raises(ValueError, match="lacks.*did you mean 'b'"):
        BranchFeedConfig({"a": "t1", "bb": "t2"}).check_branches(("a", "b"))


def test_a_stopped_and_resumed_tree_run_equals_the_uninterrupted_run(tmp_path):
    from training.loop import LoopConfig
    from training.loop import run as run_loop

    def make_feed(stop_at=None):
        reads = [0]

        def read():
            reads[0] += 1
            if reads[0] == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)

        return lambda state: BranchFeed(
            CONFIG, THREE.tree.branches,
            lambda b, s: _Synthetic(ord(b), s, read), state)

    loop = LoopConfig(train_steps=8, checkpoint_every=4, log_every=1, prefetch=2)
    straight = run_loop(make_trainer(model_cfg=THREE), loop, str(tmp_path / "straight"),
                        make_feed(), progress=False)
    first = run_loop(make_trainer(model_cfg=THREE), loop, str(tmp_path / "stopped"),
                     make_feed(stop_at=6), progress=False)
    assert first.preempted and 0 < first.step < 8
    second = run_loop(make_trainer(model_cfg=THREE), loop, str(tmp_path / "stopped"),
                      make_feed(), progress=False)
    assert second.resumed and second.step == 8
    name = THREE.tree.branches[branch_at(7, (3.0, 1.0, 2.0), 7)]
    assert f"{name}/loss" in straight.metrics
    for a, b in zip(jax.tree.leaves(jax.device_get(straight.state.params)),
                    jax.tree.leaves(jax.device_get(second.state.params)), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    saved = Checkpointer(str(tmp_path / "stopped" / "checkpoints")).all_steps()
    assert first.step in saved


def test_a_run_refuses_a_tree_without_a_task_per_branch():
    import tasks  # noqa: F401  (registers the tasks)
    from model_zoo import preset
    from partitioning.mesh import MeshConfig
    from runner.run import Run
    from tasks.feed_config import FeedConfig
    from training.loop import LoopConfig
    from training.trainer import TrainConfig

    model = preset("t5_1_1_tiny", vocab_size=2176,
                   tree=TreeConfig(("spell", "words"), encoder_split=1, decoder_split=1))
    feed = FeedConfig("flan_wikispell", {"inputs": 32, "targets": 8}, batch_size=8)
    parts = (MeshConfig(ici={"data": 1}), TrainConfig(batch_size=8), LoopConfig(train_steps=1),
             feed)
    tasks_ = {"spell": "flan_wikispell", "words": "flan_demo_first_words"}
    run = Run(model, *parts, branch_feed=BranchFeedConfig(tasks_))
    assert run.feeds_of(feed)["words"].mixture_or_task_name == "flan_demo_first_words"
    with pytest.raises(ValueError, match="name each branch's task with run.train.branch_feed"):
        Run(model, *parts)
    with pytest.raises(ValueError, match="branch 'words' of the model's tree has no task"):
        Run(model, *parts, branch_feed=BranchFeedConfig({"spell": "flan_wikispell"}))
    with pytest.raises(ValueError, match="but the model has no tree"):
        Run(model.replace(tree=None), *parts, branch_feed=BranchFeedConfig(tasks_))
    with pytest.raises(ValueError, match="unknown task or mixture 'flan_wikispel'"):
        Run(model, *parts, branch_feed=BranchFeedConfig({**tasks_, "spell": "flan_wikispel"}))
