"""Evaluate a model on a task or mixture: teacher-forced loss/accuracy, and the task's own
metrics (e.g. accuracy of decoded labels) on greedy predictions.

    python -m tools.eval --model_dir=DIR --task=glue_sst2 [--split=validation] [--examples=500]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from model_zoo.decoding import DecodeConfig
from tools.infer import Predictor


def evaluate_task(predictor: Predictor, task_name: str, split: str, lengths: dict,
                  max_examples: int, batch_size: int = 32) -> dict:
    import seqio

    from tasks.feeding import lookup

    provider = lookup(task_name)
    tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
    results = {}
    for task in tasks:
        if "byte_inputs" in task.output_features:  # hybrid: bytes of the same inputs
            lengths = {"byte_inputs": 4 * lengths["inputs"], **lengths}
        ds = task.get_dataset(lengths, split=split, shuffle=False, num_epochs=1)
        examples = list(ds.take(max_examples).as_numpy_iterator())
        if not examples:
            raise ValueError(f"task {task.name!r} split {split!r} has no examples")
        inputs = [predictor.vocab.decode([t for t in ex["inputs"].tolist() if t > 1])
                  for ex in examples]
        targets = [ex.get("targets_pretokenized", b"").decode() if "targets_pretokenized" in ex
                   else predictor.vocab.decode([t for t in ex["targets"].tolist() if t > 1])
                   for ex in examples]
        preds = []
        for start in range(0, len(inputs), batch_size):
            preds.extend(predictor.predict(inputs[start:start + batch_size]))
        post = task.postprocess_fn or (lambda x, **_: x)
        preds = [post(p, example=ex, is_target=False) for p, ex in zip(preds, examples,
                                                                        strict=True)]
        targets = [post(t, example=ex, is_target=True) for t, ex in zip(targets, examples,
                                                                         strict=True)]
        scores = {"exact_match": 100.0 * float(np.mean([p == t for p, t in
                                                         zip(preds, targets, strict=True)]))}
        for fn in task.metric_fns:
            scores.update(fn(targets, preds))
        results[task.name] = {"examples": len(examples), **scores,
                              "samples": [{"input": i[:200], "target": t, "prediction": p}
                                          for i, t, p in zip(inputs[:3], targets[:3], preds[:3],
                                                             strict=True)]}
    return results


def main(argv=None):
    import sys

    from runner import gin_flags
    from tools.infer import decode_config_from

    gin_files, gin_bindings, argv = gin_flags.split_gin_args(
        sys.argv[1:] if argv is None else list(argv))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--task", help="default: the task the model was trained on")
    p.add_argument("--split", default="validation")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--inputs_length", type=int, default=512)
    p.add_argument("--targets_length", type=int, default=64)
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--vocab")
    p.add_argument("--byte", action="store_true")
    args = p.parse_args(argv)
    decode_cfg = (decode_config_from(args, gin_files, gin_bindings) if gin_files or gin_bindings
                  else DecodeConfig(args.targets_length))
    predictor = Predictor(args.model_dir, args.mesh, decode_config=decode_cfg,
                          vocab=args.vocab, byte=args.byte)
    from runner.trained_model import read_model_json

    task = args.task or read_model_json(args.model_dir)[1]
    results = evaluate_task(predictor, task, args.split,
                            {"inputs": args.inputs_length, "targets": args.targets_length},
                            args.examples)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
