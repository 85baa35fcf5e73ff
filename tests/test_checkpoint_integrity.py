"""Never lose or corrupt a run: damaged steps fall back, NaN is never saved, one writer per
model_dir, failed saves stop the run at once, each step logged once, SIGTERM before the loop.

The tiny runs drive training.loop.run directly; one Trainer is shared (one compile)."""

import glob
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.train_helpers import copy_batch, make_trainer
from training.checkpoints import lock as run_lock
from training.checkpoints.manager import Checkpointer, CheckpointSaveError, NonFiniteState
from training.loop import LoopConfig, run
from training.run_dir import LOCK


@pytest.fixture(scope="module")
def trainer():
    return make_trainer({"data": 2})


class Feed:
    """Copy batches by position; `before(position)` runs before each batch is handed out."""

    def __init__(self, state=None, before=None):
        self.position = (state or {}).get("position", 0)
        self.before = before

    def __next__(self):
        self.position += 1
        if self.before is not None:
            self.before(self.position)
        return copy_batch(8, seed=self.position)

    def state(self):
        return {"position": self.position}


def train(trainer, model_dir, steps, every=2, keep=3, **feed):
    """The loop under the run lock, taken once per run as runner.train takes it."""
    with run_lock.hold(str(model_dir)):
        return run(trainer, LoopConfig(train_steps=steps, checkpoint_every=every, log_every=1,
                                       keep_checkpoints=keep),
                   str(model_dir), lambda s: Feed(s, **feed), progress=False)


def steps_of(model_dir):
    return Checkpointer(str(model_dir / "checkpoints"), async_save=False).all_steps()


def test_damaged_latest_step_resumes_from_the_previous_one(trainer, tmp_path, capfd):
    train(trainer, tmp_path, 6)
    data = glob.glob(str(tmp_path / "checkpoints/6/state/ocdbt.process_0/d/*"))
    target = max(data, key=os.path.getsize)
    with open(target, "r+b") as f:  # one flipped bit in the middle of the largest array file
        f.seek(os.path.getsize(target) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 1]))
    capfd.readouterr()
    assert train(trainer, tmp_path, 8).step == 8
    err = capfd.readouterr().err
    assert f"checkpoint step 6 skipped: {target}: contents changed" in err
    assert f"resumed from {tmp_path}/checkpoints/4" in err
    assert os.path.isdir(tmp_path / "checkpoints/6.damaged") and steps_of(tmp_path) == [4, 6, 8]

    metadata = tmp_path / "checkpoints/8/state/_METADATA"
    os.truncate(metadata, os.path.getsize(metadata) // 2)
    assert train(trainer, tmp_path, 10).step == 10
    err = capfd.readouterr().err
    assert f"checkpoint step 8 skipped: {metadata}:" in err and "truncated" in err
    assert f"resumed from {tmp_path}/checkpoints/6" in err
    # what eval/infer/convert call: the damaged step is refused with the file named
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    assert ckpt.verify(10) is True
    os.remove(tmp_path / "checkpoints/10/input/process_0-of-1.json")
    with pytest.raises(Exception, match="10/input/process_0-of-1.json: missing"):
        ckpt.verify(10)


def test_nan_state_is_never_saved_and_never_evicts_the_last_good_step(trainer, tmp_path,
                                                                      monkeypatch):
    import jax

    step = trainer.train_step

    def train_step(state, batch):  # from step 3 on the params hold NaN (whatever the cause)
        state, metrics = step(state, batch)
        if int(state.step) >= 3:
            state.params = jax.tree.map(lambda p: p * np.nan, state.params)
        return state, metrics
    monkeypatch.setattr(trainer, "train_step", train_step)
    with pytest.raises(NonFiniteState, match=r"step 4 holds NaN.*last good checkpoint is "
                                             rf"{tmp_path}/checkpoints/2"):
        train(trainer, tmp_path, 10, keep=1)
    ckpt = Checkpointer(str(tmp_path / "checkpoints"), async_save=False)
    assert ckpt.all_steps() == [2] and ckpt.verify(2)
    assert not os.path.exists(tmp_path / LOCK)  # released on the error


def _write_lock(model_dir, **holder):
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK)
    with open(path, "w") as f:
        json.dump({"host": socket.gethostname(), "time": time.time(), **holder}, f)
    return path


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(trainer, tmp_path, capfd):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _write_lock(tmp_path, pid=other.pid)
        with pytest.raises(run_lock.RunLocked, match=f"pid {other.pid} on {socket.gethostname()}"):
            train(trainer, tmp_path, 2)
        assert os.path.exists(path) and not os.path.exists(tmp_path / "checkpoints")
    finally:
        other.kill()
        other.wait()
    # the holder died (kill -9 leaves its lock): the next run takes the lock over
    assert train(trainer, tmp_path, 2).step == 2
    assert f"taking over the stale lock {path} of pid {other.pid}" in capfd.readouterr().err
    assert not os.path.exists(path)
    # another host's lock: stale only once it stopped being refreshed
    _write_lock(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(run_lock.RunLocked, match="on elsewhere"):
        run_lock.acquire(str(tmp_path))
    old = time.time() - run_lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    run_lock.acquire(str(tmp_path))
    with pytest.raises(run_lock.RunLocked, match="this process already holds"):
        run_lock.acquire(str(tmp_path))  # a run takes it once
    run_lock.release(str(tmp_path))
    assert not os.path.exists(path)


def test_failed_save_stops_the_run_at_the_next_step(trainer, tmp_path, monkeypatch, capfd):
    import training.checkpoints.manager as checkpoints

    failed = threading.Event()
    real = checkpoints.write_manifest

    def write_manifest(step_dir, step):  # the disk fills up while step 4 is committed
        if step == 4:
            failed.set()
            raise OSError(28, "No space left on device")
        real(step_dir, step)

    ahead = LoopConfig(train_steps=1).prefetch  # step k runs while batch k + ahead is read

    def before(position):  # let the background save end before step 5 finishes
        if position == 5 + ahead:
            failed.wait(60)
            time.sleep(1.0)
    monkeypatch.setattr(checkpoints, "write_manifest", write_manifest)
    fed = []
    with pytest.raises(CheckpointSaveError, match=rf"step 4 to {tmp_path}/checkpoints/4 failed: "
                       r"OSError: \[Errno 28\] No space left on device\. The last good "
                       rf"checkpoint is {tmp_path}/checkpoints/2\."):
        train(trainer, tmp_path, 20, before=lambda p: (fed.append(p), before(p)))
    assert fed[-1] == 5 + ahead  # stopped after the first step that followed the failure
    assert steps_of(tmp_path) == [2]
    # said at most 3 times (orbax logs it twice, with tracebacks that quote the raise line)
    assert capfd.readouterr().err.count("[Errno 28] No space left on device") <= 3


def _tensorboard_events(model_dir):
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(glob.glob(str(model_dir / "tensorboard/*"))):
        data = open(path, "rb").read()
        at = 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12:at + 12 + n])
            events.append(event)
            at += 12 + n + 4
    return events


