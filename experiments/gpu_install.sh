#!/usr/bin/env bash
# On a GPU machine: install the wheels of one payload folder (experiments/gpu_payload.sh) into
# GPU_SITE, which gpu_check.sh and gpu_cli_check.sh put on PYTHONPATH. No index, no dependencies:
# the payload names every package the machine's image lacks.
# Usage: bash experiments/gpu_install.sh .gpu_a
set -eu -o pipefail
cd "$(dirname "$0")/.."
GPU_SITE="${GPU_SITE:-/tmp/stereodrr-gpu-site}"
PY="${PYTHON:-python3}"
dir="${1:?usage: gpu_install.sh PAYLOAD_DIR}"
ls "$dir"/*.whl > /dev/null || { echo "gpu_install: no wheels in $dir (was it carried?)" >&2; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU_SITE" "$dir"/*.whl
echo "gpu_install: $(ls "$dir"/*.whl | wc -l) wheel(s) from $dir into $GPU_SITE"
