"""Evaluation the way t5x does it: seqio.Evaluator over t5pod's predict and score callbacks.

A task's `predict_metric_fns` see its decoded, postprocessed generations; its
`score_metric_fns` the summed log-likelihood of each target from the same model (rank
classification among them). `InferenceEvaluator` reads and caches the eval data once (a
missing or malformed benchmark file fails here, before any model is loaded), then
`evaluate(predictor, step)` runs both kinds and returns {task: {metric: value}}.
`SeqioEvaluator` is the evaluator (training/evaluator.py) over it: `run(step, params)` ->
{"infer_eval/TASK/METRIC": value}; tools.eval runs it on a model on disk, the train loop at
`EVAL_EVERY` on the training params (runner/evaluators.py builds it from):

    run.train.inference_eval = @run.inference_eval()
    run.inference_eval.mixture_or_task_name = 'mmlu_zero_shot'
    run.inference_eval.split = 'test'
    run.inference_eval.decode = @model_zoo.DecodeConfig()
"""

from __future__ import annotations

import dataclasses

from fields.choices import require_choice
from fields.integers import require_int
from model_zoo.decoding import DecodeConfig
from inference.scalar_metrics import scalars
from inference.seqio_callbacks import predict_fn, score_fn

PREFIX = "infer_eval/"


@dataclasses.dataclass(frozen=True)
class InferenceEvalConfig:
    """`task_feature_lengths`: None (the longest example's lengths, nothing truncated) or
    {'inputs': N, 'targets': M}; `num_examples`: the first N of each task (None: all)."""
    mixture_or_task_name: str
    split: str = "validation"
    task_feature_lengths: dict | None = None
    num_examples: int | None = None
    batch_size: int = 32
    decode: DecodeConfig = DecodeConfig()

    def __post_init__(self):
        require_int("run.inference_eval", "batch_size", self.batch_size, 1)
        if self.num_examples is not None:
            require_int("run.inference_eval", "num_examples", self.num_examples, 1,
                        meaning="or None: all")
        if not isinstance(self.decode, DecodeConfig):
            raise TypeError(f"run.inference_eval.decode={self.decode!r} must be a "
                            "model_zoo.DecodeConfig")
        lengths = self.task_feature_lengths
        if lengths is not None and (set(lengths) - {"inputs", "targets", "byte_inputs"} or any(
                not isinstance(v, int) or v < 1 for v in lengths.values())):
            raise ValueError(f"run.inference_eval.task_feature_lengths={lengths} must be None "
                             "or positive int lengths of 'inputs' and 'targets' (and 'byte_inputs' "
                             "for a hybrid task)")


class InferenceEvaluator:
    def __init__(self, config: InferenceEvalConfig, vocabulary=None,
                 hybrid_model: bool | None = None):
        """`vocabulary`: the model's; a task with another one is refused. `hybrid_model`:
        whether the model reads bytes too (ModelConfig.byte_encoder); a task that disagrees
        (no `byte_inputs` for a hybrid model, or some for a plain one) is refused."""
        import seqio

        from tasks.task_lookup import lookup, require_prepared
        from tasks.hybrid_features import converter, mismatch

        self.config = config
        provider = lookup(config.mixture_or_task_name)
        tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
        problem = mismatch(config.mixture_or_task_name, provider, byte_encoder=hybrid_model)
        if problem:
            raise ValueError(problem)
        require_prepared(provider)  # before its splits: an unprepared TFDS task has none
        for task in tasks:
            require_choice("InferenceEvalConfig", "split", config.split, tuple(task.splits),
                           meaning=f"the splits of task {task.name!r}")
            if vocabulary is not None:
                _check_vocabulary(task, vocabulary)
        if not any(t.metric_objs for t in tasks):
            raise ValueError(f"{config.mixture_or_task_name!r} has no predict or score "
                             "metrics to evaluate; pick a task with metric_fns")
        self.evaluator = seqio.Evaluator(
            config.mixture_or_task_name, feature_converter=converter(provider, pack=False),
            eval_split=config.split, sequence_length=config.task_feature_lengths,
            num_examples=config.num_examples, shuffle=False, async_compute_metrics=False)
        self.examples = {name: _count(ds) for name, ds in
                         self.evaluator.cached_task_datasets.items()}

    def evaluate(self, predictor, step: int | None = None) -> dict[str, dict]:
        """{task: {metric: value}} of `predictor` (see inference/seqio_callbacks.py), and the
        mixture's own row where its tasks' mean is its published score (BBH)."""
        from tasks.benchmarks.macro_average import with_average

        size = self.config.batch_size
        metrics, _ = self.evaluator.evaluate(
            compute_metrics=True, step=step, predict_fn=predict_fn(predictor, size),
            score_fn=score_fn(predictor, size))
        return with_average(self.config.mixture_or_task_name, metrics.result())


