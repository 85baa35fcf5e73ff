"""Train a gin-configured run.

    python -m tools.train --gin_file=runs/demo_pretrain.gin --model_dir=/tmp/run \
        [--gin_file=mesh/cpu8.gin] [--gin.TRAIN_STEPS=500] [--gin.MIXTURE_OR_TASK_NAME=...]

Resumes from the latest complete checkpoint in --model_dir; SIGTERM saves and exits 0.
Outputs: DIR/checkpoints, DIR/metrics.jsonl, DIR/tensorboard, DIR/config.gin.

Multi-host: run the same command on every host. Cloud TPU VMs and SLURM steps are detected;
elsewhere add --coordinator_address=HOST0:PORT --num_processes=N --process_id=I. Host 0
alone writes metrics and config files; all hosts write the (shared) checkpoint directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys

import gin
import jax
import numpy as np

REQUIRED_MACROS = ["MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "BATCH_SIZE", "TRAIN_STEPS",
                   "INITIAL_CHECKPOINT_PATH"]


def identity_of(model_cfg) -> dict:
    """The fields a checkpoint's params depend on (not dtype, dropout, remat...)."""
    keep = ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv", "num_encoder_layers",
            "num_decoder_layers", "feed_forward_proj", "relative_attention_num_buckets",
            "tie_word_embeddings")
    out = {k: getattr(model_cfg, k) for k in keep}
    u = model_cfg.universal
    out["universal"] = None if u is None else {"act": u.act}  # ACT adds halting params
    b = model_cfg.byte_encoder
    if b is not None:  # absent for other models, so their identities stay as they were
        out["byte_encoder"] = {k: v for k, v in dataclasses.asdict(b).items() if k != "frozen"}
    m = model_cfg.moe
    out["moe"] = None if m is None else {k: getattr(m, k) for k in (
        "num_experts", "encoder_sparse_step", "decoder_sparse_step")}
    return out


def check_model_dir(model_dir: str) -> None:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".t5pod_write_test.{jax.process_index()}")
    try:
        with open(probe, "w") as f:
            f.write("x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(f"model_dir {model_dir} is not writable ({e.strerror}); nothing was "
                      "started and no checkpoint touched") from None
    finally:
        if os.path.exists(probe):
            os.remove(probe)


def padded(batches, batch_size: int):
    """Pad a finite feed's last, short batch with zero rows (zero loss weight)."""
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        if n < batch_size:
            batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
                     for k, v in batch.items()}
        yield batch


def load_initial_params(path: str, model_def, shardings, identity: dict | None = None):
    """Params from an HF T5 directory or a t5pod checkpoint directory (fresh optimizer).

    `identity` (see identity_of) must match the checkpoint's model, else a clear error.
    """
    from model_zoo import hf
    from training.checkpoints import Checkpointer, abstract_with_shardings

    if not os.path.exists(path):
        raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH={path} does not exist")
    if os.path.isfile(os.path.join(path, "config.json")):
        from model_zoo.model_def import split_params

        if identity is not None:
            theirs = identity_of(hf.read_config(path))
            diff = {k: (theirs[k], identity[k]) for k in identity if theirs.get(k) != identity[k]}
            if diff:
                raise ValueError(f"INITIAL_CHECKPOINT_PATH={path} holds a different model than "
                                 f"this run (field: (checkpoint, run) = {diff})")
        _, params = split_params(hf.load(path))
        return jax.device_put(params, shardings)
    ckpt_dir = path if os.path.basename(path.rstrip("/")) == "checkpoints" or not os.path.isdir(
        os.path.join(path, "checkpoints")) else os.path.join(path, "checkpoints")
    ckpt = Checkpointer(ckpt_dir, async_save=False, identity=identity)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"INITIAL_CHECKPOINT_PATH={path} is neither an HF directory "
                                "(config.json) nor a t5pod model_dir with complete checkpoints")
    abstract = abstract_with_shardings(model_def.abstract_params(), shardings)
    return ckpt.restore_params(abstract)


