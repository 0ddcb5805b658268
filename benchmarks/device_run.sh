#!/usr/bin/env bash
# One part of the GPU benchmarks on the lent device machine (no package index there).
#
# Here, once:   ../shared/tools/device-prep clean video      # imageio-ffmpeg wheel into .device/
# Then, with the device tool (carry .device), one call per part, each under 10 minutes:
#   bash benchmarks/device_run.sh gpu-models
#   bash benchmarks/device_run.sh gpu-compile
#   bash benchmarks/device_run.sh gpu-e2e
# JSON files, nvidia-smi and the log land in $OUT (the tool brings them back); then here:
#   python benchmarks/to_markdown.py <files_at>/*.json
set -euo pipefail
part=${1:?usage: device_run.sh gpu-models|gpu-compile|gpu-e2e}
out=${OUT:-benchmarks/results}
mkdir -p "$out"
if [ -d .device/whl ] && ls .device/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi > "$out/nvidia-smi-$part.txt" 2>&1 || true
VSEG="python3 -m vsegcli" bash benchmarks/run_all.sh "$part" "$out" 2>&1 | tee "$out/log-$part.txt"
