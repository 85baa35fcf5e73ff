"""Nothing written before every check passes, and no silent wrong input: refused resumes and
a locked model_dir leave every file byte-identical, bad values fail naming themselves,
TRAIN_STEPS at the checkpointed step says so, eval refuses another vocabulary, infer says
when it truncates, SIGTERM before the loop exits 0 with nothing trained."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types

import pytest

from tools import eval as eval_tool
from tools import infer
from tools import train as train_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# demo_pretrain.gin on the smallest model that still has every part.
FLAGS = ["--gin_file=runs/demo_pretrain.gin", "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, "
         "'targets': 8}", "--gin.BATCH_SIZE=8", "--gin.EVAL_EVERY=0", "--gin.CHECKPOINT_EVERY=2",
         "--gin.run.train.eval_batches=1", "--gin.training.ScheduleConfig.warmup_steps=1",
         "--gin.model_zoo.model.dtype=float32", "--gin.model_zoo.model.d_model=32",
         "--gin.model_zoo.model.d_ff=32", "--gin.model_zoo.model.num_heads=2",
         "--gin.model_zoo.model.d_kv=16", "--gin.model_zoo.model.num_encoder_layers=1",
         "--gin.model_zoo.model.num_decoder_layers=1", "--gin.model_zoo.model.scan_layers=False",
         "--gin.partitioning.mesh.ici={'data': 8}", "--gin.RULES='data_parallel'",
         "--no-progress"]
NO_EVAL = "--gin.run.train.eval_feed=None"


def train(model_dir, *extra):
    return train_tool.main([f"--model_dir={model_dir}", *FLAGS, *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model_dir at step 2 = TRAIN_STEPS, trained without an eval feed."""
    model_dir = tmp_path_factory.mktemp("trained") / "run"
    train(model_dir, "--gin.TRAIN_STEPS=2", NO_EVAL)
    return model_dir


@pytest.fixture
def copy(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


def hashes(model_dir) -> dict:
    out = {}
    for d, _, files in os.walk(model_dir):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, model_dir)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("case,flags,match", [
    ("other_task", ["--gin.MIXTURE_OR_TASK_NAME=demo_span_corruption_byte"],
     r"mixture_or_task_name='demo_span_corruption'.*'demo_span_corruption_byte'"),
    ("other_lengths", ["--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}"],
     r"task_feature_lengths=\{'inputs': 32.*\{'inputs': 16"),
    ("past_the_end", ["--gin.training.ScheduleConfig.kind='constant'", "--gin.TRAIN_STEPS=1"],
     r"TRAIN_STEPS=1 .*below step 2"),
    ("damaged", [], r"checkpoints/2/state/.*CRC-32 mismatch"),
    ("locked", [], r"being written by another run: pid \d+"),
])
def test_refused_run_leaves_every_file_byte_identical(copy, case, flags, match):
    holder = None
    if case == "damaged":
        flip_a_byte(max((p for p in (copy / "checkpoints" / "2" / "state").rglob("*")
                         if p.is_file()), key=lambda p: p.stat().st_size))
    if case == "locked":  # a live run of another process holds the model_dir
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        (copy / "t5pod.lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": holder.pid, "time": time.time()}))
    before = hashes(copy)
    try:
        with pytest.raises(Exception, match=match):
            train(copy, "--gin.TRAIN_STEPS=4", *flags)
    finally:
        if holder is not None:
            holder.kill()
    assert hashes(copy) == before


def test_at_the_checkpointed_step_nothing_trains_and_a_missing_final_eval_runs(copy, capsys):
    metrics = copy / "metrics.jsonl"  # as a kill during the final eval leaves it: none there
    assert not any("eval/loss" in line for line in metrics.read_text().splitlines())
    before = {k: v for k, v in hashes(copy).items() if k.startswith(("checkpoints", "config"))}
    capsys.readouterr()
    summary = train(copy, "--gin.TRAIN_STEPS=2")
    err = capsys.readouterr().err
    assert "already holds step 2 = TRAIN_STEPS: nothing to train" in err
    assert "its final eval/ metrics are missing: evaluating step 2" in err
    assert summary["step"] == 2
    evals = [r for r in map(json.loads, metrics.read_text().splitlines()) if "eval/loss" in r]
    assert [r["step"] for r in evals] == [2] and evals[0]["eval/loss"] == summary["eval/loss"]
    after = {k: v for k, v in hashes(copy).items() if k.startswith(("checkpoints", "config"))}
    assert after == before
    train(copy, "--gin.TRAIN_STEPS=2")  # finished and evaluated: nothing at all happens
    err = capsys.readouterr().err
    assert "nothing to train" in err and "missing" not in err


