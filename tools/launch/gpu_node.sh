#!/usr/bin/env bash
# Train on one machine's GPUs: one process drives all of them (single node, no coordinator).
#
#   MODEL_DIR=/data/runs/base tools/launch/gpu_node.sh --gin_file=models/t5_1_1/base.gin \
#     --gin_file=mesh/gpu_node.gin --gin_file=runs/pretrain.gin \
#     --gin.MIXTURE_OR_TASK_NAME=c4_span_corruption
#
# Sets XLA's GPU flags and JAX's memory fraction from tools/xla_flags.py (flags already in
# XLA_FLAGS win). CUDA_VISIBLE_DEVICES picks the GPUs.
set -euo pipefail
: "${MODEL_DIR:?set MODEL_DIR}"
PYTHON=${PYTHON:-.venv/bin/python}
eval "$($PYTHON -m tools.xla_flags gpu)"
exec $PYTHON -m tools.train --model_dir="$MODEL_DIR" "$@"
