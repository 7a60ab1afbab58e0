#!/usr/bin/env bash
# The GPU checks, for a session that is lent the GPU machine (NOT RUN YET: none was).
#
#   bash benchmarks/device_run.sh tests|suite|pipeline|sweep|all      (results under $OUT)
#
# Before it, in the same warm machine: onnxruntime's CUDA provider as wheel parts, made here by
# `../shared/tools/device-wheels onnxruntime-gpu==1.31.1` and copied to $HOME/w one part per
# call (that tool prints the calls). This script reassembles and installs them once. The
# machine already has torch (CUDA), JAX, onnx, click, rich, msgpack, pytest and hypothesis, so
# the package runs from the checkout (PYTHONPATH) with nothing else installed. Each step fits
# the 10-minute call limit on its own; at most 8 files come back from $OUT.
set -uo pipefail
step=${1:-all}
OUT=${OUT:-device-results}
scratch=$(mktemp -d)  # outputs that need not come back
mkdir -p "$OUT"

if [ -f "$HOME/w/names.txt" ] && [ ! -d "$HOME/site/onnxruntime" ]; then
  (cd "$HOME/w" && cat part* > all.bin && python3 - <<'PY'
import os
names = open("names.txt").read().split()
sizes = [int(s) for s in open("sizes.txt").read().split()]
data = open("all.bin", "rb")
os.makedirs("whl", exist_ok=True)
for name, size in zip(names, sizes):
    open("whl/" + name, "wb").write(data.read(size))
PY
  ) && python3 -m pip install -q --no-index --no-deps --target "$HOME/site" "$HOME"/w/whl/*.whl
fi
export PYTHONPATH="$HOME/site:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, onnxruntime as o; print('torch', torch.__version__, \
'onnxruntime', o.__version__, o.get_available_providers())"
  git log --oneline -1 2>/dev/null
} > "$OUT/env.txt" 2>&1

run_tests() {
  python3 -m pytest -q -p no:cacheprovider -m "gpu or trt" tests/test_gpu.py -rs 2>&1 \
    | tee "$OUT/pytest_gpu.log"
}

run_suite() {
  OUT="$OUT" python3 benchmarks/gpu_suite.py 2>&1 | tee "$OUT/gpu_suite.log"
}

run_pipeline() {  # issue 4: --target ort-cuda at 70 % on every example, the report's speedups
  for name in s5_digits s4d_keywords s5_listops; do
    task=$(python3 -c "import json; print(json.load(open('examples/models.json'))['$name']['task'])")
    python3 -m aire_export "examples/checkpoints/$name.pt" --ratio 0.7 --target ort-cuda \
      --data "examples/data/${task}_eval.npz" --out "$scratch/pipeline-$name" --json \
      > "$OUT/pipeline_$name.json" 2> "$scratch/pipeline-$name.log"
    echo "$name: exit $? ($(tail -1 "$scratch/pipeline-$name.log"))" >> "$OUT/env.txt"
  done
}

run_sweep() {  # issue 5: 20 ratios x 5 methods on the largest example, evaluated on the GPU
  /usr/bin/time -f "sweep wall %e s" python3 -m aire_export sweep examples/checkpoints/s5_listops.pt \
    --data examples/data/listops_eval.npz --methods aire,last,hinf-global,magnitude-global,random \
    --ratios 0:0.95:0.05 --device cuda --batch-size 256 --out "$scratch/sweep-listops" 2>&1 \
    | tail -40 > "$OUT/sweep_cuda.log"
}

case "$step" in
  tests) run_tests ;;
  suite) run_suite ;;
  pipeline) run_pipeline ;;
  sweep) run_sweep ;;
  all) run_tests; run_pipeline; run_sweep; run_suite ;;
  *) echo "usage: $0 tests|suite|pipeline|sweep|all" >&2; exit 2 ;;
esac
