"""One train step on synthetic batches for a preset: what tools.bench times and
tools.hlo_audit reads (a library for those CLIs; no command line of its own)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

import partitioning
from model_zoo import preset
from model_zoo.config import DISPATCHES
from partitioning.mesh_spec import devices_for, mesh_config
from training.optimizers import OptimizerConfig
from training.step import LossConfig
from training.trainer import TrainConfig, Trainer


def synthetic_batch(batch: int, inputs: int, targets: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tgt = rng.integers(2, vocab, (batch, targets)).astype(np.int32)
    dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
    return {"encoder_input_tokens": rng.integers(2, vocab, (batch, inputs)).astype(np.int32),
            "decoder_input_tokens": dec, "decoder_target_tokens": tgt,
            "decoder_loss_weights": np.ones((batch, targets), np.float32)}


def setup(args, preset_name: str, moe_dispatch: str | None = None):
    """(model config, Trainer, synthetic numpy batch) for one preset under the step flags;
    an MoE preset takes `moe_dispatch` (None: its own) and `--moe_experts`."""
    vocab = getattr(args, "vocab_size", None)
    cfg = preset(preset_name, dtype=args.dtype, remat_policy=args.remat,
                 attention_impl=args.attention, dropout_rate=0.0,
                 **({"vocab_size": vocab} if vocab else {}))
    if cfg.moe is not None:  # steps run without dropout: route with the train capacity factor
        changes = {"eval_capacity_factor": cfg.moe.train_capacity_factor}
        if moe_dispatch:
            changes["dispatch"] = moe_dispatch
        if getattr(args, "moe_experts", None):
            changes["num_experts"] = args.moe_experts
        cfg = cfg.replace(moe=dataclasses.replace(cfg.moe, **changes))
    mesh_cfg = mesh_config(args.mesh)
    mesh = partitioning.make_mesh(mesh_cfg, devices=devices_for(mesh_cfg))
    train = TrainConfig(batch_size=args.batch, microbatches=args.microbatches, rules=args.rules,
                        optimizer=OptimizerConfig(name=args.optimizer), deterministic=True,
                        max_replicated_fraction=1.0,
                        loss=LossConfig(vocab_chunk=args.vocab_chunk))
    trainer = Trainer(cfg, train, mesh)
    return cfg, trainer, synthetic_batch(args.batch, args.inputs, args.targets, cfg.vocab_size)


def add_step_flags(p: argparse.ArgumentParser) -> None:
    """The flags that fix one train step: shapes, precision, mesh, remat, attention, loss."""
    p.add_argument("--preset", action="append", help="model preset (repeatable)")
    p.add_argument("--vocab_size", type=int, help="override the preset's (e.g. 2176: the demo "
                   "model's, gin/models/t5_1_1/tiny.gin)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--inputs", type=int, default=64)
    p.add_argument("--targets", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--mesh", default="data=-1", help="ici degrees, e.g. data=2,tensor=4")
    p.add_argument("--rules", default="data_parallel")
    p.add_argument("--remat", default="none")
    p.add_argument("--attention", default="einsum", choices=["einsum", "xla", "cudnn"])
    p.add_argument("--optimizer", default="adafactor", choices=["adafactor", "adamw"])
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--vocab_chunk", type=int, default=0,
                   help="fuse output layer + loss over this many target positions (0: off)")
    p.add_argument("--moe_dispatch", action="append", choices=DISPATCHES,
                   help="MoE presets: dispatch (repeatable: one row each; default the preset's)")
    p.add_argument("--moe_experts", type=int, help="MoE presets: this many experts instead")


