"""The loop logs tokens/s, TFLOP/s per device and MFU at every log step, consistent with the
tokens it was fed and model_zoo/flops.py's count written out here (speed is never asserted)."""


import numpy as np
import pytest

from model_zoo.flops import forward_flops_per_example
from tests.train_helpers import TINY, copy_batch, make_trainer
from training.loop import LoopConfig, run
from training.metrics_log import read_records
from training.throughput import peak_tflops

STEPS, LOG_EVERY, BATCH = 5, 2, 8


class Feed:
    def __init__(self, state):
        self.position = (state or {}).get("position", 0)

    def __next__(self):
        self.position += 1
        return copy_batch(BATCH, seed=self.position)

    def state(self):
        return {"position": self.position}


@pytest.fixture(scope="module")
def trainer():
    return make_trainer({"data": 2})


def train(trainer, model_dir, **loop):
    config = LoopConfig(train_steps=STEPS, log_every=LOG_EVERY, checkpoint_every=3,
                        async_checkpoints=False, **loop)
    run(trainer, config, str(model_dir), Feed, progress=False)
    return read_records(model_dir)


def interval_tokens(first, last):
    """Non-padding input + target tokens of the batches of steps first..last."""
    return sum(int((b["encoder_input_tokens"] > 0).sum() + (b["decoder_target_tokens"] > 0).sum())
               for b in (copy_batch(BATCH, seed=s) for s in range(first, last + 1)))


def test_every_log_step_has_consistent_throughput(trainer, tmp_path):
    records = train(trainer, tmp_path, peak_tflops_per_device=0.5)
    assert [r["step"] for r in records] == [2, 4, 5]
    enc, tgt = copy_batch(BATCH)["encoder_input_tokens"], copy_batch(BATCH)["decoder_target_tokens"]
    # training FLOPs = 3 x forward, for the whole global batch (flops.py's per-example count)
    step_flops = 3 * BATCH * forward_flops_per_example(TINY, enc.shape[1], tgt.shape[1])
    previous = 0
    for r in records:
        steps = r["step"] - previous
        seconds = r["seconds_per_step"] * steps
        assert r["tokens_per_second"] * seconds == pytest.approx(
            interval_tokens(previous + 1, r["step"]), rel=1e-9)
        assert r["tflops_per_device"] == pytest.approx(
            step_flops * steps / seconds / 2 / 1e12, rel=1e-9)  # 2 devices in the mesh
        assert r["mfu"] == pytest.approx(r["tflops_per_device"] / 0.5, rel=1e-12)
        previous = r["step"]


def test_no_mfu_on_an_unknown_device_without_a_peak(trainer, tmp_path, capsys):
    import training.throughput

    training.throughput._told.clear()
    records = train(trainer, tmp_path)
    assert all("tokens_per_second" in r and "tflops_per_device" in r for r in records)
    assert not any("mfu" in r for r in records)  # absent, not 0
    err = capsys.readouterr().err
    assert err.count("MFU is not logged") == 1 and "LoopConfig.peak_tflops_per_device" in err


@pytest.mark.parametrize("bad", [0, -1.0, "989", True, float("nan")])
def test_peak_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match=r"LoopConfig.peak_tflops_per_device=.* is invalid"):
        LoopConfig(train_steps=1, peak_tflops_per_device=bad)


def test_peak_table_by_device_kind_and_dtype():
    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "float16") == 312.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "float32") == 156.0  # TF32
    assert peak_tflops("TPU v5 lite") == 197.0 and peak_tflops("TPU v5") == 459.0
    assert peak_tflops("TPU v4", "float32") == 275.0  # no fp32 entry: the bf16 peak
    assert peak_tflops("TPU v4 lite") is None and peak_tflops("cpu") is None
    assert np.isfinite(peak_tflops("TPU v6 lite"))