def build(run, model_dir: str):
    """Mesh, trainer, feeds and the loop's arguments for a parsed TrainRun."""
    import partitioning
    from model_zoo import EncoderDecoder
    from tasks.feeding import FeedConfig, HostFeed, lookup
    from training.trainer import Trainer

    task = lookup(run.feed.mixture_or_task_name)
    vocab = task.output_features["targets"].vocabulary.vocab_size
    if vocab > run.model.vocab_size:
        raise ValueError(f"task {run.feed.mixture_or_task_name!r} has {vocab} ids but the "
                         f"model's vocab_size is {run.model.vocab_size}; use a model with "
                         f"vocab_size >= {vocab}")
    if run.train.batch_size != run.feed.batch_size:
        raise ValueError(f"training.TrainConfig.batch_size={run.train.batch_size} differs from "
                         f"tasks.FeedConfig.batch_size={run.feed.batch_size}; bind both to "
                         "%BATCH_SIZE")
    mesh = partitioning.make_mesh(run.mesh)
    cfg = run.model
    trainer = Trainer(lambda r: EncoderDecoder(cfg, rngs=r), cfg.dtype, run.train, mesh)

    def make_feed(state):
        if state:
            return HostFeed.restore(run.feed, state)
        return HostFeed(run.feed)

    make_eval = None
    if run.eval_feed is not None:
        eval_cfg: FeedConfig = run.eval_feed

        def make_eval():
            feed = HostFeed(eval_cfg)
            return padded(itertools.islice(feed, run.eval_batches),
                          eval_cfg.batch_size // feed.process_count)

    return trainer, make_feed, make_eval


def add_distributed_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-host (see partitioning/distributed.py)")
    g.add_argument("--distributed", default="auto",
                   choices=["auto", "explicit", "cluster", "single"],
                   help="auto: explicit if --coordinator_address, cluster on Cloud TPU/SLURM, "
                        "else single process")
    g.add_argument("--coordinator_address", help="HOST:PORT of process 0")
    g.add_argument("--num_processes", type=int)
    g.add_argument("--process_id", type=int)
    g.add_argument("--local_device_ids", help="comma-separated local device ids (default all)")
    g.add_argument("--initialization_timeout", type=int, default=300, help="seconds")
    g.add_argument("--heartbeat_timeout", type=int, default=100,
                   help="seconds before a silent process counts as dead and the rest stop")


def start_distributed(p: argparse.ArgumentParser, args) -> str:
    """Join the multi-host job (or not) before anything touches a device."""
    from partitioning.distributed import DistributedConfig, initialize

    try:
        ids = args.local_device_ids
        config = DistributedConfig(
            mode=args.distributed, coordinator_address=args.coordinator_address,
            num_processes=args.num_processes, process_id=args.process_id,
            local_device_ids=None if ids is None else tuple(int(i) for i in ids.split(",")),
            initialization_timeout=args.initialization_timeout,
            heartbeat_timeout=args.heartbeat_timeout)
    except ValueError as e:
        p.error(str(e))
    return initialize(config)


def main(argv=None) -> dict:
    from runner import configurables, gin_flags

    argv = sys.argv[1:] if argv is None else argv
    files, bindings, rest = gin_flags.split_gin_args(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    add_distributed_flags(p)
    args = p.parse_args(rest)
    if not files:
        p.error("give at least one --gin_file")
    start_distributed(p, args)
    configurables.register_tasks_configurables()
    gin_flags.parse(files, bindings)
    gin_flags.require_macros(REQUIRED_MACROS)
    run = configurables.train()
    check_model_dir(args.model_dir)

    from training.loop import run as run_loop

    trainer, make_feed, make_eval = build(run, args.model_dir)
    initial = None
    if run.model.byte_encoder is not None:
        from runner.initial_params import hybrid_initial_params

        initial = hybrid_initial_params(run, trainer)
    elif run.initial_checkpoint_path:
        initial = load_initial_params(run.initial_checkpoint_path, trainer.model_def,
                                      trainer.state_shardings.params, identity_of(run.model))
    from runner.trained_model import write_model_json
    from training.checkpoints import Checkpointer

    # Refuse a model_dir of another model before writing anything into it.
    Checkpointer(os.path.join(args.model_dir, "checkpoints"), async_save=False,
                 identity=identity_of(run.model)).check_identity()
    primary = jax.process_index() == 0
    if primary:
        with open(os.path.join(args.model_dir, "config.gin"), "w") as f:
            f.write(gin.config_str())
        write_model_json(args.model_dir, run.model, run.feed.mixture_or_task_name)
    result = run_loop(trainer, run.loop, args.model_dir, make_feed, make_eval,
                      identity=identity_of(run.model), initial_params=initial,
                      progress=args.progress)
    if primary:
        with open(os.path.join(args.model_dir, "operative_config.gin"), "w") as f:
            f.write(gin.operative_config_str())
    summary = {"model_dir": os.path.abspath(args.model_dir), "step": result["step"],
               "preempted": result["preempted"], "resumed": result["resumed"],
               **{k: v for k, v in result.get("metrics", {}).items() if k in ("loss", "accuracy")}}
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
