#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM pod slice (e.g. v4-256 = 32 hosts x 4 chips).
#
#   TPU_NAME=my-v4-256 ZONE=us-central2-b MODEL_DIR=/mnt/shared/runs/xxl \
#     tools/launch/tpu_vm_pod.sh --gin_file=models/t5_1_1/xxl.gin \
#       --gin_file=mesh/tpu_v4_pod.gin --gin_file=runs/pretrain.gin \
#       --gin.MIXTURE_OR_TASK_NAME=c4_span_corruption
#
# The same command runs on all workers at once (--worker=all). partitioning.distributed
# detects the Cloud TPU VM, so no coordinator flags are needed; host 0 writes the logs and
# every host writes its shards of each checkpoint. MODEL_DIR must be one directory that
# all workers see: a bucket (gs://BUCKET/runs/NAME, written directly) or Filestore/NFS.
# REPO_DIR is where t5pod is checked out and installed on every worker.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${MODEL_DIR:?set MODEL_DIR (shared by all workers)}"
REPO_DIR=${REPO_DIR:-~/t5pod}
PYTHON=${PYTHON:-.venv/bin/python}

args=""
for a in "$@"; do args+=" $(printf '%q' "$a")"; done

gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR && $PYTHON -m tools.train --model_dir=$(printf '%q' "$MODEL_DIR") --no-progress $args \
    2>&1 | tee -a /tmp/t5pod_train.log"
