"""One process of a real 2-process CPU run (4 devices each, gloo), driven by test_multihost.

    python -m tests.multihost_worker train PROCESS_ID PORT MODEL_DIR REFERENCE_DIR OUT_JSON
    python -m tests.multihost_worker collectives PROCESS_ID PORT
    python -m tests.multihost_worker infer PROCESS_ID PORT MODEL_DIR BATCH_NPZ OUT_JSON
    python -m tests.multihost_worker files PROCESS_ID PORT CORPUS_GLOB CACHE_DIR OUT_JSON

`train`: first a run in the default multi-process mode (the coordination service's
preemption sync point, batches prefetched, nothing logged or saved before the end): host 1
gets SIGTERM while reading batch 3, every cross-host agreement collective is counted (there
must be none), and both hosts must stop at the same step. Then the tiny T5 trained by
`training.loop.run` on the global mesh below, fed by the real per-host `HostFeed` (this
host's seqio shard), agreeing by collective on every (log) step; host 1 gets SIGTERM while
step PREEMPT_AT runs (it reads batch PREEMPT_AT + PREFETCH then), so both hosts must agree
to save that step. Then the checkpoint a 1-process run wrote in REFERENCE_DIR is restored on
this 2-process mesh and compared with this run's state. `collectives`: an endless loop of
cross-process sums, for the failure test to kill. `infer`: tools.infer, then greedy and beam
predictions and scores of a t5pod model_dir by `inference.predictor.Predictor` on a mesh of data
across the 2 hosts x fsdp x tensor inside each (test_sharded_inference compares them with
1 process). `files`: the corpus files this host's live feed opens, and the cache files its
cached feed reads (test_multihost_files checks they are disjoint and cover all).
"""

from __future__ import annotations

import os
import sys

LOCAL_DEVICES = 4
PREEMPT_AT, CHECKPOINT_EVERY, PREFETCH = 3, 2, 2
STEPS = PREEMPT_AT + PREFETCH  # so batch PREEMPT_AT + PREFETCH is read
SERVICE_STEPS = 100  # the service-mode run stops long before (about 1 s after SIGTERM)
FEED = dict(mixture_or_task_name="demo_span_corruption_byte",
            task_feature_lengths={"inputs": 32, "targets": 8}, batch_size=8, seed=0)


def make_trainer(devices=None):
    """data across hosts (DCN) x fsdp x tensor inside each; the same on 1 process x 8."""
    import partitioning
    from tests.train_helpers import TINY
    from training.optimizers import OptimizerConfig
    from training.trainer import TrainConfig, Trainer
    from training.schedules import ScheduleConfig

    mesh = partitioning.make_mesh(partitioning.MeshConfig(ici={"fsdp": 2, "tensor": 2},
                                                          dcn={"data": 2}), devices)
    cfg = TINY.replace(vocab_size=384)
    opt = OptimizerConfig(name="adamw", schedule=ScheduleConfig(
        kind="constant", learning_rate=1e-2, warmup_steps=0))
    config = TrainConfig(batch_size=FEED["batch_size"], rules="fsdp_tensor", optimizer=opt)
    return Trainer(cfg, config, mesh)


class PreemptedFeed:
    """A HostFeed that sends this process SIGTERM while it fetches batch `at` (1-based)."""

    def __init__(self, feed, at: int | None, pause: float = 0.0):
        self.feed, self.at, self.first, self.pause = feed, at, None, pause

    def __next__(self):
        if self.at is not None and self.feed.position + 1 == self.at:
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        if self.pause and self.feed.position + 1 >= 3:  # steps last while the service agrees
            import time

            time.sleep(self.pause)
        batch = next(self.feed)
        if self.first is None:
            self.first = batch
        return batch

    def state(self):
        return self.feed.state()


def max_abs_diff(a, b) -> float:
    """Largest |a - b| over two identically sharded trees, computed on the global mesh."""
    import jax
    import jax.numpy as jnp

    def diff(a, b):  # one program: each host must run the same collectives in one order
        leaves = jax.tree.map(lambda x, y: jnp.max(jnp.abs(x.astype(jnp.float32) - y)), a, b)
        return jnp.max(jnp.stack(jax.tree.leaves(leaves)))

    return float(jax.jit(diff)(a, b))


def join(process_id: int, port: str, heartbeat: int) -> None:
    from partitioning.distributed import DistributedConfig, initialize

    mode = initialize(DistributedConfig(coordinator_address=f"localhost:{port}",
                                        num_processes=2, process_id=process_id,
                                        initialization_timeout=60, heartbeat_timeout=heartbeat))
    assert mode == "explicit", mode


def _phase(name):
    import time

    print(f"[{time.process_time():.1f}s cpu {time.perf_counter():.1f}s] {name}", file=sys.stderr)


