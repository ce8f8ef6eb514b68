#!/usr/bin/env bash
# The GPU checks in one short run (a few minutes on one recent GPU; each step has a time limit so
# that the whole run stays under 8 minutes):
#   1. the GPU tests (tests/test_gpu.py): a training step in fp32 and in AMP, inference against
#      the CPU's, the mask branch on CUDA in both memory layouts;
#   2. training R50-FPN at 800x1333, RetinaMask, RetinaNet and Mask R-CNN taking turns step by
#      step, fp32 and AMP (s/iter, peak GPU memory) -> results/train_cost_coco_cuda.json;
#   3. inference at 800x1333, fp32 and fp16, the three models side by side
#      -> results/inference_cost_cuda.json, results/inference_cost_cuda-fp16.json;
#   4. benchmarks.report, which puts the GPU rows into the generated tables.
#
#   benchmarks/timing/gpu_check.sh              # on a machine with a GPU, in the project's env
#   benchmarks/timing/gpu_check.sh --cpu-dry-run  # no GPU: the same steps, tiny and without time
#                                            # limits, on the CPU, into benchmarks/results/tmp
#                                            # (checks the script only)
#
# PYTHON names the interpreter (default: .venv/bin/python if there, else python).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ -x .venv/bin/python ]]; then default_python=.venv/bin/python; else default_python=python; fi
PY=${PYTHON:-$default_python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if [[ "${1:-}" == "--cpu-dry-run" ]]; then
  device=cpu
  results=benchmarks/results/tmp
  train=(--size 64 96 --warmup 0 --iters 1 --amp both --models retinamask retinanet)
  infer=(--quick)
else
  device=cuda
  results=benchmarks/results
  train=(--warmup 10 --iters 150 --amp both)
  infer=(--warmup 3 --iters 20)
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
mkdir -p "$results"
start=$SECONDS
current=start
step() { current=$1; echo "== gpu_check: $1 ($((SECONDS - start)) s so far)"; }
trap 'echo "== gpu_check: FAILED in: $current (exit $?, $((SECONDS - start)) s)" >&2' ERR
# A time limit per step on the GPU (the whole run must stay short); none on a CPU dry run.
limit() { if [[ $device == cuda ]]; then timeout "$@"; else shift; "$@"; fi; }

step "GPU tests on $device"
RETINAMASK_TEST_DEVICE=$device limit 120 "$PY" -m pytest tests/test_gpu.py -q -x -p no:cacheprovider

step "training R50-FPN, fp32 and AMP"
limit 200 "$PY" -m benchmarks.timing.train_cost --scale coco --device "$device" "${train[@]}" \
  --out "$results/train_cost_coco_$device.json"

for precision in fp32 fp16; do
  suffix=$([[ $precision == fp32 ]] && echo "" || echo "-$precision")
  if [[ $device == cpu && $precision == fp16 ]]; then precision=bf16; suffix=-bf16; fi
  step "inference R50-FPN 800x1333, $precision"
  limit 100 "$PY" -m benchmarks.timing.inference_cost --device "$device" --precision "$precision" \
    "${infer[@]}" --out "$results/inference_cost_$device$suffix.json" --work-dir output/gpu_check
done

step "report"
"$PY" -m benchmarks.report --results-dir "$results" > /dev/null
step "done: results in $results"
