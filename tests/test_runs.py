"""End-to-end runs: gin + tools.train, exact resume after SIGKILL, SIGTERM, restore anywhere."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.train_helpers import copy_batch, make_trainer
from training.checkpoints.manager import Checkpointer
from training.metrics_log import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--gin_file=runs/demo_pretrain.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, "
         "'targets': 16}", "--gin.BATCH_SIZE=8", "--gin.EVAL_EVERY=0",
         "--gin.run.train.eval_feed=None",
         "--gin.training.LoopConfig.log_every=1", "--gin.training.ScheduleConfig.warmup_steps=2",
         "--gin.model_zoo.model.dtype=float32"]


def train_cmd(model_dir, steps, every, *extra):
    return [sys.executable, "-m", "tools.train", f"--model_dir={model_dir}", *SMALL,
            f"--gin.TRAIN_STEPS={steps}", f"--gin.CHECKPOINT_EVERY={every}", "--no-progress",
            *extra]


def env():
    e = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,  # XLA_FLAGS: conftest's
             TF_CPP_MIN_LOG_LEVEL="3")
    return e


def run(cmd, timeout=600):
    out = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def final_state(model_dir):
    ckpt = Checkpointer(os.path.join(model_dir, "checkpoints"), async_save=False)
    step = ckpt.latest_step()
    state = ckpt.manager.restore(step)  # as saved, onto the default device
    return step, jax.tree.map(np.asarray, state["state"])


def last_loss(model_dir):
    return [x for x in read_records(model_dir) if "loss" in x][-1]


def wait_for(path, proc, timeout=300):
    start = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.2)


def test_sigkill_and_restart_equals_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run(train_cmd(straight, 24, 8))
    proc = subprocess.Popen(train_cmd(killed, 24, 8), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(killed / "checkpoints" / "16", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = run(train_cmd(killed, 24, 8))
    assert '"resumed": true' in out.stdout
    step_a, a = final_state(straight)
    step_b, b = final_state(killed)
    assert step_a == step_b == 24
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
    jax.tree.map(np.testing.assert_array_equal, a["opt_state"], b["opt_state"])
    assert last_loss(straight)["loss"] == last_loss(killed)["loss"]


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(train_cmd(tmp_path, 100000, 1000), cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / "metrics.jsonl", proc)
    while len(open(tmp_path / "metrics.jsonl").readlines()) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert '"preempted": true' in out
    saved = int(err.split("SIGTERM: saved step ")[1].split()[0])
    assert 3 <= saved < 1000
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == saved


def test_cut_off_checkpoint_is_never_restored(tmp_path):
    trainer = make_trainer({"data": 2})
    state = trainer.init_state()
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    state, _ = trainer.train_step(state, copy_batch(8))
    ckpt.save(1, state, {"position": 1})
    ckpt.wait()
    # What a kill mid-write leaves: orbax's temporary directory for step 2, never renamed.
    torn = tmp_path / "2.orbax-checkpoint-tmp-1234"
    (torn / "state").mkdir(parents=True)
    (torn / "state" / "garbage").write_bytes(b"\x00" * 100)
    fresh = Checkpointer(str(tmp_path), async_save=False)
    assert fresh.latest_step() == 1
    abstract = trainer.abstract_state()
    restored, input_state = fresh.restore(abstract)
    assert input_state == {"position": 1} and int(restored.step) == 1


def test_checkpoint_from_2x4_restores_on_8x1_and_1_device(tmp_path):
    source = make_trainer({"data": 2, "tensor": 4}, "tensor", optimizer="adamw")
    state, _ = source.train_step(source.init_state(), copy_batch(8))
    want = jax.device_get(state)
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(1, state)
    ckpt.wait()
    for ici, rules in (({"data": 8}, "data_parallel"), ({"data": 1}, "data_parallel")):
        target = make_trainer(ici, rules, optimizer="adamw")
        abstract = target.abstract_state()
        restored, _ = ckpt.restore(abstract)
        assert len(restored.params["shared"].sharding.device_set) == np.prod(list(ici.values()))
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), want)
        target.train_step(restored, copy_batch(8))  # and it trains on


def test_model_dir_of_another_model_is_refused_untouched(tmp_path):
    from tools import train as train_tool

    flags = [f"--model_dir={tmp_path}", *SMALL, "--gin.CHECKPOINT_EVERY=2", "--no-progress"]
    train_tool.main(flags + ["--gin.TRAIN_STEPS=4"])
    before = {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(tmp_path)
              for p in fs}
    with pytest.raises(ValueError, match="holds checkpoints of a different model.*d_model"):
        train_tool.main(flags + ["--gin.TRAIN_STEPS=6", "--gin.model_zoo.model.d_model=96"])
    after = {p: os.path.getmtime(os.path.join(d, p)) for d, _, fs in os.walk(tmp_path)
             for p in fs}
    assert {k: v for k, v in after.items() if "checkpoints" in k or k.isdigit()} == {
        k: v for k, v in before.items() if "checkpoints" in k or k.isdigit()}
    assert Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [2, 4]


def test_full_disk_fails_early_and_keeps_checkpoints(tmp_path):
    from tools import train as train_tool

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        model_dir = disk / "run"
        flags = [f"--model_dir={model_dir}", *SMALL, "--gin.CHECKPOINT_EVERY=2", "--no-progress"]
        train_tool.main(flags + ["--gin.TRAIN_STEPS=4"])
        before = sorted(os.listdir(model_dir / "checkpoints"))
        with open(disk / "filler", "wb", buffering=0) as f:  # to the last byte, none buffered
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        with pytest.raises(OSError, match="No space left on device"):
            train_tool.main(flags + ["--gin.TRAIN_STEPS=8"])
        assert sorted(os.listdir(model_dir / "checkpoints")) == before
        restored = Checkpointer(str(model_dir / "checkpoints"), async_save=False)
        assert restored.latest_step() == 4
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_sigterm_during_a_checkpoint_step_exits_cleanly(tmp_path):
    from training.loop import LoopConfig
    from training.loop import run as run_loop

    trainer = make_trainer({"data": 2})

    prefetch = 2

    class Feed:  # sends SIGTERM to this process while step 4 (a checkpoint step) runs,
        def __init__(self):  # when the loop reads batch 4 + prefetch
            self.position = 0

        def __next__(self):
            self.position += 1
            if self.position == 4 + prefetch:
                os.kill(os.getpid(), signal.SIGTERM)
            return copy_batch(8)

        def state(self):
            return {"position": self.position}

    result = run_loop(trainer, LoopConfig(train_steps=10, checkpoint_every=2, log_every=1,
                                          prefetch=prefetch),
                      str(tmp_path), lambda _: Feed(), progress=False)
    assert result.preempted and result.step == 4
    assert Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [2, 4]
