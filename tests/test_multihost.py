"""Multi-host: 2 real processes x 4 CPU devices (gloo) against 1 process x 8, and bad input.

The 2-process run (tests/multihost_worker.py) trains through `training.loop.run` with the
real per-host HostFeed; it must give the losses and state of this process training the
same global batches on the same global mesh, and the checkpoints must cross both ways.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from partitioning.distributed import DistributedConfig, initialize, resolve_mode
from tests import multihost_worker as worker
from training.checkpoints.manager import Checkpointer
from training.metrics_log import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def spawn(log, *args):
    """A worker whose stderr goes to the file `log` (a full pipe would block it)."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(log, "w"),
                            text=True)


def wait_all(procs, logs, timeout):
    deadline = time.monotonic() + timeout
    try:
        for p, log in zip(procs, logs, strict=True):
            p.wait(timeout=max(deadline - time.monotonic(), 1))
            assert p.returncode == 0, open(log).read()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


class GlobalFeed:
    """What the 2 hosts feed together: host 0's shard rows, then host 1's (see process_rows)."""

    def __init__(self):
        from tasks.feed_config import FeedConfig
        from tasks.feeding.host_feed import HostFeed

        self.hosts = [HostFeed(FeedConfig(**worker.FEED), i, 2) for i in range(2)]
        self.position = 0

    def __next__(self):
        self.position += 1
        parts = [next(h) for h in self.hosts]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def state(self):
        return {"position": self.position}


def losses(model_dir):
    return {x["step"]: x["loss"] for x in read_records(model_dir) if "loss" in x}


def test_two_processes_match_one_and_checkpoints_cross(tmp_path):
    from training.loop import LoopConfig, run

    # 1 process x 8 devices, same global mesh and batches; it stops where host 1 is preempted.
    reference = make = worker.make_trainer()
    result = run(reference, LoopConfig(train_steps=worker.PREEMPT_AT,
                                       checkpoint_every=worker.CHECKPOINT_EVERY, log_every=1),
                 str(tmp_path / "one"), lambda _: GlobalFeed(), progress=False)
    want = jax.device_get(result.state)

    port = free_port()
    logs = [tmp_path / f"host{i}.log" for i in range(2)]
    procs = [spawn(logs[i], "train", i, port, tmp_path / "two", tmp_path / "one" / "checkpoints",
                   tmp_path / f"host{i}.json") for i in range(2)]
    wait_all(procs, logs, timeout=240)
    hosts = [json.load(open(tmp_path / f"host{i}.json")) for i in range(2)]

    for i, h in enumerate(hosts):
        assert (h["process_index"], h["process_count"], h["devices"]) == (i, 2, 8)
        assert h["feed_process_index"] == i and h["rows"] == [4 * i, 4 * i + 4]
        # SIGTERM reached host 1 only; both hosts saved the same step and stopped.
        assert h["step"] == worker.PREEMPT_AT and h["preempted"]
        # The default mode agrees through the coordination service: no collective at all
        # between steps, yet both hosts stop at one step, after host 1's SIGTERM (it comes
        # while host 1 reads batch 3, in step 1, and the service agrees about 1 s later).
        assert h["service"]["mode"] == "service" and h["service"]["preempted"], h["service"]
        assert h["service"]["gathers"] == [], h["service"]
        # Agreement by collective gathers before the first step and after each (log) step.
        assert h["collective_gathers"] == 1 + worker.PREEMPT_AT
    stopped = hosts[0]["service"]["step"]
    assert hosts[1]["service"]["step"] == stopped and 1 <= stopped < worker.SERVICE_STEPS
    service = Checkpointer(str(tmp_path / "two-service" / "checkpoints"), async_save=False)
    assert service.all_steps() == [stopped]
    # Each host read its own, disjoint shard: no example is on both hosts.
    rows = [{tuple(r) for r in h["first_batch"]} for h in hosts]
    assert rows[0] and rows[1] and not rows[0] & rows[1]

    # Same losses at every step; host 0 alone wrote the metrics.
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(two) == list(range(1, worker.PREEMPT_AT + 1))
    assert len(open(tmp_path / "two" / "metrics.jsonl").readlines()) == worker.PREEMPT_AT
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(two)],
                               rtol=1e-5)

    # The 2-process checkpoint (one coherent step) restores here onto the 8-device mesh ...
    ckpt = Checkpointer(str(tmp_path / "two" / "checkpoints"), async_save=False)
    assert ckpt.all_steps() == [2, worker.PREEMPT_AT]
    abstract = make.abstract_state()
    restored, _ = ckpt.restore(abstract)
    # The feed position saved is that of the batch the step consumed, not of those prefetched.
    assert ckpt.restore(abstract)[1]["position"] == worker.PREEMPT_AT
    assert service.restore(abstract, stopped)[1]["position"] == stopped
    got = jax.device_get(restored)
    assert int(got.step) == worker.PREEMPT_AT
    tol = dict(rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), got.params, want.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), got.opt_state,
                 want.opt_state)
    # ... and the 1-process checkpoint restored on the 2-process mesh equals its own state.
    for h in hosts:
        assert h["reference_params_diff"] < 1e-5 and h["reference_opt_diff"] < 1e-5, h


