#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, in priority order, inside a time box:
#
#   bash tools/launch/gpu_checks.sh OUT_DIR [SECONDS]     # default 540 s
#
# 1. tests on the GPU: HF parity, mixed-precision einsum, cuDNN attention = einsum, fp16 loss
#    scaling; 2. tools.bench rows (JSON lines in OUT_DIR/bench.jsonl): T5 1.1-base bf16
#    against HF + torch.compile, fp16, T5 1.1-large against HF, Switch-base-8, ByT5-small,
#    then the alternatives (attention kernels, chunked loss, no XLA flags) and the largest
#    T5 1.1 that trains on the GPU; 3. tools.hlo_audit of the base step on this GPU;
#    4. OUT_DIR/performance.md from the rows. A step that would overrun the box is skipped and
#    logged. Needs jax with CUDA, flax, optax, orbax, torch, transformers and pytest; not
#    TensorFlow, seqio or gin.
set -uo pipefail
OUT=${1:?usage: gpu_checks.sh OUT_DIR [SECONDS]}
BOX=${2:-540}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/t5pod_jax_cache}
LOG="$OUT/log.txt"

step() {  # step SECONDS NAME COMMAND...: run it if it fits in what is left of the box
  local budget=$1 name=$2; shift 2
  local left=$((BOX - SECONDS))
  if ((left < budget)); then
    echo "== SKIPPED $name: needs ${budget}s, ${left}s left" | tee -a "$LOG"
    return
  fi
  echo "== $name (t=${SECONDS}s, budget ${budget}s)" | tee -a "$LOG"
  timeout "$budget" "$@" 2>&1 | tee -a "$LOG"
  echo "== $name: rc=${PIPESTATUS[0]} at t=${SECONDS}s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
$PY -c "import jax, flax, torch, transformers; print('jax', jax.__version__, jax.devices(),
'flax', flax.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" \
  2>&1 | tee -a "$LOG"
flags=$($PY -m tools.xla_flags gpu --check) || exit 1
eval "$flags"

BENCH="$PY -m tools.bench --mesh data=1 --steps 10 --warmup 3 --out $OUT/bench.jsonl"
BASE="--batch 64 --inputs 512 --targets 128 --optimizer adamw"

step 150 "tests on the GPU" $PY -m pytest -q -p no:cacheprovider tests/test_hf_parity.py \
  tests/test_mixed_einsum.py tests/test_model_options.py tests/test_precision.py
step 200 "t5_1_1_base bf16 vs HF" $BENCH --preset t5_1_1_base $BASE --dtype bfloat16 \
  --attention cudnn --vs hf
step 60 "t5_1_1_base fp16 (loss scaling)" $BENCH --preset t5_1_1_base $BASE --dtype float16 \
  --attention cudnn
step 200 "t5_1_1_large bf16 vs HF" $BENCH --preset t5_1_1_large --batch 32 --inputs 512 \
  --targets 128 --optimizer adamw --dtype bfloat16 --attention cudnn --vs hf
step 120 "switch_base_8 and its dense peer t5_1_0_base bf16" $BENCH --preset switch_base_8 \
  --preset t5_1_0_base $BASE --dtype bfloat16 --attention cudnn
step 150 "byt5_small bf16 vs HF" $BENCH --preset byt5_small $BASE --dtype bfloat16 \
  --attention cudnn --vs hf
step 60 "base with einsum attention" $BENCH --preset t5_1_1_base $BASE --dtype bfloat16 \
  --attention einsum
step 60 "base with XLA's attention" $BENCH --preset t5_1_1_base $BASE --dtype bfloat16 \
  --attention xla
step 60 "base with the chunked loss" $BENCH --preset t5_1_1_base $BASE --dtype bfloat16 \
  --attention cudnn --vocab_chunk 128
step 60 "base without XLA's GPU flags" env XLA_FLAGS= $BENCH --preset t5_1_1_base $BASE \
  --dtype bfloat16 --attention cudnn
step 60 "hlo audit of the base step" $PY -m tools.hlo_audit --preset t5_1_1_base $BASE \
  --mesh data=1 --dtype bfloat16 --attention cudnn --json "$OUT/hlo_audit.jsonl"
step 150 "largest: t5_1_1_xl bf16 adafactor, full remat" $BENCH --preset t5_1_1_xl \
  --batch 16 --inputs 512 --targets 128 --dtype bfloat16 --attention cudnn --remat full \
  --steps 3 --warmup 1
[ -s "$OUT/bench.jsonl" ] && $PY -m tools.perf_table "$OUT/bench.jsonl" \
  --out "$OUT/performance.md" 2>&1 | tee -a "$LOG"
echo "== done at t=${SECONDS}s" | tee -a "$LOG"
