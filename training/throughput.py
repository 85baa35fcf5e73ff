"""Training throughput over each log interval: tokens/s, model TFLOP/s per device and MFU.

Only train steps are timed. The clock runs from one log step to the next, where the loop has
read the step's metrics (its one device sync), and stops while the loop saves a checkpoint
or evaluates (`pause` first waits for the step in flight, as the save or eval would). In
between nothing blocks: each step leaves its token count on the devices and the log step
reads them all at once.

- `tokens_per_second`: non-padding (id > 0) encoder inputs, byte-encoder inputs and decoder
  targets of the global batches (`nonpadding_tokens`, counted inside the train step);
- `tflops_per_device`: model_zoo/flops.py's training FLOPs (3x the forward pass, at the
  batches' padded shapes), per second, per device, / 1e12;
- `mfu`: tflops_per_device / the device's peak (`peak_tflops`), absent where that is unknown.
The first interval includes compiling the step.
"""

from __future__ import annotations

import logging
import time

import jax
import jax.numpy as jnp

from model_zoo.config import ModelConfig
from model_zoo.flops import train_flops_per_step

logger = logging.getLogger(__name__)

TOKEN_FEATURES = ("encoder_input_tokens", "byte_encoder_input_tokens", "decoder_target_tokens")

# Dense (no sparsity) peak TFLOP/s per chip: (bfloat16 and float16, float32 or None).
# float32 on these GPUs is the TF32 tensor-core peak, what XLA's default matmul precision
# uses; TPUs run float32 matmuls at default precision as one bf16 pass, so the bf16 peak.
# GPUs match by substring of device_kind (first match wins), TPUs by the exact kind.
GPU_PEAKS = (("h100 pcie", 756.0, 378.0), ("h100", 989.0, 495.0), ("h200", 989.0, 495.0),
             ("a100", 312.0, 156.0), ("l4", 121.0, 60.0))
TPU_PEAKS = {"tpu v4": 275.0, "tpu v5 lite": 197.0, "tpu v5e": 197.0, "tpu v5": 459.0,
             "tpu v5p": 459.0, "tpu v6 lite": 918.0, "tpu v6e": 918.0}


def peak_tflops(device_kind: str, compute_dtype: str = "bfloat16") -> float | None:
    """The chip's dense peak TFLOP/s for `compute_dtype`: its float32 peak where the table
    has one, else the bf16 one (also fp16's); None for a chip not in the table (CPUs)."""
    kind = device_kind.lower()
    if kind in TPU_PEAKS:
        return TPU_PEAKS[kind]
    for name, half, single in GPU_PEAKS:
        if name in kind:
            return single if compute_dtype == "float32" and single is not None else half
    return None


def nonpadding_tokens(batch: dict) -> jax.Array:
    """Tokens with id > 0 in the batch's input and target features (inside a jitted step)."""
    return sum(jnp.sum(batch[k] > 0, dtype=jnp.int32) for k in TOKEN_FEATURES if k in batch)


_told: set = set()


class Throughput:
    """Call `step(batch, metrics)` after each train step, `pause(metrics)` / `resume()` around
    work that is not training, and `log()` at a log step once its metrics were read."""

    def __init__(self, model: ModelConfig, devices: int, peak: float | None):
        self.model, self.devices, self.peak = model, devices, peak
        self._flops_at: dict = {}
        self.start()

    @classmethod
    def for_trainer(cls, trainer, peak_override: float | None = None, primary: bool = True):
        """Peak from `peak_override` (LoopConfig.peak_tflops_per_device) or the table; on a
        device the table lacks, a message (once per device kind) says how to get MFU."""
        device = trainer.mesh.devices.flat[0]
        peak = peak_override or peak_tflops(device.device_kind, trainer.compute_dtype)
        if peak is None and primary and device.device_kind not in _told:
            _told.add(device.device_kind)
            logger.info(f"MFU is not logged: no peak FLOP/s known for device kind "
                        f"{device.device_kind!r}; set LoopConfig.peak_tflops_per_device (gin: "
                        "training.LoopConfig.peak_tflops_per_device = TFLOP/s per device)")
        return cls(trainer.model, trainer.mesh.devices.size, peak)

    def start(self) -> None:
        self._since, self._seconds = time.perf_counter(), 0.0
        self._tokens, self._flops, self._steps = [], 0.0, 0

    def step(self, batch: dict, metrics: dict) -> None:
        self._tokens.append(metrics["nonpadding_tokens"])  # stays on the device until log()
        self._flops += self._step_flops(tuple((k, v.shape) for k, v in batch.items()))
        self._steps += 1

    def _step_flops(self, shapes: tuple) -> float:
        if shapes not in self._flops_at:
            shape = dict(shapes)
            lengths = {k: shape[k][1] if k in shape else 0 for k in TOKEN_FEATURES}
            batch = next(v[0] for k, v in shapes if k in TOKEN_FEATURES)
            self._flops_at[shapes] = train_flops_per_step(
                self.model, batch, lengths["encoder_input_tokens"],
                lengths["decoder_target_tokens"],
                byte_input_len=lengths["byte_encoder_input_tokens"])
        return self._flops_at[shapes]

    def pause(self, metrics: dict) -> None:
        """Stop the clock once the step that produced `metrics` has finished."""
        if self._since is not None:
            jax.block_until_ready(metrics)
            self._seconds += time.perf_counter() - self._since
            self._since = None

    def resume(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def log(self) -> dict:
        """The interval's figures (and seconds_per_step); the next interval starts now."""
        now = time.perf_counter()
        seconds = max(self._seconds + (now - self._since if self._since is not None else 0.0),
                      1e-12)
        tokens = sum(int(t) for t in jax.device_get(self._tokens))
        tflops = self._flops / seconds / self.devices / 1e12
        out = {"seconds_per_step": seconds / max(self._steps, 1),
               "tokens_per_second": tokens / seconds, "tflops_per_device": tflops}
        if self.peak is not None:
            out["mfu"] = tflops / self.peak
        self.start()
        return out