def test_resumed_run_logs_each_step_once(trainer, tmp_path):
    train(trainer, tmp_path, 6, every=4)
    # what a kill after logging step 6 and before saving it leaves behind (a torn line too)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints/6")
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    train(trainer, tmp_path, 6, every=4)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    purges = [e.step for e in _tensorboard_events(tmp_path) if e.HasField("session_log")]
    assert 5 in purges  # TensorBoard drops the first run's events from step 5 on


def test_sigterm_before_the_first_step_exits_cleanly(trainer, tmp_path, monkeypatch, capfd):
    outside = []
    previous = signal.signal(signal.SIGTERM, lambda *a: outside.append(1))
    init = trainer.init_state

    def init_state():  # SIGTERM while the state is being initialised
        os.kill(os.getpid(), signal.SIGTERM)
        return init()
    monkeypatch.setattr(trainer, "init_state", init_state)
    try:
        result = train(trainer, tmp_path, 4)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not outside and result.preempted and result.step == 0
    assert "SIGTERM before the first step: nothing was trained yet" in capfd.readouterr().err
    assert steps_of(tmp_path) == []


def test_whole_and_sliced_replica_writes_restore_the_same_state_anywhere(trainer, tmp_path):
    import jax

    state = trainer.init_state()
    want = jax.device_get(state)
    wider = make_trainer({"data": 8}).abstract_state()
    for replica_parallel in (False, True, None):  # whole, sliced, t5pod's (whole on CPU)
        ckpt = Checkpointer(str(tmp_path / str(replica_parallel)), async_save=False,
                            replica_parallel=replica_parallel)
        ckpt.save(1, state)
        for abstract in (trainer.abstract_state(), wider):
            restored, _ = Checkpointer(ckpt.directory, async_save=False).restore(abstract)
            assert restored.params["shared"].sharding == abstract.params["shared"].sharding
            jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), want)
    with pytest.raises(ValueError, match=r"replica_parallel='whole' is invalid: expected "
                       r"one of \(None, True, False\) \(None: t5pod's choice\)"):
        Checkpointer(str(tmp_path / "bad"), replica_parallel="whole")
    assert not (tmp_path / "bad").exists()
