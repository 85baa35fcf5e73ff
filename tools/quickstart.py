"""Quickstart: train a tiny T5 on the 8-device CPU mesh (data x fsdp x tensor = 2x2x2).

The embedded default task is sequence copying on synthetic ids, so it runs offline on a
fresh machine; it prints the loss every 10 steps and fails if the model did not learn.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import partitioning
from model_zoo import EncoderDecoder, preset
from training.optimizers import OptimizerConfig
from training.partitioned import TrainConfig, Trainer
from training.schedules import ScheduleConfig


def copy_task(batch: int, length: int, vocab: int, rng: np.random.Generator) -> dict:
    enc = rng.integers(2, vocab, (batch, length)).astype(np.int32)
    tgt = np.concatenate([enc, np.ones((batch, 1), np.int32)], axis=1)  # copy, then eos
    dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": np.ones_like(tgt, np.float32)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)

    cfg = preset("t5_1_1_tiny", vocab_size=64, dtype=args.dtype)
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"data": 2, "fsdp": 2,
                                                               "tensor": 2}))
    train = TrainConfig(batch_size=32, rules="fsdp_tensor", optimizer=OptimizerConfig(
        name="adamw", schedule=ScheduleConfig(kind="constant", learning_rate=5e-3,
                                              warmup_steps=20)))
    trainer = Trainer(lambda r: EncoderDecoder(cfg, rngs=r), cfg.dtype, train, mesh)
    print(f"mesh {partitioning.mesh_shape(mesh)}, rules {train.rules}, dtype {cfg.dtype}, "
          f"{sum(x.size for x in jax.tree.leaves(trainer.model_def.abstract_params())):,} params")
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    first = last = None
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        state, metrics = trainer.train_step(state, copy_task(32, 12, cfg.vocab_size, rng))
        if step == 1 or step % 10 == 0:
            last = float(metrics["loss"])
            first = first or last
            print(f"step {step:4d}  loss {last:.3f}  accuracy {float(metrics['accuracy']):.3f}  "
                  f"loss_scale {float(metrics['loss_scale']):g}  "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
    if not last < first - 1.0:
        raise SystemExit(f"quickstart did not learn: loss {first:.3f} -> {last:.3f}")
    print(f"done: loss {first:.3f} -> {last:.3f}")


if __name__ == "__main__":
    main()
