"""A run's size: parameters (every expert counted) and training FLOPs per step
(model_zoo/flops.py: top-k experts + router, every Universal recurrence step)."""

from __future__ import annotations

import math


def param_count(model_cfg) -> int:
    import jax

    from model_zoo import EncoderDecoder
    from model_zoo.model_def import model_def

    abstract = model_def(lambda r: EncoderDecoder(model_cfg, rngs=r)).abstract_params()
    return sum(math.prod(x.shape) for x in jax.tree.leaves(abstract))


def train_flops_per_step(run) -> float:
    from model_zoo.flops import train_flops_per_step as flops

    lengths = run.lengths
    return flops(run.model, run.trainer.batch_size, lengths["inputs"], lengths["targets"],
                 byte_input_len=lengths.get("byte_inputs", 0))
