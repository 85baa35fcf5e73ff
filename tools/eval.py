"""Evaluate a model on a task or mixture: exact match and the task's own metrics (e.g.
accuracy of decoded labels) on greedy predictions.

    python -m tools.eval --model_dir=DIR --task=glue_sst2 [--split=validation] [--examples=500]

Lengths default to those the model was trained with (its model.json); a TFDS task must be
prepared first (the error says how).

Multi-host: run the same command on every host (as tools.train: --coordinator_address=
HOST0:PORT --num_processes=N --process_id=I, or Cloud TPU / SLURM detected); params are
sharded on --mesh (x --dcn across hosts) by --rules, each host places its share of every
batch, and host 0 alone prints the results.
"""

from __future__ import annotations

import argparse
import json
import sys

from model_zoo.decoding import DecodeConfig
from tools.distributed_flags import add_distributed_flags, start_distributed


def main(argv=None):
    from partitioning.distributed import is_primary
    from runner import gin_flags
    from runner.evaluation import default_lengths, evaluate_task
    from runner.predictor import Predictor
    from runner.model_json import read_model_json
    from runner.trained_model import model_from_gin_for

    gin_files, gin_bindings, argv = gin_flags.split_gin_args(
        sys.argv[1:] if argv is None else list(argv))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", required=True)
    p.add_argument("--task", help="default: the task the model was trained on")
    p.add_argument("--split", default="validation")
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--inputs_length", type=int,
                   help="default: the model's training length (512 for an HF directory)")
    p.add_argument("--targets_length", type=int, help="default: as --inputs_length (64)")
    p.add_argument("--mesh", default="data=1")
    p.add_argument("--dcn", default="", help="mesh degrees across hosts/slices, e.g. data=2")
    p.add_argument("--rules", default="data_parallel")
    p.add_argument("--vocab")
    p.add_argument("--byte", action="store_true")
    add_distributed_flags(p)
    args = p.parse_args(argv)
    start_distributed(p, args)
    lengths = default_lengths(args.model_dir)
    lengths = {"inputs": args.inputs_length or lengths["inputs"],
               "targets": args.targets_length or lengths["targets"]}
    if gin_files or gin_bindings:
        from runner.gin_flags import decode_config_from_gin

        decode_cfg = decode_config_from_gin(gin_files, gin_bindings)
    else:
        decode_cfg = DecodeConfig(lengths["targets"])
    task = args.task or read_model_json(args.model_dir)[1]
    predictor = Predictor(args.model_dir, args.mesh, args.rules, decode_config=decode_cfg,
                          vocab=args.vocab, byte=args.byte,
                          max_input_length=lengths["inputs"],
                          model=model_from_gin_for(args.model_dir, gin_files, gin_bindings),
                          dcn=args.dcn)
    results = evaluate_task(predictor, task, args.split, lengths, args.examples)
    if is_primary():
        print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
