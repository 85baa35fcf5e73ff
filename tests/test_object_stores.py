"""Run directories, checkpoints, locks and metrics on buckets, against real local servers
(tests/object_stores.py: fake-gcs-server for gs://, moto for s3://, both on 127.0.0.1)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from fields import conditional_writes as cw
from fields import paths
from tests.object_stores import GCS_BUCKET, S3_BUCKET, Servers
from tests.test_runs import ROOT, env, final_state, train_cmd
from tests.train_helpers import copy_batch, make_trainer
from training.checkpoints import bucket_lock
from training.checkpoints import lock as run_lock
from training.checkpoints.manager import Checkpointer
from training.metrics_log import read_records

GS, S3 = f"gs://{GCS_BUCKET}", f"s3://{S3_BUCKET}"


@pytest.fixture(scope="module", autouse=True)
def servers():
    s = Servers()
    yield s
    s.stop()


def _unique(prefix: str) -> str:
    return f"{prefix}/{time.time_ns()}"


# -- the path layer --------------------------------------------------------------------------

@pytest.mark.parametrize("typed,words", [
    ("", "is empty"), ("  ", "is empty"), ("hdfs://nn/run1", "not hdfs://"),
    ("az://container/run", "not az://"), ("gs:/bucket/run", "is not a bucket URL"),
    ("gs:bucket/run", "is not a bucket URL"), ("GS://Bucket/run", "write it as gs://BUCKET"),
    ("s3://a/run", "not a bucket name")])
def test_a_path_no_store_takes_is_refused_by_name(typed, words):
    with pytest.raises(paths.BadPath, match=words) as e:
        paths.user_path(typed, "--model_dir")
    assert "--model_dir" in str(e.value)


def test_local_and_bucket_paths_read_and_write_alike(tmp_path):
    assert paths.user_path("rel/dir", "x") == os.path.abspath("rel/dir")
    for root in (str(tmp_path), _unique(GS), _unique(S3)):
        paths.write_text(paths.join(root, "a", "x.jsonl"), "one\n")
        paths.write_bytes(paths.join(root, "a", "b", "y.bin"), b"\x00\x01")
        assert paths.read_text(paths.join(root, "a", "x.jsonl")) == "one\n"
        assert paths.walk_files(root) == ["a/b/y.bin", "a/x.jsonl"]
        assert paths.listdir(paths.join(root, "a")) == ["b", "x.jsonl"]
        assert paths.glob(paths.join(root, "a", "*.jsonl")) == [paths.join(root, "a", "x.jsonl")]
        assert paths.getsize(paths.join(root, "a", "b", "y.bin")) == 2
        paths.move_tree(paths.join(root, "a"), paths.join(root, "moved"), first="x.jsonl")
        assert paths.walk_files(root) == ["moved/b/y.bin", "moved/x.jsonl"]
        paths.rmtree(paths.join(root, "moved"))
        assert not paths.exists(paths.join(root, "moved", "x.jsonl"))


# -- conditional writes and the lease --------------------------------------------------------

@pytest.mark.parametrize("root", [GS, S3])
def test_of_writers_racing_for_one_new_object_exactly_one_wins(root):
    url, wins = paths.join(_unique(root), "t5pod.lock"), []

    def race(i):
        try:
            cw.create(url, str(i).encode())
            wins.append(i)
        except cw.Conflict:
            pass
    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    data, version = cw.read(url)
    assert data == str(wins[0]).encode()
    with pytest.raises(cw.Conflict):  # a replace must name the version it read
        cw.replace(url, b"x", cw.Version("1" if root == GS else '"nope"', version.written))
    assert cw.replace(url, b"mine", version).token != version.token


@pytest.mark.parametrize("root", [GS, S3])
def test_a_live_holder_elsewhere_refuses_a_second_run(root):
    model_dir = _unique(root)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from training.checkpoints import lock; "
         f"lock.acquire({model_dir!r}); print('held', flush=True); time.sleep(120)"],
        cwd=ROOT, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.RunLocked, match=f"pid {holder.pid} on .*{model_dir}"):
            run_lock.acquire(model_dir)
    finally:
        holder.kill()
        holder.wait()
    run_lock.acquire(model_dir)  # its pid is gone on this host: taken over at once
    run_lock.release(model_dir)
    assert cw.read(paths.join(model_dir, "t5pod.lock")) is None


def test_a_holder_whose_lease_was_taken_over_saves_nothing_more(monkeypatch, tmp_path):
    monkeypatch.setattr(bucket_lock, "REFRESH_S", 0.1)
    model_dir = _unique(GS)
    run_lock.acquire(model_dir)
    try:
        trainer = make_trainer({"data": 1})
        state = trainer.init_state()
        ckpt = Checkpointer(paths.join(model_dir, "checkpoints"), async_save=False)
        assert ckpt.save(1, state)
        lease = paths.join(model_dir, "t5pod.lock")
        paths.write_text(lease, json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
        deadline = time.time() + 30
        while run_lock._leases[lease].lost is None and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(bucket_lock.LockLost, match="taken over by pid 1 on elsewhere"):
            ckpt.save(2, state)
        assert ckpt.all_steps() == [1]
        ckpt.close()
    finally:
        run_lock.release(model_dir)
    assert json.loads(paths.read_text(lease))["host"] == "elsewhere"  # not ours to delete


# -- checkpoints on gs:// --------------------------------------------------------------------

def test_gs_checkpoints_verify_fall_back_evict_and_restore_onto_another_mesh():
    directory = paths.join(_unique(GS), "checkpoints")
    trainer = make_trainer({"data": 2})
    state = trainer.init_state()
    ckpt = Checkpointer(directory, keep=2, async_save=True)
    states = {}
    for step in (1, 2, 3):
        state, _ = trainer.train_step(state, copy_batch(8, seed=step))
        ckpt.save(step, state, {"position": step})
        states[step] = jax.tree.map(np.asarray, state.params)
    ckpt.close()
    fresh = Checkpointer(directory, keep=2)
    assert fresh.all_steps() == [2, 3] and fresh.verify(3)  # keep-last-2 after the commit
    files = paths.walk_files(fresh.step_dir(3))
    chunk = next(f for f in files if f.startswith("state/d/"))
    url = paths.join(fresh.step_dir(3), chunk)
    data = bytearray(paths.read_bytes(url))
    data[len(data) // 2] ^= 0x01
    paths.write_bytes(url, bytes(data))
    other = make_trainer({"data": 8})
    restored, position, step = fresh.restore_newest_good(other.abstract_state())
    assert step == 2 and position == {"position": 2}
    jax.tree.map(np.testing.assert_array_equal, states[2],
                 jax.tree.map(np.asarray, restored.params))
    assert fresh.all_steps() == [2]
    aside = paths.join(directory, "3.damaged")
    assert "commit_success.txt" in paths.listdir(aside)
    assert "CRC-32 mismatch" in paths.read_text(paths.join(aside, "t5pod_damaged.txt"))
    assert not paths.exists(fresh.step_dir(3))
    fresh.close()


def test_s3_checkpoints_are_refused_and_nothing_is_written():
    with pytest.raises(ValueError, match="cannot keep checkpoints on s3://.*use gs://"):
        Checkpointer(paths.join(S3, "run", "checkpoints"))
    assert paths.walk_files(S3 + "/run") == []


# -- a whole run on gs:// --------------------------------------------------------------------

def _wait_for_object(url, proc, timeout=300):
    start = time.time()
    while not paths.exists(url):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - start < timeout, f"{url} never appeared"
        time.sleep(0.05)


def test_gs_run_killed_resumes_exactly_and_a_second_writer_is_refused(tmp_path, monkeypatch):
    from tools import train as train_cli

    straight, killed = tmp_path / "straight", _unique(GS)
    subprocess.run(train_cmd(straight, 12, 4), cwd=ROOT, env=env(), check=True,
                   capture_output=True)
    proc = subprocess.Popen(train_cmd(killed, 12, 4), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_object(paths.join(killed, "t5pod.lock"), proc)
    proc.send_signal(signal.SIGSTOP)  # held mid-run while a second writer tries its luck
    other_cwd = tmp_path / "elsewhere"  # this test's process, from another directory
    other_cwd.mkdir()
    monkeypatch.chdir(other_cwd)
    with pytest.raises(run_lock.RunLocked) as second:
        train_cli.main(train_cmd(killed, 12, 4)[3:])
    monkeypatch.chdir(ROOT)
    proc.send_signal(signal.SIGCONT)
    _wait_for_object(paths.join(killed, "checkpoints", "8", "commit_success.txt"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"{killed} is being written by another run: pid {proc.pid}" in str(second.value)
    assert os.listdir(other_cwd) == []  # no local `gs:` directory
    out = subprocess.run(train_cmd(killed, 12, 4), cwd=ROOT, env=env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"resumed": true' in out.stdout
    step_a, a = final_state(straight)
    step_b, b = final_state(killed)
    assert step_a == step_b == 12
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])
    logged = [r for r in read_records(killed) if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, 13))  # each step once, across parts
    assert [r["loss"] for r in logged] == [r["loss"] for r in read_records(straight)
                                           if "loss" in r]
    assert {"model.json", "config.gin", "checkpoints", "metrics", "tensorboard"} <= set(
        paths.listdir(killed))
    assert not paths.exists(paths.join(killed, "t5pod.lock"))  # released at the end


def test_a_missing_bucket_or_an_unknown_scheme_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys):
    from tools import train as train_cli

    monkeypatch.chdir(tmp_path)
    for model_dir, words in ((f"gs://no-such-bucket-{time.time_ns()}/run", "does not exist"),
                             ("hdfs://nn/run1", "not hdfs://"),
                             (f"{S3}/run", "cannot keep checkpoints on s3://")):
        with pytest.raises((SystemExit, OSError, ValueError)) as e:
            train_cli.main(train_cmd(model_dir, 6, 2)[3:])
        said = capsys.readouterr().err if e.type is SystemExit else str(e.value)
        assert words in said and model_dir in said, said[-2000:]
        assert os.listdir(tmp_path) == []  # no `gs:`, `hdfs:` or `s3:` directory


# -- task caches and sources in buckets ------------------------------------------------------

def test_a_task_cache_written_to_a_bucket_is_read_from_it_and_never_read_partial(tmp_path):
    from tasks.cache.cache_layout import INFO, IncompleteCache, read_info
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed
    from tools import cache_tasks

    lengths = ["--inputs=32", "--targets=16", "--num_shards=2", "--runner=DirectRunner"]
    cache = _unique(GS)
    summary = cache_tasks.main(["--task=demo_span_corruption", f"--cache_dir={cache}",
                                *lengths])
    assert summary["shards"] == 2 and paths.isfile(paths.join(cache, INFO))
    assert not os.path.exists("gs:")
    config = dict(mixture_or_task_name="demo_span_corruption", batch_size=4,
                  task_feature_lengths={"inputs": 32, "targets": 16}, seed=3)
    with paths.local_copy(cache) as local:
        remote_feed = HostFeed(FeedConfig(**config, cache_dir=cache), 0, 1)
        local_feed = HostFeed(FeedConfig(**config, cache_dir=local), 0, 1)
        for _ in range(3):
            a, b = next(remote_feed), next(local_feed)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
    paths.remove(paths.join(cache, INFO))  # a cache whose commit never happened
    with pytest.raises(IncompleteCache, match=f"{cache} is not a complete cache"):
        read_info(cache)
    s3_cache = _unique(S3)
    cache_tasks.main(["--task=demo_span_corruption", f"--cache_dir={s3_cache}", *lengths])
    assert read_info(s3_cache)["num_shards"] == 2
    with pytest.raises(ValueError, match="reads local paths and gs:// only"):
        FeedConfig(**config, cache_dir=s3_cache)


def test_runs_start_from_hf_and_t5pod_dirs_in_buckets_and_export_to_s3(tmp_path):
    import types

    from model_zoo.interop import hf
    from runner.initial_params import initial_params
    from tests.hf_reference import make_hf_t5
    from tools import convert

    make_hf_t5("gated_untied", seed=3).save_pretrained(tmp_path / "hf")
    hf_url, model_dir, export = (paths.join(_unique(GS), "hf"), paths.join(_unique(GS), "m"),
                                 paths.join(_unique(S3), "export"))
    for name in os.listdir(tmp_path / "hf"):
        paths.upload(str(tmp_path / "hf" / name), paths.join(hf_url, name))
    cfg = hf.read_config(str(tmp_path / "hf"))
    trainer = make_trainer({"data": 2}, model_cfg=cfg)
    want = jax.device_get(initial_params(types.SimpleNamespace(
        model=cfg, initial_checkpoint_path=str(tmp_path / "hf"),
        byte_encoder_checkpoint_path=None), trainer))
    convert.main(["--hf_dir", hf_url, "--to_model_dir", model_dir])
    assert {"model.json", "checkpoints"} <= set(paths.listdir(model_dir))
    for source in (hf_url, model_dir):
        got = jax.device_get(initial_params(types.SimpleNamespace(
            model=cfg, initial_checkpoint_path=source, byte_encoder_checkpoint_path=None),
            trainer))
        jax.tree.map(np.testing.assert_array_equal, got, want)
    convert.main(["--model_dir", model_dir, "--to_hf_dir", export])
    with paths.local_copy(export) as local:
        exported = jax.device_get(hf.read_params(local, cfg))
    jax.tree.map(np.testing.assert_array_equal, exported,
                 jax.device_get(hf.read_params(str(tmp_path / "hf"), cfg)))


@pytest.mark.parametrize("cli", ["study", "quickstart", "wikispell_compare", "train_vocab"])
def test_commands_that_write_local_reports_refuse_a_bucket_before_writing(
        cli, tmp_path, monkeypatch, capsys):
    import importlib

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        importlib.import_module(f"tools.{cli}").main([f"--out={GS}/reports", "--demo"])
    assert "writes its results to a local directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_metric_parts_read_back_as_one_log_each_step_once(tmp_path):
    from training.metrics_log import part_name
    from training.metrics_writer import MetricsWriter

    run = _unique(GS)
    first = MetricsWriter(run, tensorboard=False, resume_step=0)
    for step in (1, 2, 3, 4):
        first.write(step, {"loss": float(step)})
    first.close()
    torn = paths.join(run, "metrics", part_name(time.time_ns(), 2))  # killed while writing
    paths.write_text(torn, '{"step": 3, "loss": 30.0}\n{"step": 4, "lo')
    resumed = MetricsWriter(run, tensorboard=False, resume_step=3)
    resumed.write(4, {"loss": 400.0})
    resumed.write(4, {"eval/loss": 7.0})
    resumed.close()
    assert [(r["step"], r.get("loss", r.get("eval/loss"))) for r in read_records(run)] == [
        (1, 1.0), (2, 2.0), (3, 30.0), (4, 400.0), (4, 7.0)]
    assert not os.path.exists(tmp_path / "gs:") and len(paths.listdir(
        paths.join(run, "metrics"))) == 3
