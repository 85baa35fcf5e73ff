"""Constant-time exact resume from a task cache: the batches after a restore at a late
position are bitwise those of the uninterrupted feed, on each of two hosts.

The cache is written in-process with the function each Beam worker runs; tests/test_cache.py
runs the Beam pipeline itself, and trains and resumes from its cache."""

import json
import os

import numpy as np
import pytest
import seqio

import tasks  # noqa: F401
from tasks.cache.cache_beam import commit, planned
from tasks.cache.cache_write import CacheRequest, write_shard
from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed
from tasks.settings import from_mapping
from tasks.tf_setup import tf
from tasks.vocabularies import byte_vocabulary

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


def write_cache(cache_dir, shards=3, task=TASK, lengths=LENGTHS, settings=None):
    request = CacheRequest(task, lengths, str(cache_dir), num_shards=shards,
                           task_settings=from_mapping(settings or {}))
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
