"""Quickstart: pretrain a tiny T5 on the embedded demo corpus on 8 CPU devices, then show it.

Runs gin/runs/quickstart.gin (span corruption over CPython's documentation prose, a
data x fsdp x tensor = 2x2x2 mesh, bf16, async checkpoints, periodic eval), then decodes
held-out examples. Run it again and it resumes or, when finished, just shows predictions.
"""

from __future__ import annotations

import argparse
import json
import os

from model_zoo.decoding import DecodeConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model_dir", default="runs/quickstart")
    p.add_argument("--steps", type=int, default=None, help="override TRAIN_STEPS")
    args = p.parse_args(argv)

    from tools import eval as eval_tool
    from tools import train
    from tools.infer import Predictor

    flags = [f"--model_dir={args.model_dir}", "--gin_file=runs/quickstart.gin"]
    if args.steps:
        flags.append(f"--gin.TRAIN_STEPS={args.steps}")
    train.main(flags)
    predictor = Predictor(args.model_dir, decode_config=DecodeConfig(32))
    results = eval_tool.evaluate_task(predictor, "demo_span_corruption", "validation",
                                      {"inputs": 128, "targets": 32}, max_examples=3)
    for sample in results["demo_span_corruption"]["samples"]:
        print(f"\ninput:      {sample['input']}\ntarget:     {sample['target']}\n"
              f"prediction: {sample['prediction']}")
    metrics = [json.loads(x) for x in open(os.path.join(args.model_dir, "metrics.jsonl"))]
    evals = [m for m in metrics if "eval/loss" in m]
    if evals:
        print(f"\nheld-out loss {evals[0]['eval/loss']:.3f} (step {evals[0]['step']}) -> "
              f"{evals[-1]['eval/loss']:.3f} (step {evals[-1]['step']})")
    root = os.path.abspath(args.model_dir)
    print(f"\noutputs in {root}: checkpoints/, metrics.jsonl, tensorboard/, config.gin, "
          f"model.json\nnext: python -m tools.infer --model_dir={root} --prompt 'TEXT'")


if __name__ == "__main__":
    main()
