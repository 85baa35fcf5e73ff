"""Evaluate a model on a task or mixture: exact match and the task's own metrics on its
predictions (greedy unless its DecodeConfig says otherwise), with lengths defaulting to
those the model was trained with.

`ExactMatchEvaluator` is an evaluator (training/evaluator.py): the examples are read when it
is built, and `run(step, params)` decodes them with `params` and returns
{"task_eval/TASK/METRIC": value} ("examples", "exact_match" and the task's scalar metrics);
tools.eval and the sweeps' held-out evals use it."""

from __future__ import annotations

import numpy as np

from inference.predictor import Predictor
from inference.scalar_metrics import scalars

FALLBACK_LENGTHS = {"inputs": 512, "targets": 64}   # a model_dir that records none (HF dir)


def default_lengths(model_dir: str) -> dict:
    """The model's own task_feature_lengths (model.json), else 512/64."""
    from fields import paths
    from training.checkpoints.model_json import trained_lengths
    from training.run_dir import RunDir

    if paths.isfile(RunDir.of(model_dir).model_json):
        lengths = trained_lengths(model_dir)
        if lengths:
            return {k: lengths[k] for k in ("inputs", "targets")}
    return dict(FALLBACK_LENGTHS)


def describe(vocab) -> str:
    model_file = getattr(vocab, "sentencepiece_model_file", None)
    return (f"{type(vocab).__name__}" + (f" {model_file}" if model_file else "")
            + f" ({vocab.vocab_size} ids)")


def check_vocabulary(task, predictor: Predictor, requested: str | None = None) -> None:
    """A task whose inputs or targets use another vocabulary than the model's would be
    decoded into garbage and scored as such, and one without the bytes a hybrid model reads
    (or with bytes a plain model cannot read) fails mid-way: refuse both before anything is
    decoded. `requested`: the task or mixture the user named (the error names its variant)."""
    from tasks.hybrid_features import mismatch

    problem = mismatch(requested or task.name, task,
                       byte_encoder=predictor.config.byte_encoder is not None)
    if problem:
        raise ValueError(problem)
    for feature in ("inputs", "targets"):
        vocab = task.output_features[feature].vocabulary
        if vocab != predictor.vocab:
            raise ValueError(
                f"task {task.name!r} {feature} use {describe(vocab)}, but the model reads and "
                f"writes {describe(predictor.vocab)}; evaluate a task with the model's "
                "vocabulary (the one it was trained on), or for an HF directory pass the "
                "matching --vocab or --byte")


class ExactMatchEvaluator:
    """Exact match of `predictor`'s predictions against the targets of the first
    `max_examples` examples of each task of `task_name` (`split`, `lengths`). `samples`:
    {task: the first 3 (input, target, prediction)} of the last run."""

    prefix = "task_eval/"

    def __init__(self, predictor: Predictor, task_name: str, split: str, lengths: dict,
                 max_examples: int, batch_size: int = 32):
        import seqio

        from tasks.task_lookup import lookup, require_prepared

        provider = lookup(task_name)
        tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
        for task in tasks:
            check_vocabulary(task, predictor, task_name)
        require_prepared(provider)
        self.predictor, self.batch_size, self.samples = predictor, batch_size, {}
        self.examples = {}
        for task in tasks:
            task_lengths = ({"byte_inputs": 4 * lengths["inputs"], **lengths}
                            if "byte_inputs" in task.output_features else lengths)  # hybrid
            ds = task.get_dataset(task_lengths, split=split, shuffle=False, num_epochs=1)
            examples = list(ds.take(max_examples).as_numpy_iterator())
            if not examples:
                raise ValueError(f"task {task.name!r} split {split!r} has no examples")
            self.examples[task.name] = (task, examples)

    def run(self, step: int, params) -> dict[str, float]:
        previous, self.predictor.params = self.predictor.params, params
        try:
            out = {}
            for name, (task, examples) in self.examples.items():
                scores = self._task(task, examples)
                out.update({f"{self.prefix}{name}/{k}": v for k, v in scores.items()})
            return out
        finally:
            self.predictor.params = previous

    def _task(self, task, examples: list) -> dict[str, float]:
        vocab = self.predictor.vocab
        inputs = [vocab.decode([t for t in ex["inputs"].tolist() if t > 1]) for ex in examples]
        targets = [ex["targets_pretokenized"].decode() if "targets_pretokenized" in ex
                   else vocab.decode([t for t in ex["targets"].tolist() if t > 1])
                   for ex in examples]
        preds = []
        for start in range(0, len(inputs), self.batch_size):
            preds.extend(self.predictor.predict(inputs[start:start + self.batch_size]))
        post = task.postprocess_fn or (lambda x, **_: x)
        preds = [post(p, example=ex, is_target=False) for p, ex in zip(preds, examples,
                                                                        strict=True)]
        targets = [post(t, example=ex, is_target=True) for t, ex in zip(targets, examples,
                                                                         strict=True)]
        scores = {"examples": float(len(examples)), "exact_match": 100.0 * float(np.mean(
            [p == t for p, t in zip(preds, targets, strict=True)]))}
        for fn in task.metric_fns:
            scores.update(scalars(fn(targets, preds)))
        self.samples[task.name] = [{"input": i[:200], "target": t, "prediction": p}
                                   for i, t, p in zip(inputs[:3], targets[:3], preds[:3],
                                                      strict=True)]
        return scores

    def by_task(self, metrics: dict[str, float]) -> dict[str, dict]:
        """`run`'s metrics as {task: {"examples": N, metric: value, "samples": [...]}}."""
        out = {}
        for name in self.examples:
            head = f"{self.prefix}{name}/"
            scores = {k[len(head):]: v for k, v in metrics.items() if k.startswith(head)}
            scores["examples"] = int(scores["examples"])
            out[name] = {**scores, "samples": self.samples.get(name, [])}
        return out
