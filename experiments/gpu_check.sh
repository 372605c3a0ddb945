#!/usr/bin/env bash
# GPU check of the renderer, for a session that has a CUDA GPU (about 4-7 minutes, at most 8):
#   1. the render tests on CUDA (the Triton kernels -- trilinear, Joseph, exact, forward and
#      backward, deterministic gradients, torch.compile(fullgraph=True) of each op -- compiled for
#      real, the marker spheres on the GPU; off a GPU they run in Triton's interpreter), as a CSV
#      of outcomes;
#   2. the benchmark's CUDA rows: stereodrr Triton (default = Joseph, trilinear, exact) and torch
#      on CUDA against nanodrr's Triton backend (200^2 forward, 512^2 forward and 2-view
#      forward+backward), peak CUDA memory.
# Needs a Python with stereodrr's test and bench dependencies, a CUDA torch, triton and nanodrr
# (pip install -e '.[gpu,bench,test]' on a CUDA torch; on this workplace's GPU machines, which
# fetch nothing, the three calls of experiments/gpu_payload.sh). Usage:
#   experiments/gpu_check.sh [OUT_DIR]      (default out/gpu_check; PYTHON=... to pick the interpreter,
#                                           default python3)
# Writes OUT_DIR/render_tests_cuda.csv, OUT_DIR/renderer_benchmark.csv (+ .png), OUT_DIR/gpu_check.log,
# each as its step ends (give the device tool's $OUT: a call cut short still returns what ran).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# On this workplace's GPU machines: the packages experiments/gpu_install.sh put there, and the CT.
GPU_SITE="${GPU_SITE:-/tmp/stereodrr-gpu-site}"
[ -d "$GPU_SITE" ] && export PYTHONPATH="$PYTHONPATH:$GPU_SITE"
[ -f .gpu_c/cxr.nii.gz ] && export STEREODRR_CHEST_CT="${STEREODRR_CHEST_CT:-$PWD/.gpu_c/cxr.nii.gz}"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: torch sees no CUDA device; run this on a GPU machine" | tee "$LOG" >&2
  exit 2
fi
"$PY" -c "import torch, triton; print('GPU', torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)" | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$LOG"
# What backend="auto" renders with on CUDA (each mode, float32): "triton" unless its check failed,
# whose warning names why.
"$PY" -c "
import torch
from stereodrr.render.backends import select_backend
for mode in ('joseph', 'trilinear', 'exact'):
    print('auto on cuda,', mode + ':', select_backend('auto', torch.device('cuda'), torch.float32, mode).name)
" 2>&1 | tee -a "$LOG"

# 1. Render tests on CUDA (the default selection, without the polychromatic physics tests).
#    junit XML -> CSV of (test, outcome, seconds, message).
timeout 240 "$PY" -m pytest -q -p no:cacheprovider \
  tests/render/test_backends.py tests/render/test_accuracy.py tests/render/test_gradients.py \
  tests/render/test_exact_kernel.py tests/render/test_triton_joseph_kernel.py \
  tests/render/test_render_api.py tests/render/test_memory.py tests/render/test_markers.py \
  --junitxml="$OUT/render_tests_cuda.xml" 2>&1 | tail -n 30 | tee -a "$LOG"
TESTS_RC=${PIPESTATUS[0]}
"$PY" - "$OUT" <<'PYEOF'
import csv, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
try:
    root = ET.parse(f"{out}/render_tests_cuda.xml").getroot()
except (OSError, ET.ParseError) as exc:
    sys.exit(f"no junit XML ({exc}): the test run was cut short")
with open(f"{out}/render_tests_cuda.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["test", "outcome", "seconds", "message"])
    for case in root.iter("testcase"):
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome, msg = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], (el.get("message") or "")[:300]
        w.writerow([f"{case.get('classname')}::{case.get('name')}", outcome, case.get("time"), msg])
print(f"wrote {out}/render_tests_cuda.csv")
PYEOF

# 2. The benchmark's CUDA rows only (nanodrr triton is the peer; CPU rows are measured elsewhere).
timeout 200 "$PY" experiments/benchmark_renderer.py --out "$OUT" --sizes 200 512 --repeats 5 \
  --peers nanodrr --only CUDA --joseph-slices 2>&1 | tail -n 40 | tee -a "$LOG"
BENCH_RC=${PIPESTATUS[0]}

echo "gpu_check: tests rc=$TESTS_RC, benchmark rc=$BENCH_RC; results in $OUT" | tee -a "$LOG"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
