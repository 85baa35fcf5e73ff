"""A tiny T5, a toy copy task and a Trainer factory shared by the training tests."""

from __future__ import annotations

import jax
import numpy as np

import partitioning
from model_zoo import preset
from training.optimizers import OptimizerConfig
from training.trainer import TrainConfig, Trainer
from training.schedules import ScheduleConfig

TINY = preset("t5_1_1_tiny", vocab_size=64, d_model=32, d_ff=64, num_heads=4, d_kv=8,
              dropout_rate=0.0)


def copy_batch(batch: int, length: int = 12, vocab: int = 64, seed: int = 0) -> dict:
    """Targets equal inputs (plus eos): a task a tiny model learns in a few dozen steps."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, vocab, (batch, length)).astype(np.int32)
    enc[::3, length - 3:] = 0  # some padding
    tgt = np.concatenate([enc, np.zeros((batch, 1), np.int32)], axis=1)
    lengths = (enc > 0).sum(1)
    tgt[np.arange(batch), lengths] = 1
    dec = np.zeros_like(tgt)
    dec[:, 1:] = tgt[:, :-1]
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec,
            "decoder_target_tokens": tgt, "decoder_loss_weights": (tgt > 0).astype(np.float32)}


def make_trainer(ici=None, rules="data_parallel", batch_size=8, dtype="float32",
                 optimizer="adafactor", lr=1e-2, eps=1e-8, vocab_size=None, model_cfg=None,
                 weight_decay=0.0, **train_kwargs) -> Trainer:
    ici = ici or {"data": 1}
    n = int(np.prod(list(ici.values())))
    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici=ici), devices=jax.devices()[:n])
    cfg = (model_cfg or TINY).replace(dtype=dtype)
    opt = OptimizerConfig(name=optimizer, eps=eps, weight_decay=weight_decay,
                          schedule=ScheduleConfig(kind="constant", learning_rate=lr,
                                                  warmup_steps=0))
    config = TrainConfig(batch_size=batch_size, rules=rules, optimizer=opt, **train_kwargs)
    return Trainer(cfg, config, mesh)
