#!/usr/bin/env bash
# The first GPU check, in one device call of under 9 minutes: the CUDA tests, one bench run
# (model-only, streaming vs naive, end to end) and `vseg run` on the example with NVDEC asked for.
# Here, once:  ../shared/tools/device-prep clean video
# Device tool: bash benchmarks/device_check.sh   (carry .device; logs and JSON land in $OUT)
set -uo pipefail
out=${OUT:-benchmarks/results/device}
mkdir -p "$out"
if [ -d .device/whl ] && ls .device/whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .device/whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1; local rc=$?
    echo "== $name: rc=$rc $((SECONDS - t0)) s"; tail -n 8 "$out/$name.log"; }
# 1. Every test that needs CUDA (marked gpu, or skipped without it).
step gpu_tests 200 python3 -m pytest -q -p no:cacheprovider -rs \
    tests/test_cuda_shim.py tests/test_train.py tests/test_engine.py tests/test_video.py tests/test_sources.py \
    -k "gpu or cuda or hwaccel or nvdec or nv12 or precision or bf16"
# 2. One bench: model-only fp32/bf16, temporal session vs naive, end to end on the example.
step bench 230 python3 -m vsegcli bench --gpu 0 -m mrcfa-b0,stt-effl0,segformer-b0,effl0 --size 480x864 \
    --precision fp32,bf16 --frames 100 --json "$out/gpu_bench_480x864.json"
# 3. vseg run on CUDA: shipped default, NVDEC asked for (auto), labels compared with the CPU run.
step run_gpu 60 python3 -m vsegcli run examples/bikes.mp4 --gpu 0 -o "$out/bikes_gpu.mp4" \
    --labels-dir /tmp/lab_gpu --json --quiet
cp /tmp/lab_gpu/.vseg-labels.json "$out/" 2>/dev/null
step run_cpu 90 python3 -m vsegcli run examples/bikes.mp4 --device cpu --max-frames 60 --no-video \
    --labels-dir /tmp/lab_cpu --json --quiet
python3 - "$out" <<'PY'
import sys, numpy as np, cv2, pathlib, json
a, b = pathlib.Path("/tmp/lab_gpu"), pathlib.Path("/tmp/lab_cpu")
agree = [float((cv2.imread(str(a / p.name), 0) == cv2.imread(str(p), 0)).mean()) for p in sorted(b.glob("*.png"))]
res = {"frames": len(agree), "min_agreement": min(agree) if agree else None, "mean_agreement": float(np.mean(agree)) if agree else None}
print("== gpu vs cpu labels (fp32):", res)
json.dump(res, open(pathlib.Path(sys.argv[1]) / "gpu_vs_cpu_labels.json", "w"))
PY
rm -f "$out/bikes_gpu.mp4"
