#!/usr/bin/env bash
# The command line on a CUDA GPU, end to end (about 2-5 minutes; run after gpu_check.sh): on a GPU
# machine `stereodrr render` and `stereodrr register` default to --device cuda, and registration
# runs the Triton kernels' gradients, BFGS and the pyramid there.
#   1. a torso phantom (3 mm voxels) and a 5 deg pair of 256 x 224 views (0.6 mm pixels);
#   2. its two views rendered on CUDA and on the CPU (default mode): the largest difference;
#   3. registered on CUDA from a start 2 deg / 3 mm off to the CUDA views (default pyramid), with
#      the errors against the true pose (the CPU reaches mTRE 0.012 mm on the same case,
#      2026-12-06), then the same on the CPU to compare the two poses;
#   4. the radius of the Autoscoper wrist sample tracked on frame 0099 with `track --device cuda`
#      from a start near its pose (the slow test's), then on the CPU: the two poses' difference.
# A step that warns that the Triton backend failed its check fails (the CPU fallback would agree
# with the CPU run and hide it). Steps past BUDGET seconds (default 300) are skipped, the CPU
# comparisons last.
# Usage: experiments/gpu_cli_check.sh [OUT_DIR]   (default out/gpu_cli_check; PYTHON=... picks the
# interpreter, default python3). Writes OUT_DIR/gpu_cli_check.log and each command's outputs under
# OUT_DIR.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/gpu_cli_check}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu_cli_check.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# On this workplace's GPU machines: the packages experiments/gpu_install.sh put there, and the CT.
GPU_SITE="${GPU_SITE:-/tmp/stereodrr-gpu-site}"
[ -d "$GPU_SITE" ] && export PYTHONPATH="$PYTHONPATH:$GPU_SITE"
[ -f .gpu_c/cxr.nii.gz ] && export STEREODRR_CHEST_CT="${STEREODRR_CHEST_CT:-$PWD/.gpu_c/cxr.nii.gz}"
: > "$LOG"
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_cli_check: torch sees no CUDA device; run this on a GPU machine" | tee "$LOG" >&2
  exit 2
fi
FAILED=0
BUDGET="${BUDGET:-300}"
step() {  # step NAME SECONDS COMMAND...: run, log the tail and the exit status
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -le 10 ]; then
    echo "[$name] skipped: the ${BUDGET} s budget is spent" | tee -a "$LOG"
    FAILED=1
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.out" 2>&1
  local rc=$?
  tail -n 6 "$OUT/$name.out" | tr '\r' '\n' | tail -n 6 >> "$LOG"
  echo "[$name] rc=$rc, $((SECONDS - t0)) s" | tee -a "$LOG"
  if grep -q "failed its check" "$OUT/$name.out"; then
    grep -h "failed its check" "$OUT/$name.out" | head -n 2 | tee -a "$LOG"
    rc=1
  fi
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

# The start of tests/track/test_bones_joint.py::test_track_command_on_the_wrist (rounded, made a
# rotation again) as the .tra row of frame 1.
"$PY" - "$OUT/start.tra" <<'PYEOF'
import sys
import numpy as np
start = np.array([[0.9546, 0.2678, -0.1308, 92.72], [-0.1607, 0.0930, -0.9826, 115.63],
                  [-0.2509, 0.9590, 0.1318, 59.24], [0.0, 0.0, 0.0, 1.0]])
u, _, vt = np.linalg.svd(start[:3, :3])
start[:3, :3] = u @ vt
np.savetxt(sys.argv[1], np.r_[np.full((1, 16), np.nan), start.reshape(1, 16)], delimiter=",")
PYEOF
TRACK=(track --trial tests/data/autoscoper_wrist/wrist.cfg --volume 0 --frames 1 --init "$OUT/start.tra"
       --no-beads --no-figures)
step track_cuda 300 "${SD[@]}" "${TRACK[@]}" --device cuda -o "$OUT/track_cuda"
# The CPU runs to compare with, last: a spent budget skips them first.
step register_cpu 240 "${SD[@]}" register "${COMMON[@]}" --device cpu -o "$OUT/reg_cpu"
grep -h "errors:" "$OUT/register_cuda.out" "$OUT/register_cpu.out" 2>/dev/null | sed 's/^/register (cuda, then cpu) /' | tee -a "$LOG"
step track_cpu 300 "${SD[@]}" "${TRACK[@]}" --device cpu -o "$OUT/track_cpu"
"$PY" - "$OUT" <<'PYEOF' 2>&1 | tee -a "$LOG"
import sys
import numpy as np
import pandas as pd
out = sys.argv[1]
try:
    a, b = (pd.read_csv(f"{out}/track_{d}/rad_dcm_cropped/frames.csv") for d in ("cuda", "cpu"))
except OSError as exc:
    sys.exit(f"track comparison: {exc}")
cols = [f"m{i}{j}" for i in range(3) for j in range(4)]
Ma, Mb = (t[cols].to_numpy(float).reshape(3, 4) for t in (a, b))
angle = np.degrees(np.arccos(np.clip((np.trace(Ma[:, :3].T @ Mb[:, :3]) - 1) / 2, -1, 1)))
print(f"track frame 1: CUDA vs CPU rotation {angle:.4f} deg, translation {np.linalg.norm(Ma[:, 3] - Mb[:, 3]):.4f} mm; "
      f"status {a['status'][0]} / {b['status'][0]}")
PYEOF
echo "gpu_cli_check: $([ $FAILED -eq 0 ] && echo 'every step ran' || echo 'a step FAILED'); log $LOG" | tee -a "$LOG"
exit $FAILED
