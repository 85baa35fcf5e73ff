"""Offline caching with Apache Beam (DirectRunner): the cache command writes the demo
mixture (demo_span_corruption and demo_prefix_lm, a cache per task); a run trains from the
demo_span_corruption one, is killed late and resumes with exactly the
batches of the uninterrupted feed; each host's feed state is in the checkpoint step and its
manifest, and a damaged one falls back; a cache of other data is refused naming the
difference; a partial cache is never read as complete; the mixture's cache mixes its tasks
and resumes exactly."""

import json
import os
import shutil

import numpy as np
import pytest

import tasks  # noqa: F401
from tasks.cache import cache_spec
from tasks.cache.cache_beam import check_target, planned
from tasks.cache.cache_layout import INFO, IncompleteCache, shard_files
from tasks.cache.cache_write import CacheRequest
from tasks.feed_config import FeedConfig
from tasks.feeding.host_feed import HostFeed
from tests.test_feed_resume import same, write_cache
from tests.train_helpers import TINY, make_trainer
from tools import cache_tasks
from training.checkpoints import lock as run_lock
from training.checkpoints.verify import MANIFEST
from training.loop import LoopConfig, run

TASK = "demo_span_corruption"
LENGTHS = {"inputs": 32, "targets": 16}


MIXTURE = "demo_span_corruption_and_prefix_lm"


@pytest.fixture(scope="module")
def mixture_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("beam") / "demo")
    summary = cache_tasks.main([f"--task={MIXTURE}", "--inputs=32", "--targets=16",
                                f"--cache_dir={path}", "--num_shards=2",
                                "--runner=DirectRunner"])
    assert summary["tasks"] == ["demo_prefix_lm", TASK] and summary["shards"] == 4
    return path


@pytest.fixture(scope="module")
def cache_dir(mixture_dir):
    return os.path.join(mixture_dir, TASK)


class Recording:
    """The feed, keeping every batch it hands out; dies reading batch `die_at` + 1."""

    def __init__(self, feed, seen, die_at=None):
        self.feed, self.seen, self.die_at = feed, seen, die_at

    def __next__(self):
        if self.feed.position == self.die_at:
            raise KeyboardInterrupt("killed")
        batch = next(self.feed)
        self.seen.append(batch)
        return batch

    def state(self):
        return self.feed.state()


@pytest.fixture(scope="module")
def trainer():
    return make_trainer({"data": 2}, batch_size=4, model_cfg=TINY.replace(vocab_size=2100))


def train(trainer, config, model_dir, steps, seen, die_at=None, every=60):
    def make_feed(state):
        feed = HostFeed.restore(config, state, 0, 1) if state else HostFeed(config, 0, 1)
        return Recording(feed, seen, die_at)

    loop = LoopConfig(train_steps=steps, checkpoint_every=every, log_every=60, prefetch=2,
                      async_checkpoints=False)
    with run_lock.hold(str(model_dir)):
        return run(trainer, loop, str(model_dir), make_feed, progress=False)


def test_cached_task_trains_and_a_killed_run_resumes_late_with_the_same_batches(
        trainer, cache_dir, tmp_path, capfd):
    config = FeedConfig(TASK, LENGTHS, batch_size=4, seed=1, cache_dir=cache_dir)
    uninterrupted = HostFeed(config, 0, 1)
    reference = [next(uninterrupted) for _ in range(124)]
    first, resumed = [], []
    model_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # dies reading batch 123 ahead; last save at 120
        train(trainer, config, model_dir, 124, first, die_at=122)
    assert all(same(a, b) for a, b in zip(first, reference[:len(first)], strict=True))
    train(trainer, config, model_dir, 124, resumed, every=2)
    assert f"resumed from {model_dir}/checkpoints/120" in capfd.readouterr().err
    assert all(same(a, b) for a, b in zip(resumed, reference[120:], strict=True))

    step = model_dir / "checkpoints/124"
    path = step / "input/process_0-of-1.json"
    state = json.loads(path.read_text())
    assert state["position"] == 124 and state["cache"] and state["process_index"] == 0
    assert "input/process_0-of-1.json" in json.loads((step / MANIFEST).read_text())["files"]

    path.write_text(path.read_text().replace('"position": 124', '"position": 125'))
    again = []
    train(trainer, config, model_dir, 124, again, every=2)
    err = capfd.readouterr().err
    assert f"checkpoint step 124 skipped: {path}: contents changed" in err
    assert f"resumed from {model_dir}/checkpoints/122" in err
    assert len(again) == 2 and all(same(a, b) for a, b in zip(again, reference[122:], strict=True))


