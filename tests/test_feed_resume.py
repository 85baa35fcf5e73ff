"""Constant-time exact resume from a task cache: the batches after a restore (at a late
position, or in a killed and resumed run) are bitwise those of the uninterrupted feed; each
host's feed state is a file of the checkpoint step, in its manifest, and a damaged one makes
the loop fall back to the previous step.

The cache is written in-process with the function each Beam worker runs
(tests/test_cache.py runs the Beam pipeline itself)."""

import json
import os

import numpy as np
import pytest
import seqio

import tasks  # noqa: F401
from tasks.cache_beam import commit, planned
from tasks.cache_write import CacheRequest, write_shard
from tasks.feeding import FeedConfig, HostFeed
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary
from tests.train_helpers import TINY, make_trainer
from training.checkpoints import lock as run_lock
from training.checkpoints.verify import MANIFEST
from training.loop import LoopConfig, run

LENGTHS = {"inputs": 16, "targets": 16}
TASK = "test_cache_counting"


def _counting(split, shuffle_files=False, seed=None):
    texts = [f"row {i}" for i in range(90)]
    return tf.data.Dataset.from_tensor_slices({"inputs": texts, "targets": texts})


if TASK not in seqio.TaskRegistry.names():
    seqio.TaskRegistry.add(
        TASK, source=seqio.FunctionDataSource(_counting, splits=("train",)),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features={k: seqio.Feature(byte_vocabulary()) for k in ("inputs", "targets")})


def write_cache(cache_dir, shards=3, task=TASK, lengths=LENGTHS):
    request = CacheRequest(task, lengths, str(cache_dir), num_shards=shards)
    plan = planned(request)
    os.makedirs(cache_dir, exist_ok=True)
    return commit([write_shard(request, i) for i in range(shards)], request, plan)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    write_cache(path)
    return str(path)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_at_a_late_position_gives_the_uninterrupted_batches(cache_dir):
    config = FeedConfig(TASK, LENGTHS, batch_size=4, seed=3, cache_dir=cache_dir)
    for host in range(2):
        feed = HostFeed(config, host, 2)
        late = 600  # dozens of epochs of this host's rows
        for _ in range(late):
            next(feed)
        state = json.loads(json.dumps(feed.state()))
        want = [next(feed) for _ in range(3)]
        resumed = HostFeed.restore(config, state, process_index=host, process_count=2)
        assert all(same(next(resumed), w) for w in want)
    epoch = HostFeed(config, 0, 2)
    first, later = next(epoch), HostFeed(config, 0, 2, position=late)
    assert not same(first, next(later))  # every epoch is shuffled anew


class Recording:
    """The feed, keeping every batch it hands out."""

    def __init__(self, feed, seen, stop_at=None):
        self.feed, self.seen, self.stop_at = feed, seen, stop_at

    def __next__(self):
        if self.stop_at is not None and self.feed.position == self.stop_at:
            raise KeyboardInterrupt("killed")  # as if the process died here
        batch = next(self.feed)
        self.seen.append(batch)
        return batch

    def state(self):
        return self.feed.state()


@pytest.fixture(scope="module")
def trainer():
    return make_trainer({"data": 2}, batch_size=4, model_cfg=TINY.replace(vocab_size=384))


def train(trainer, config, model_dir, steps, seen, stop_at=None):
    def make_feed(state):
        feed = HostFeed.restore(config, state, 0, 1) if state else HostFeed(config, 0, 1)
        return Recording(feed, seen, stop_at)

    loop = LoopConfig(train_steps=steps, checkpoint_every=2, log_every=1, prefetch=2,
                      async_checkpoints=False)
    with run_lock.hold(str(model_dir)):
        return run(trainer, loop, str(model_dir), make_feed, progress=False)


def test_killed_run_resumes_with_the_same_batches_and_state_in_the_checkpoint(
        trainer, cache_dir, tmp_path, capfd):
    config = FeedConfig(TASK, LENGTHS, batch_size=4, seed=1, cache_dir=cache_dir)
    uninterrupted = HostFeed(config, 0, 1)
    reference = [next(uninterrupted) for _ in range(8)]
    first, resumed = [], []
    with pytest.raises(KeyboardInterrupt):  # dies reading batch 8 ahead: last checkpoint 4
        train(trainer, config, tmp_path / "killed", 8, first, stop_at=7)
    train(trainer, config, tmp_path / "killed", 8, resumed)
    assert "resumed from" in capfd.readouterr().err
    assert all(same(a, b) for a, b in zip(first, reference))
    assert len(resumed) == 4 and all(same(a, b) for a, b in zip(resumed, reference[4:]))

    step = tmp_path / "killed/checkpoints/8"
    state = json.loads((step / "input/process_0-of-1.json").read_text())
    assert state["position"] == 8 and state["cache"] and state["process_index"] == 0
    manifest = json.loads((step / MANIFEST).read_text())
    assert "input/process_0-of-1.json" in manifest["files"]

    # a damaged feed state: the step is set aside, the run resumes from step 6
    path = step / "input/process_0-of-1.json"
    path.write_text(path.read_text().replace('"position": 8', '"position": 9'))
    again = []
    train(trainer, config, tmp_path / "killed", 8, again)
    err = capfd.readouterr().err
    assert f"checkpoint step 8 skipped: {path}: contents changed" in err
    assert f"resumed from {tmp_path}/killed/checkpoints/6" in err
    assert len(again) == 2 and all(same(a, b) for a, b in zip(again, reference[6:8]))
