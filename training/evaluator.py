"""One evaluator interface: `run(step, params) -> {metric name: value}`.

An evaluator is any object with a `prefix` (what its metrics are: "eval/" for the
teacher-forced eval loss, "infer_eval/" for seqio evals) and `run(step, params)`, which
evaluates `params` (the live train params, or a model loaded from disk) and returns host
floats whose names start with that prefix, as written to metrics.jsonl and TensorBoard.
The train loop runs its evaluators at EVAL_EVERY and at TRAIN_STEPS and does not care what
they are; tools.eval and the sweeps call the same objects. training/eval_loss.py is the
loop's eval loss; the decoding and scoring ones are in inference/.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Evaluator(Protocol):
    prefix: str

    def run(self, step: int, params) -> dict[str, float]:
        """{name: value} of `params` at `step`; every name starts with `prefix`."""


def checked(evaluators) -> tuple:
    """`evaluators` as a tuple, each refused unless it has a `run` and a str `prefix`."""
    evaluators = tuple(evaluators or ())
    for ev in evaluators:
        if not (callable(getattr(ev, "run", None)) and isinstance(getattr(ev, "prefix", None),
                                                                  str) and ev.prefix):
            raise TypeError(f"evaluator {ev!r} must have run(step, params) -> {{name: value}} "
                            "and a non-empty str `prefix` that its metric names start with "
                            "(training/evaluator.py)")
    return evaluators


def run_one(ev: Evaluator, step: int, params) -> dict[str, float]:
    """`ev.run(step, params)` as host floats; a name outside its prefix is refused."""
    metrics = ev.run(step, params)
    bad = [k for k in metrics if not k.startswith(ev.prefix)]
    if bad:
        raise ValueError(f"evaluator {ev!r} returned {bad[0]!r}, which does not start with its "
                         f"prefix {ev.prefix!r}")
    return {k: float(v) for k, v in metrics.items()}


def logged_at(model_dir: str, step: int, prefix: str) -> bool:
    """Whether the run's metrics hold metrics of `step` whose names start with `prefix` (a
    kill during the final eval leaves a run at TRAIN_STEPS without them)."""
    from training.metrics_log import read_records

    return any(r["step"] == step and any(k.startswith(prefix) for k in r)
               for r in read_records(model_dir))


def missing_at(evaluators: tuple, model_dir: str, step: int) -> list:
    """The evaluators with no metrics of `step` in model_dir, as process 0 reads it (the
    same list on every host)."""
    import jax
    import numpy as np

    flags = np.array([not logged_at(model_dir, step, ev.prefix) for ev in evaluators], bool)
    if jax.process_count() > 1 and len(flags):
        from jax.experimental import multihost_utils

        flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
    return [ev for ev, missing in zip(evaluators, flags, strict=True) if missing]