@pytest.mark.parametrize("flag,match", [
    ("--gin.TRAIN_STEP=5", r"macro TRAIN_STEP is set but nothing reads it.*\['TRAIN_STEPS'\]"),
    ("--gin.TRAIN_STEPS=10.5", r"=10\.5 is invalid: expected an integer.*macro TRAIN_STEPS"),
    ("--gin.BATCH_SIZE='8'", r"batch_size='8' is invalid: expected an integer >= 1, got str"),
    ("--gin.BATCH_SIZE=thirtytwo", r"batch_size='thirtytwo' is invalid: expected an integer"),
    ("--gin.training.LoopConfig.log_every=2.0", r"LoopConfig.log_every=2.0 is invalid"),
])
def test_bad_values_fail_naming_them_before_anything_is_written(tmp_path, flag, match):
    with pytest.raises(ValueError, match=match):
        train(tmp_path / "run", flag)
    assert not (tmp_path / "run").exists()


def test_a_fresh_run_refused_after_start_leaves_no_directory(tmp_path):
    """Refused once model_dir was made (the initial checkpoint is read after the lock)."""
    with pytest.raises(FileNotFoundError, match=r"INITIAL_CHECKPOINT_PATH=\S*nothing_here "
                                                r"does not exist"):
        train(tmp_path / "run", f"--gin.INITIAL_CHECKPOINT_PATH='{tmp_path}/nothing_here'")
    assert not (tmp_path / "run").exists()


def test_eval_refuses_a_task_of_another_vocabulary(trained):
    with pytest.raises(ValueError, match=r"'demo_span_corruption_byte' inputs use ByteVocab.*"
                                         r"model reads and writes SentencePieceVocabulary"):
        eval_tool.main(["--model_dir", str(trained), "--task=demo_span_corruption_byte",
                        "--examples=2"])


def test_eval_and_infer_refuse_a_damaged_step_naming_the_file(copy):
    flip_a_byte(copy / "checkpoints" / "2" / "state" / "_sharding")
    for main, flags in ((infer.main, ["--prompt", "hello"]), (eval_tool.main, ["--examples=2"])):
        with pytest.raises(Exception, match=r"checkpoints/2/state/_sharding: contents changed"):
            main(["--model_dir", str(copy), *flags])


def test_predictor_says_when_it_truncates(capsys):
    from inference.predictor import Predictor

    vocab = types.SimpleNamespace(encode=lambda text: [5] * len(text.split()))
    fake = types.SimpleNamespace(vocab=vocab, max_input_length=4, dp=1)
    rows = Predictor.encode_texts(fake, ["a b c", "a b c d e f"])
    assert rows.tolist() == [[5, 5, 5, 1], [5, 5, 5, 1]]
    err = capsys.readouterr().err
    assert "'a b c d e f'...: 6 tokens + EOS, truncated to max_input_length=4" in err
    assert "'a b c'" not in err


SIGTERM_IN_BUILD = """
import os, signal, sys
import training.trainer
real = training.trainer.Trainer.__init__
def build_then_sigterm(self, *a, **k):
    real(self, *a, **k)
    os.kill(os.getpid(), signal.SIGTERM)
training.trainer.Trainer.__init__ = build_then_sigterm
from tools import train
train.main(sys.argv[1:])
"""


def test_sigterm_before_the_loop_exits_0_with_nothing_trained(tmp_path):
    from tests.test_quiet_start import NOISE

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", SIGTERM_IN_BUILD, f"--model_dir={tmp_path}",
                          *FLAGS, "--gin.TRAIN_STEPS=4"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # once: the CLI's handler replaced the one absl added when orbax was imported first
    assert out.stderr.count("SIGTERM before training started: nothing was trained yet") == 1
    assert not any(n in out.stderr for n in NOISE), out.stderr  # TensorFlow's start-up lines
    assert json.loads(out.stdout.splitlines()[-1])["preempted"] is True
    assert os.listdir(tmp_path) == []
