#!/usr/bin/env bash
# One-command GPU check: run as it is on a machine with one CUDA GPU (and torch installed).
#
#   bash benchmarks/gpu_check.sh            # table on stdout and in $OUT/gpu_check.txt
#
# Installs what the machine lacks without touching its torch: if a folder .whl/ holds wheels
# (for a machine without a package index; fill it beforehand on a machine with one, e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       optuna sqlalchemy alembic colorlog mako greenlet
# ) they are unpacked into a private folder put on PYTHONPATH; else the missing packages come
# from the package index. scotsearch itself runs from this checkout (PYTHONPATH). Then, in
# about 3-5 minutes on an H200:
#   1. the Triton chain against the eager chain on the GPU (tests/test_fused_gpu.py);
#   2. the evaluator at SPair size, eager and fused (Triton) chains, with the add-pass time:
#      bench_evaluator.py;
#   3. GPU-vs-CPU agreement on 20 demo pairs (the CPU's eager chain as the reference):
#      gpu_agreement.py;
#   4. a beam search at SPair size on the GPU with both engines, extrapolated to the full
#      SPair-71k ResNet-101 search: bench_beam.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
LOG="$OUT/gpu_check.log"
TABLE="$OUT/gpu_check.txt"
: > "$LOG"
export PYTHONUNBUFFERED=1

echo "== install" | tee -a "$LOG"
if [ -d .whl ]; then
    SITE=${SCOTSEARCH_SITE:-/tmp/scotsearch-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >> "$LOG" 2>&1 || echo "wheel install failed (see $LOG)"
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    "$PY" -m pip install -q optuna sqlalchemy pandas safetensors scikit-image numba tqdm \
        scipy joblib pillow pytest >> "$LOG" 2>&1 || echo "dependency install failed (see $LOG)"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'; \
print('gpu:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| triton', \
triton.__version__)" | tee "$TABLE" \
    || { echo "no usable CUDA device: nothing to check"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv >> "$TABLE" 2>> "$LOG"
nproc | sed 's/^/cpu cores: /' >> "$TABLE"

run() {  # name, timeout seconds, command...
    local name=$1 t=$2; shift 2
    echo "== $name" | tee -a "$TABLE"
    local t0=$SECONDS
    if ! timeout "$t" "$@" > "$OUT/$name.txt" 2>> "$LOG"; then
        echo "   FAILED or timed out (${t}s); see $LOG" | tee -a "$TABLE"
    fi
    grep -v "it/s\]\|cand/s\|s/it\]" "$OUT/$name.txt" | tail -n 40 | tee -a "$TABLE"
    echo "   ($((SECONDS - t0)) s)" | tee -a "$TABLE"
}
run tests-gpu 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py
run evaluator-gpu 100 "$PY" benchmarks/bench_evaluator.py --device cuda --engines eager,fused \
    --pairs 3 --subsets 24
run agreement 120 "$PY" benchmarks/gpu_agreement.py --pairs 20 --image-side 300
run beam-gpu 150 "$PY" benchmarks/bench_beam.py --device cuda --engines eager,fused \
    --pairs 64 --max-candidates 160 --chunk 64
echo "table: $TABLE"