def _count(dataset) -> int:
    """Examples in a cached task dataset; a rank-classification one counts each question
    once (it holds a row per option, `idx` = [question, option])."""
    questions, rows = set(), 0
    for example in dataset.as_numpy_iterator():
        rows += 1
        if "idx" in example:
            questions.add(int(example["idx"][0]))
    return len(questions) or rows


def flat(results: dict[str, dict]) -> dict[str, float]:
    """{"task/metric": value} of the scalar metrics, for a metrics writer."""
    return {f"{task}/{name}": value for task, scores in results.items()
            for name, value in scalars(scores).items()}


def _check_vocabulary(task, vocabulary) -> None:
    for feature in ("inputs", "targets"):
        vocab = task.output_features[feature].vocabulary
        if vocab != vocabulary:
            raise ValueError(
                f"task {task.name!r} {feature} use {type(vocab).__name__} ({vocab.vocab_size} "
                f"ids), but the model reads and writes {type(vocabulary).__name__} "
                f"({vocabulary.vocab_size} ids); pick the task variant of the model's "
                "vocabulary (e.g. a '_byte' task for ByT5)")


class SeqioEvaluator:
    """`run(step, params)`: the scalar metrics of `data`'s tasks, decoded and scored by
    `inference` (an inference.core.Inference: model, mesh, decoding) with `params`, named
    "infer_eval/TASK/METRIC"."""

    prefix = PREFIX

    def __init__(self, data: InferenceEvaluator, inference):
        self.data, self.inference = data, inference

    def run(self, step: int, params) -> dict[str, float]:
        previous, self.inference.params = self.inference.params, params
        try:
            return {PREFIX + k: v for k, v in flat(self.data.evaluate(self.inference,
                                                                      step)).items()}
        finally:
            self.inference.params = previous

    def by_task(self, metrics: dict[str, float]) -> dict[str, dict]:
        """`run`'s metrics as {task: {"examples": N, metric: value}}."""
        out, counts = {}, self.data.examples
        names, mixture = list(counts), self.data.config.mixture_or_task_name
        if mixture not in counts and any(k.startswith(f"{PREFIX}{mixture}/") for k in metrics):
            names.append(mixture)   # a macro average (tasks/benchmarks/macro_average.py)
        for task in names:
            head = f"{PREFIX}{task}/"
            out[task] = {"examples": counts.get(task, sum(counts.values())),
                         **{k[len(head):]: v for k, v in metrics.items()
                            if k.startswith(head)}}
        return out


def for_trainer(config: InferenceEvalConfig, trainer, vocabulary=None) -> SeqioEvaluator:
    """The train loop's SeqioEvaluator: the eval data is read here, once (before the run
    writes anything); each `run` decodes and scores with the params it is given."""
    from inference.core import Inference

    data = InferenceEvaluator(config, vocabulary, trainer.model.byte_encoder is not None)
    predictor = Inference(trainer.model_def, None, trainer.model, trainer.mesh, trainer.rules,
                          config.decode, vocab=vocabulary)
    return SeqioEvaluator(data, predictor)