def train(process_id: int, port: str, model_dir: str, reference_dir: str, out: str) -> None:
    _phase("start")
    join(process_id, port, heartbeat=30)
    _phase("joined")
    import json

    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    import partitioning
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed
    from training.checkpoints.manager import Checkpointer
    from training.loop import LoopConfig, run

    import training.loop

    _phase("imported")
    trainer = make_trainer()
    # First, before any Python SIGTERM handler replaces the coordination service's own.
    gathers, gather = [], training.loop._gather_flag
    training.loop._gather_flag = lambda flag: gathers.append(flag) or gather(flag)
    mode = training.loop.preemption_mode("auto")
    feed = PreemptedFeed(HostFeed(FeedConfig(**FEED)), 3 if process_id == 1 else None, 0.05)
    service = run(trainer, LoopConfig(train_steps=SERVICE_STEPS, checkpoint_every=1000,
                                      log_every=1000, prefetch=PREFETCH),
                  f"{model_dir}-service", lambda _: feed, progress=False)
    _phase(f"service mode run stopped at {service.step}")
    service_gathers = list(gathers)

    rows = partitioning.process_rows(trainer.batch_sharding, FEED["batch_size"])
    feed = PreemptedFeed(HostFeed(FeedConfig(**FEED)),
                         PREEMPT_AT + PREFETCH if process_id == 1 else None)
    _phase("feed built")
    result = run(trainer, LoopConfig(train_steps=STEPS, checkpoint_every=CHECKPOINT_EVERY,
                                     log_every=1, prefetch=PREFETCH,
                                     preemption_sync="collective"),
                 model_dir, lambda _: feed, progress=False)
    _phase("trained")
    # The reverse direction: a checkpoint written by 1 process x 8 devices, restored here.
    abstract = trainer.abstract_state()
    restored, _ = Checkpointer(reference_dir, async_save=False).restore(abstract, result.step)
    with open(out, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "devices": jax.device_count(), "rows": [rows.start, rows.stop],
                   "feed_process_index": feed.feed.process_index,
                   "first_batch": feed.first["encoder_input_tokens"].tolist(),
                   "step": result.step,
                   "preempted": result.preempted,
                   "service": {"mode": mode, "step": service.step,
                               "preempted": service.preempted, "gathers": service_gathers},
                   "collective_gathers": len(gathers) - len(service_gathers),
                   "reference_params_diff": max_abs_diff(restored.params, result.state.params),
                   "reference_opt_diff": max_abs_diff(restored.opt_state,
                                                      result.state.opt_state)}, f)
    _phase("done")


def infer(process_id: int, port: str, model_dir: str, batch: str, out: str) -> None:
    """tools.infer on 2 prompts (host 0 alone writes OUT.jsonl), then greedy and beam ids
    and scores of every row of BATCH_NPZ, as every process gets them."""
    import json

    import jax
    import numpy as np

    import partitioning
    from model_zoo.decoding import DecodeConfig
    from inference.predictor import Predictor
    from tools import infer as infer_tool

    mesh = ["--mesh=fsdp=2,tensor=2", "--dcn=data=2", "--rules=fsdp_tensor"]
    infer_tool.main([f"--model_dir={model_dir}", "--byte", "--prompt=ab", "--prompt=xyz",
                     "--max_decode_length=8", f"--output={out}l", *mesh,
                     f"--coordinator_address=localhost:{port}", "--num_processes=2",
                     f"--process_id={process_id}", "--heartbeat_timeout=30"])
    data = np.load(batch)
    results = {}
    for method in ("greedy", "beam"):
        cfg = DecodeConfig(8, method=method, num_beams=3)
        predictor = Predictor(model_dir, "fsdp=2,tensor=2", "fsdp_tensor", cfg, byte=True,
                              dcn="data=2")
        results[method] = predictor.predict_tokens(data["enc"]).tolist()
    results["scores"] = predictor.score_tokens(data["enc"], data["tgt"]).tolist()
    rows = partitioning.process_rows(
        partitioning.batch_sharding(predictor.rules, predictor.mesh), 8)
    with open(out, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "rows": [rows.start, rows.stop], **results}, f)


def files(process_id: int, port: str, corpus: str, cache_dir: str, out: str) -> None:
    join(process_id, port, heartbeat=30)
    import json

    import jax

    from tasks.pretraining import text_files
    from tasks.feed_config import FeedConfig
    from tasks.feeding.host_feed import HostFeed

    opened, read = [], text_files._texts_of
    text_files._texts_of = lambda path, field: opened.append(path) or read(path, field)
    config = FeedConfig("text_span_corruption", {"inputs": 32, "targets": 16}, batch_size=4,
                        task_settings={"text_corpus": {"train": corpus}})
    live = HostFeed(config)
    next(live), next(live)
    cached = HostFeed(FeedConfig(**{**config.__dict__, "cache_dir": cache_dir}))
    next(cached), next(cached)
    with open(out, "w") as f:
        json.dump({"process_index": jax.process_index(), "opened": sorted(set(opened)),
                   "live_files": live.files, "cache_files": cached.files}, f)


def collectives(process_id: int, port: str) -> None:
    join(process_id, port, heartbeat=5)
    import time
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec("data")),
                                               np.ones(LOCAL_DEVICES, np.float32))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))
    assert float(total(x)) == 2 * LOCAL_DEVICES
    print("ready", flush=True)
    while True:
        total(x).block_until_ready()
        time.sleep(0.01)


if __name__ == "__main__":  # set before jax is imported (the functions import it lazily)
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split()  # conftest's others stay
            if not f.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(kept + [
        f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import faulthandler

    faulthandler.dump_traceback_later(200, exit=True)  # a hang shows where, then ends
    what, args = sys.argv[1], sys.argv[2:]
    if what == "train":
        train(int(args[0]), args[1], args[2], args[3], args[4])
    elif what == "files":
        files(int(args[0]), args[1], args[2], args[3], args[4])
    elif what == "infer":
        infer(int(args[0]), args[1], args[2], args[3], args[4])
    else:
        collectives(int(args[0]), args[1])