def test_a_dead_process_stops_the_other_within_seconds(tmp_path):
    port = free_port()
    logs = [tmp_path / f"host{i}.log" for i in range(2)]
    procs = [spawn(logs[i], "collectives", i, port) for i in range(2)]
    try:
        for p, log in zip(procs, logs, strict=True):  # gloo also prints to stdout
            lines = (line.strip() for line in iter(p.stdout.readline, ""))
            assert "ready" in lines, open(log).read()[-3000:]
        procs[1].send_signal(signal.SIGKILL)
        start = time.monotonic()
        procs[0].wait(timeout=60)
        took = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    err = open(logs[0]).read()
    assert procs[0].returncode != 0
    assert "stopped sending heartbeats" in err and "another task died" in err, err[-3000:]
    assert took < 30, took


def test_unreachable_coordinator_fails_clearly_within_the_timeout():
    port = free_port()  # nobody listens there
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=f"coordinator at localhost:{port} within 2 s"):
        initialize(DistributedConfig(coordinator_address=f"localhost:{port}", num_processes=2,
                                     process_id=1, initialization_timeout=2))
    assert time.monotonic() - start < 10
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_processes=2, process_id=2), r"process_id=2 is invalid: .*in \[0, 1\]"),
    (dict(num_processes=2, process_id=-1), r"process_id=-1 is invalid"),
    (dict(num_processes=0, process_id=0), r"num_processes=0 is invalid: expected an integer >= 1"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0), r"HOST:PORT"),
    (dict(coordinator_address=None, num_processes=2, process_id=0), r"needs a coordinator"),
    (dict(mode="slurm"), r"mode='slurm' is invalid: expected one of \('auto', "),
])
def test_bad_distributed_settings_fail_at_construction(kwargs, match):
    kwargs = {"coordinator_address": "localhost:1234", **kwargs}
    with pytest.raises(ValueError, match=match):
        DistributedConfig(**kwargs)


def test_single_process_initialises_nothing(monkeypatch):
    for key in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(key, raising=False)
    assert resolve_mode(DistributedConfig()) == "single"
    assert initialize(DistributedConfig()) == "single"
    assert not jax.distributed.is_initialized()
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    for key, value in (("SLURM_STEP_NODELIST", "n[1-2]"), ("SLURM_NTASKS", "2"),
                       ("SLURM_PROCID", "1"), ("SLURM_LOCALID", "0")):
        monkeypatch.setenv(key, value)
    assert resolve_mode(DistributedConfig()) == "cluster"


def test_train_cli_refuses_bad_process_id_and_a_mesh_larger_than_the_devices(tmp_path, capsys):
    from tools import train as train_tool

    with pytest.raises(SystemExit):
        train_tool.main([f"--model_dir={tmp_path}", "--gin_file=runs/quickstart.gin",
                         "--coordinator_address=localhost:1234", "--num_processes=2",
                         "--process_id=5"])
    assert "process_id=5 is invalid: expected an integer in [0, 1]" in capsys.readouterr().err
    import partitioning

    with pytest.raises(ValueError, match="multiplies to 16 but there are 8 devices"):
        partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 2, "fsdp": 8}))
