#!/usr/bin/env bash
# One-command GPU check: run as it is on a machine with one CUDA GPU (and torch installed).
#
#   bash benchmarks/gpu_check.sh            # table on stdout and in $OUT/gpu_check.txt
#
# Installs what the machine lacks: scotsearch itself without touching the machine's torch,
# and its other dependencies from wheels in .whl/ if that folder exists (for machines without
# a package index; fill it beforehand with
#   pip download -d .whl optuna sqlalchemy pandas safetensors scikit-image numba tqdm scipy
# ), else from the package index. Then, in about 3-5 minutes on an H200:
#   1. the evaluator at SPair size on the GPU (eager chain) and on the machine's CPU (fused
#      chain), with the add-pass time of each device: bench_evaluator.py;
#   2. GPU-vs-CPU agreement on 20 demo pairs: gpu_agreement.py;
#   3. a short beam search at SPair size on the GPU, extrapolated to the full SPair-71k
#      ResNet-101 search: bench_beam.py.
# The fused chain runs on the CPU only; on a GPU the eager chain is what scotsearch runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
TABLE="$OUT/gpu_check.txt"
: > "$LOG"

pipargs=(-q)
[ -d .whl ] && pipargs+=(--no-index --find-links .whl)
echo "== install" | tee -a "$LOG"
"$PY" -m pip install "${pipargs[@]}" optuna sqlalchemy pandas safetensors scikit-image numba \
    tqdm scipy joblib pillow >> "$LOG" 2>&1 || echo "dependency install failed (see $LOG)"
"$PY" -m pip install -q --no-deps --no-build-isolation -e . >> "$LOG" 2>&1 \
    || echo "scotsearch install failed (see $LOG)"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" | tee "$TABLE" \
    || { echo "no usable CUDA device: nothing to check"; exit 2; }

run() {  # name, timeout seconds, command...
    local name=$1 t=$2; shift 2
    echo "== $name" | tee -a "$TABLE"
    if ! timeout "$t" "$@" > "$OUT/$name.txt" 2>> "$LOG"; then
        echo "   FAILED or timed out (${t}s); see $LOG" | tee -a "$TABLE"
    fi
    grep -v "it/s\]\|cand/s" "$OUT/$name.txt" | tee -a "$TABLE"
}
run evaluator-gpu 150 "$PY" benchmarks/bench_evaluator.py --device cuda --engines eager \
    --pairs 3 --subsets 16
run evaluator-cpu-fused 150 "$PY" benchmarks/bench_evaluator.py --device cpu --engines fused \
    --pairs 1 --subsets 16
run agreement 200 "$PY" benchmarks/gpu_agreement.py --pairs 20 --image-side 300
run beam-gpu 200 "$PY" benchmarks/bench_beam.py --device cuda --engines eager --pairs 64 \
    --max-candidates 64
echo "table: $TABLE"