def refusal(config) -> str:
    with pytest.raises(ValueError) as err:
        HostFeed(config, 0, 1)
    return str(err.value)


def test_a_cache_of_other_data_is_refused_naming_the_difference(cache_dir, monkeypatch):
    def feed(task=TASK, lengths=LENGTHS, **kw):
        return FeedConfig(task, lengths, 4, cache_dir=cache_dir, **kw)

    assert "task_feature_lengths.inputs: cache 32, this run 64" in refusal(
        feed(lengths={"inputs": 64, "targets": 16}))
    assert "task: cache 'demo_span_corruption', this run 'demo_prefix_lm'" in refusal(
        feed("demo_prefix_lm"))
    assert ("vocabularies.targets.class: cache 'SentencePieceVocabulary', this run "
            "'ByteVocabulary'") in refusal(feed("demo_span_corruption_byte"))
    assert "pack: cache True, this run False" in refusal(feed(pack=False))
    monkeypatch.setattr(cache_spec, "PREPROCESSING_VERSION", 2)
    assert "preprocessing.version: cache 1, this run 2" in refusal(feed())


def test_a_cache_of_another_corpus_is_refused_and_the_command_never_overwrites(tmp_path):
    corpus = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.txt"
        path.write_text("\n".join(f"{name} line {i} of a corpus long enough to corrupt it"
                                  for i in range(30)))
        corpus.append({"text_corpus": {"train": str(path)}})
    cache = tmp_path / "cache"
    write_cache(cache, 1, "text_span_corruption", LENGTHS, corpus[0])
    info = json.loads((cache / INFO).read_text())
    assert set(info["spec"]["task_settings"]) == {"text_corpus"}  # only what the task read
    other = FeedConfig("text_span_corruption", LENGTHS, 2, cache_dir=str(cache),
                       task_settings=corpus[1])
    assert f"task_settings.text_corpus.train: cache ['{tmp_path}/a.txt']" in refusal(other)
    before = sorted(os.listdir(cache))
    request = CacheRequest("text_span_corruption", {"inputs": 64, "targets": 16}, str(cache),
                           1, task_settings=other.task_settings)
    with pytest.raises(ValueError, match="already holds another cache.*task_feature_lengths."
                                         "inputs: cache 32, this run 64.*Nothing was written"):
        check_target(request, planned(request))
    assert sorted(os.listdir(cache)) == before


def test_a_partial_cache_is_never_read_as_complete(cache_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(cache_dir, partial)
    config = FeedConfig(TASK, LENGTHS, 4, cache_dir=str(partial))
    shard = partial / shard_files(str(partial))[0]
    size = os.path.getsize(shard)
    os.truncate(shard, size // 2)
    with pytest.raises(IncompleteCache, match=f"{shard} has {size // 2} bytes, {size} when "
                                              "cached: truncated"):
        HostFeed(config, 0, 1)
    os.remove(partial / INFO)  # as a job leaves it that died before its last step
    with pytest.raises(IncompleteCache, match="no cache_info.json but 2 shard file.*did not "
                                              "finish"):
        HostFeed(config, 0, 1)
    request = CacheRequest(TASK, LENGTHS, str(partial), 2)
    assert check_target(request, planned(request)) is None  # the command starts afresh
    assert shard_files(str(partial)) == []
    with pytest.raises(IncompleteCache, match="does not exist"):
        HostFeed(FeedConfig(TASK, LENGTHS, 4, cache_dir=str(tmp_path / "none")), 0, 1)


def test_a_cached_mixture_mixes_its_tasks_and_resumes_exactly(mixture_dir):
    config = FeedConfig(MIXTURE, LENGTHS, batch_size=8, seed=2, cache_dir=mixture_dir)
    feed = HostFeed(config, 0, 1)
    batches = [next(feed) for _ in range(40)]
    state = json.loads(json.dumps(feed.state()))
    want = next(feed)
    assert same(next(HostFeed.restore(config, state, 0, 1)), want)
    # span corruption puts sentinels (the top 100 ids) into its inputs; prefix LM never does
    with_sentinels = [bool((row >= 2000).any()) for b in batches
                      for row in b["encoder_input_tokens"]]
    assert 0.3 < np.mean(with_sentinels) < 0.7  # rates 1:1
    info = os.path.join(mixture_dir, "mixture_info.json")
    saved = open(info).read()
    try:
        with open(info, "w") as f:
            f.write(saved.replace('"demo_prefix_lm": 1.0', '"demo_prefix_lm": 2.0'))
        assert "rates.demo_prefix_lm: cache 2.0, this run 1.0" in refusal(config)
    finally:
        with open(info, "w") as f:
            f.write(saved)
