"""A TreeDNN tree's train step with the mesh rules, microbatches and bf16/fp16: on a mesh
that shards the params it gives the single-device step's params; in low precision it stays
finite and leaves the other branches' params and optimizer state bitwise unchanged; a
branch feed over a task cache restored at a position gives the uninterrupted batches.

Every trainer starts from one initial state (placed with its own shardings), so the file
compiles one init and one step per trainer."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from model_zoo.config import TreeConfig
from tests.train_helpers import TINY, copy_batch, make_trainer
from training.loss_scale import init_loss_scale
from training.trainer import branch_masks

THREE = TINY.replace(tree=TreeConfig(("a", "b", "c"), encoder_split=1, decoder_split=1,
                                     branch_head=True))
# eps well above fp32 summation noise, so Adam's first (sign-like) step is not decided by
# reduction order on near-zero grads (as in test_train_meshes)
OPT = dict(model_cfg=THREE, optimizer="adamw", lr=3e-3, eps=1e-4, weight_decay=0.1)


def _batch(seed: int, branch: int) -> dict:
    batch = copy_batch(8, seed=seed)
    batch["branch_index"] = np.full((8,), branch, np.int32)
    return batch


@pytest.fixture(scope="module")
def start():
    return jax.tree.map(np.asarray, jax.device_get(make_trainer(**OPT).init_state()))


def _placed(trainer, host_state):
    scale = jax.tree.map(np.array, init_loss_scale(trainer.loss_scale))  # distinct buffers
    state = dataclasses.replace(host_state, loss_scale=scale)
    return jax.device_put(state, trainer.state_shardings)


def _host(tree):
    return jax.tree.map(np.array, jax.device_get(tree))


def _masks(trainer):
    return branch_masks(trainer.abstract_state(), trainer.model_def.logical_axes())


def _rows(tree_of_arrays, mask, index):
    """{path: row `index`} of every per-branch leaf."""
    flat = jax.tree_util.tree_flatten_with_path(tree_of_arrays)[0]
    return {jax.tree_util.keystr(p): np.array(x[index]) for (p, x), m in
            zip(flat, jax.tree.leaves(mask), strict=True) if m}


def _steps(trainer, state, branches, first_seed=0):
    losses = []
    for i, b in enumerate(branches):
        state, metrics = trainer.train_step(state, _batch(first_seed + i, b))
        assert int(metrics["branch_index"]) == b
        losses.append(float(metrics["loss"]))
    return state, losses


def test_a_tree_step_on_a_sharded_mesh_gives_the_single_device_params(start):
    branches = [2, 1, 2]  # non-zero branches only; branch 0 never trains
    one = make_trainer(microbatches=2, **OPT)
    want, want_losses = _steps(one, _placed(one, start), branches)
    sharded = make_trainer({"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tensor", microbatches=2,
                           max_replicated_fraction=0.6, **OPT)
    got, losses = _steps(sharded, _placed(sharded, start), branches)
    # the rule set shards the per-branch params (on fsdp and tensor), not their branch axis
    query = got.params["decoder"]["layers"]["branches"]["stack"]["layer"]["self_attention"]
    assert query["query"].shape[0] == 3
    assert query["query"].sharding.spec[:4] == (None, None, "fsdp", "tensor")
    np.testing.assert_allclose(losses, want_losses, rtol=1e-6)
    got_p, want_p = _host(got.params), _host(want.params)
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), want_p, start.params)
    assert max(jax.tree.leaves(moved)) > 1e-3  # it trained
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
                 got_p, want_p)
    mask = _masks(one)[0]
    for b in (1, 2):  # both trained branches moved ...
        old = _rows(start.params, mask, b)
        assert all(not np.array_equal(r, old[p]) for p, r in _rows(got_p, mask, b).items())
    old = _rows(start.params, mask, 0)  # ... branch 0 kept its start, bitwise
    assert all(r.tobytes() == old[p].tobytes() for p, r in _rows(got_p, mask, 0).items())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_low_precision_tree_step_is_finite_and_keeps_the_other_branches(start, dtype):
    trainer = make_trainer(dtype=dtype, **OPT)
    assert trainer.loss_scale.dynamic == (dtype == "float16")  # fp16 scales the loss
    state, _ = _steps(trainer, _placed(trainer, start), [2, 0])  # both have optimizer state
    before = _host(state)
    state, metrics = trainer.train_step(state, _batch(9, 1))
    after = _host(state)
    assert int(metrics["skipped"]) == 0 and int(metrics["branch_index"]) == 1
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert float(metrics["loss_scale"]) == (2.0 ** 15 if dtype == "float16" else 1.0)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(after.params))
    param_mask, opt_mask = _masks(trainer)
    for other in (0, 2):
        for name, mask in (("params", param_mask), ("opt_state", opt_mask)):
            old = _rows(getattr(before, name), mask, other)
            new = _rows(getattr(after, name), mask, other)
            assert old.keys() == new.keys() and old
            for path in old:  # bitwise
                assert old[path].tobytes() == new[path].tobytes(), (other, name, path)
    moved = _rows(after.params, param_mask, 1)
    assert all(not np.array_equal(r, moved[p])
               for p, r in _rows(before.params, param_mask, 1).items())
    trunk = before.params["encoder"]["layers"]["trunk"]["layer"]["attention"]["query"]
    assert not np.array_equal(trunk, after.params["encoder"]["layers"]["trunk"]["layer"]
                              ["attention"]["query"])


def test_a_branch_feed_over_a_task_cache_resumes_with_the_same_batches(tmp_path):
    from tasks.feeding.branch_feed import BranchFeed, BranchFeedConfig
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed
    from tests.test_feed_resume import LENGTHS, TASK, write_cache

    write_cache(tmp_path, shards=2)
    config = BranchFeedConfig({"a": TASK, "b": "uncached"}, rates={"a": 2, "b": 1}, seed=5,
                              cache_dirs={"a": str(tmp_path)})
    run_feed = FeedConfig(TASK, LENGTHS, batch_size=4, seed=3)

    def make_feed(branch, state):
        if branch == "b":  # a stand-in branch: batch k is copy_batch(seed=k)
            return _Counting(state)
        feed = config.feed_of(run_feed, branch)
        assert feed.cache_dir == str(tmp_path)
        return HostFeed(feed, 0, 1) if state is None else HostFeed.restore(feed, state, 0, 1)

    straight = BranchFeed(config, ("a", "b"), make_feed)
    first = [next(straight) for _ in range(40)]  # past an epoch of branch a's 90 rows
    state = json.loads(json.dumps(straight.state()))
    want = [next(straight) for _ in range(6)]
    resumed = BranchFeed(config, ("a", "b"), make_feed, state=state)
    for w, g in zip(want, [next(resumed) for _ in range(6)], strict=True):
        assert w.keys() == g.keys() and all(np.array_equal(w[k], g[k]) for k in w)
    # branch a's batches are the cache's own feed's batches, in order
    cached = HostFeed(config.feed_of(run_feed, "a"), 0, 1)
    of_a = [b for b in first + want if b["branch_index"][0] == 0]
    assert 20 < len(of_a) < len(first + want)
    for got in of_a:
        plain = next(cached)
        assert all(np.array_equal(got[k], plain[k]) for k in plain)


class _Counting:
    def __init__(self, state):
        self.position = (state or {}).get("position", 0)

    def __next__(self):
        self.position += 1
        return copy_batch(4, seed=self.position)

    def state(self):
        return {"position": self.position}
