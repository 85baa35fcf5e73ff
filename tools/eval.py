"""Evaluate a model on a task, mixture or benchmark, the way t5x does: seqio.Evaluator with
predict metrics on generations and score metrics (rank classification, ...) on the summed
log-likelihoods of targets. A task without metric functions gets exact match of greedy
predictions instead.

    python -m tools.eval --model_dir=DIR --task=glue_sst2 [--split=validation] [--examples=500]
    python -m tools.eval --model_dir=DIR --task=mmlu_five_shot --split=test \\
        --gin_file=runs/eval_mmlu.gin --gin.MMLU_DIR=/data/mmlu
    python -m tools.eval --model_dir=DIR --task=bbh_cot --split=test \\
        --gin_file=runs/eval_bbh.gin --gin.BBH_DIR=/data/BIG-Bench-Hard
    python -m tools.eval --model_dir=TREE_DIR --branch=NAME   # a TreeDNN branch, on its task

Lengths: for tasks with metrics, the longest example's (nothing truncated) unless given; for
the others those the model was trained with (its model.json). Decoding: DecodeConfig from
gin (runs/eval.gin: greedy), else greedy to --targets_length. A TFDS task must be prepared
first (the error says how). Both are evaluators (training/evaluator.py) as the train loop
runs them; --metrics_dir also writes their metrics to metrics.jsonl and TensorBoard there
("infer_eval/TASK/METRIC", or "task_eval/TASK/METRIC" for exact match).

Multi-host: run the same command on every host (as tools.train: --coordinator_address=
HOST0:PORT --num_processes=N --process_id=I, or Cloud TPU / SLURM detected); params are
sharded on --mesh (x --dcn across hosts) by --rules, each host places its share of every
batch, and host 0 alone prints and writes the results.
"""

from __future__ import annotations

import json

from tools import cli  # first: the quiet start and the log lines
from model_zoo.decoding import DecodeConfig
from tools.distributed_flags import start_distributed
from tools.path_flags import path_flag


def main(argv=None):
    p = cli.parser(__doc__, distributed=True)
    p.add_argument("--model_dir", required=True, type=path_flag)
    p.add_argument("--task", help="default: the task the model (or --branch) was trained on")
    p.add_argument("--branch", help="a TreeDNN tree's branch: its trunk and branch, as a T5")
    p.add_argument("--split", default="validation")
    p.add_argument("--examples", type=int,
                   help="the first N examples of each task (default: all; 256 for a task "
                        "without metrics)")
    p.add_argument("--inputs_length", type=int,
                   help="default: the longest input (the model's training length, 512 for an "
                        "HF directory, for a task without metrics)")
    p.add_argument("--targets_length", type=int, help="default: as --inputs_length (64)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--dcn", default="", help="mesh degrees across hosts/slices, e.g. data=2")
    p.add_argument("--rules", default="data_parallel")
    p.add_argument("--vocab", type=path_flag)
    p.add_argument("--byte", action="store_true")
    p.add_argument("--metrics_dir", type=path_flag,
                   help="also write the metrics here (JSONL, TensorBoard)")
    p.add_argument("--step", type=int, default=0, help="the step --metrics_dir records")
    args, gin_files, gin_bindings = cli.parse(p, argv)
    if args.examples is not None and args.examples < 1:
        p.error(f"--examples={args.examples} must be >= 1 (leave it out for the default: "
                "every example, or 256 for a task without metrics)")
    # the libraries after the flags: --help and flag errors come at once
    from partitioning.distributed import is_primary
    from runner import gin_flags
    from tasks import settings_scope
    from inference.task_evaluator import default_lengths
    from training.checkpoints.model_json import branch_task, read_model_json
    from runner.gin_flags import model_from_gin_for

    start_distributed(p, args)
    task = args.task or (args.branch and branch_task(args.model_dir, args.branch)) \
        or read_model_json(args.model_dir)[1]
    model = model_from_gin_for(args.model_dir, gin_files, gin_bindings)
    settings = gin_flags.task_settings_from_gin(gin_files, gin_bindings)
    decode_cfg = (gin_flags.decode_config_from_gin(gin_files, gin_bindings)
                  if gin_files or gin_bindings else None)
    with settings_scope.active(settings):   # the data is read with the gin-bound settings
        if _has_metrics(task):
            results = _evaluate_with_seqio(args, task, decode_cfg, model)
        else:
            results = _evaluate_exact_match(args, task, decode_cfg, model,
                                            default_lengths(args.model_dir))
    if is_primary():
        print(json.dumps(results, indent=2))
    return results


def _has_metrics(name: str) -> bool:
    import seqio

    from tasks.task_lookup import lookup

    provider = lookup(name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    return all(t.metric_objs for t in tasks)


def _predictor(args, decode_cfg, model, max_input_length):
    from inference.predictor import Predictor

    return Predictor(args.model_dir, args.mesh, args.rules, decode_config=decode_cfg,
                     vocab=args.vocab, byte=args.byte, max_input_length=max_input_length,
                     model=model, dcn=args.dcn, branch=args.branch)


def _evaluate_with_seqio(args, task, decode_cfg, model) -> dict:
    from inference.seqio_evaluator import InferenceEvalConfig, InferenceEvaluator, SeqioEvaluator
    from inference.task_evaluator import check_vocabulary

    lengths = None
    if args.inputs_length or args.targets_length:
        lengths = {k: v for k, v in (("inputs", args.inputs_length),
                                     ("targets", args.targets_length)) if v}
    config = InferenceEvalConfig(task, args.split, lengths, args.examples, args.batch_size,
                                 decode_cfg or DecodeConfig(args.targets_length or 64))
    data = InferenceEvaluator(config)  # reads the data first: a bad file fails here
    predictor = _predictor(args, config.decode, model, args.inputs_length or 512)
    for t in data.evaluator.eval_tasks:
        check_vocabulary(t, predictor, task)
    return _run(args, SeqioEvaluator(data, predictor), predictor)


def _evaluate_exact_match(args, task, decode_cfg, model, trained) -> dict:
    from inference.task_evaluator import ExactMatchEvaluator

    lengths = {"inputs": args.inputs_length or trained["inputs"],
               "targets": args.targets_length or trained["targets"]}
    predictor = _predictor(args, decode_cfg or DecodeConfig(lengths["targets"]), model,
                           lengths["inputs"])
    evaluator = ExactMatchEvaluator(predictor, task, args.split, lengths, args.examples or 256,
                                    args.batch_size)
    return _run(args, evaluator, predictor)


def _run(args, evaluator, predictor) -> dict:
    """`evaluator.run` on the loaded params; --metrics_dir gets its metrics as named."""
    metrics = evaluator.run(args.step, predictor.params)
    if args.metrics_dir:
        from partitioning.distributed import is_primary
        from training.metrics_writer import MetricsWriter

        writer = MetricsWriter(args.metrics_dir, primary=is_primary())
        try:
            writer.write(args.step, metrics)
        finally:
            writer.close()
    return evaluator.by_task(metrics)


if __name__ == "__main__":
    main()
