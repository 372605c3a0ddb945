#!/usr/bin/env bash
# The command line on a CUDA GPU, end to end (about 1-3 minutes; run after gpu_check.sh): on a GPU
# machine `stereodrr render` and `stereodrr register` default to --device cuda, and registration
# runs the Triton kernels' gradients, BFGS and the pyramid there.
#   1. a torso phantom (3 mm voxels) and a 5 deg pair of 256 x 224 views (0.6 mm pixels);
#   2. its two views rendered on CUDA and on the CPU (default mode): the largest difference;
#   3. registered on CUDA from a start 2 deg / 3 mm off to the CUDA views (default pyramid), with
#      the errors against the true pose (the CPU reaches mTRE 0.012 mm on the same case,
#      2026-12-06), then the same on the CPU to compare the two poses.
# Usage: experiments/gpu_cli_check.sh [OUT_DIR]   (default out/gpu_cli_check; PYTHON=... picks the
# interpreter). Writes OUT_DIR/gpu_cli_check.log and each command's outputs under OUT_DIR.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu_cli_check}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
LOG="$OUT/gpu_cli_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$LOG"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_cli_check: torch sees no CUDA device; run this on a GPU machine" | tee "$LOG" >&2
  exit 2
fi
FAILED=0
step() {  # step NAME SECONDS COMMAND...: run, log the tail and the exit status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.out" 2>&1
  local rc=$?
  tail -n 6 "$OUT/$name.out" | tr '\r' '\n' | tail -n 6 >> "$LOG"
  echo "[$name] rc=$rc, $((SECONDS - t0)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || FAILED=1
}
SD=("$PY" -m stereodrr)
POSE='{"schema": "stereodrr.pose/1", "center": [0, 0, 0], "rotvec_deg": [%s], "translation_mm": [%s]}'
printf "$POSE" "2.0, -1.0, 1.5" "3.0, -2.0, 1.0" > "$OUT/init.json"
printf "$POSE" "0, 0, 0" "0, 0, 0" > "$OUT/truth.json"

step phantom 120 "${SD[@]}" phantom torso --spacing 3 --supersample 1 --format mha -o "$OUT/ct"
step rig 60 "${SD[@]}" rig --angle 5 --size 256 224 --pixel 0.6 -o "$OUT/rig.json"
step render_cuda 120 "${SD[@]}" render --ct "$OUT/ct/hu.mha" --rig "$OUT/rig.json" --device cuda -o "$OUT/img_cuda"
step render_cpu 120 "${SD[@]}" render --ct "$OUT/ct/hu.mha" --rig "$OUT/rig.json" --device cpu -o "$OUT/img_cpu"
"$PY" - "$OUT" <<'PYEOF' 2>&1 | tee -a "$LOG"
import sys
import numpy as np
import SimpleITK as sitk
out = sys.argv[1]
for view in ("left", "right"):
    try:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(f"{out}/img_{d}/{view}.tif")).astype(np.float64) for d in ("cuda", "cpu"))
    except RuntimeError as exc:
        sys.exit(f"render comparison: {exc}")
    print(f"render {view}: CUDA vs CPU max |diff| {np.abs(a - b).max():.3g} (image max {b.max():.3g})")
PYEOF
COMMON=(--ct "$OUT/ct/hu.mha" --rig "$OUT/rig.json" --images "$OUT/img_cuda/left.tif" "$OUT/img_cuda/right.tif"
        --init "$OUT/init.json" --truth "$OUT/truth.json" --quiet)
step register_cuda 240 "${SD[@]}" register "${COMMON[@]}" --device cuda -o "$OUT/reg_cuda"
step register_cpu 240 "${SD[@]}" register "${COMMON[@]}" --device cpu -o "$OUT/reg_cpu"
grep -h "errors:" "$OUT/register_cuda.out" "$OUT/register_cpu.out" 2>/dev/null | sed 's/^/register (cuda, then cpu) /' | tee -a "$LOG"
echo "gpu_cli_check: $([ $FAILED -eq 0 ] && echo 'every step ran' || echo 'a step FAILED'); log $LOG" | tee -a "$LOG"
exit $FAILED
