#!/usr/bin/env bash
# The second GPU check, in one device call of about 6 minutes: every CUDA path a user reaches
# that the first check (device_check.sh) did not run, on the shipped weights and real CamVid:
#   the whole test suite with CUDA visible (CamVid tests included), `vseg eval` on the GPU (fp32+TF32,
#   exact fp32, bf16) against the CPU numbers in weights/README.md, `vseg train` on the GPU
#   (bf16, stopped and resumed), `vseg run` with bf16 and micro-batches, and the section-3 benches
#   the first run left out (upstream protocol, batch 8, 1024x2048, end-to-end frame batches).
# Here, once:  ../shared/tools/device-prep clean video && benchmarks/device_camvid.sh
# Device tool: bash benchmarks/device_paths.sh [suite]   (carry .device; one archive lands in $OUT:
# the tool brings back at most 8 files). `suite` runs only step 1.
set -uo pipefail
only=${1:-all}
final=${OUT:-benchmarks/results/device}
out=$(mktemp -d)
trap 'tar czf "$final/device_paths.tgz" -C "$out" . && echo "== archive: $final/device_paths.tgz"' EXIT
mkdir -p "$final"
if [ -d .device/whl ] && ls .device/whl/*.whl >/dev/null 2>&1; then
    # into the interpreter's own site-packages: tests start subprocesses with a clean environment
    python3 -m pip install -q --no-index --no-deps .device/whl/*.whl
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 VSEG_CACHE_DIR=/tmp/vseg-cache
# The tests look for CamVid beside the checkout, as on the development machine.
if [ -d .device/camvid ] && [ ! -e /work/shared/data/camvid ]; then
    mkdir -p /work/shared/data && ln -s "$PWD/.device/camvid" /work/shared/data/camvid
fi
cam=/work/shared/data/camvid
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step() { local name=$1 limit=$2; shift 2; local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1; local rc=$?
    echo "== $name: rc=$rc $((SECONDS - t0)) s"; tail -n 6 "$out/$name.log"; }
# 1. The whole suite with CUDA visible (auto device = cuda where a test does not pin the CPU).
step suite 170 python3 -m pytest -q -p no:cacheprovider -n 14 -rfs --timeout 150 tests/
[ "$only" = suite ] && exit
# 2. eval on the GPU vs the CPU numbers (stt-effl0 66.86, mrcfa-effl0 65.68 on CamVid val).
for v in "fp32:" "exact:--no-fast-math" "bf16:--precision bf16"; do
    # shellcheck disable=SC2086
    step "eval_stt_${v%%:*}" 60 python3 -m vsegcli eval --dataset camvid --data-root $cam --gpu 0 \
        -c weights/stt-effl0-camvid.safetensors ${v#*:} --json "$out/eval_stt_${v%%:*}.json" --quiet
done
step eval_mrcfa_fp32 60 python3 -m vsegcli eval --dataset camvid --data-root $cam --gpu 0 \
    -c weights/mrcfa-effl0-camvid.safetensors --json "$out/eval_mrcfa_fp32.json" --quiet
# 3. train on the GPU: bf16, 20 steps stopped at 10 and resumed; the result runs in `vseg run`.
step train_a 90 python3 -m vsegcli train --arch stt-effl0 --init weights/stt-effl0-camvid.safetensors \
    --dataset camvid --data-root $cam --out /tmp/tr --iters 20 --batch 4 --val-every 10 --log-every 5 \
    --precision bf16 --device cuda:0 --workers 4 --stop-after 10 --quiet
step train_b 90 python3 -m vsegcli train --out /tmp/tr --resume --quiet
cp /tmp/tr/log.jsonl "$out/train_log.jsonl" 2>/dev/null
step run_trained 60 python3 -m vsegcli run examples/bikes.mp4 -c /tmp/tr/last.safetensors --gpu 0 --no-video \
    --labels-dir /tmp/lab_tr --max-frames 30 --json --quiet
# 4. vseg run: bf16 with micro-batches of 4 (labels + overlay video).
step run_bf16_fb4 60 python3 -m vsegcli run examples/bikes.mp4 --gpu 0 --precision bf16 --frame-batch 4 \
    -o /tmp/bikes_bf16.mp4 --labels-dir /tmp/lab_bf16 --json --quiet
# 5. The benches the first run left out (docs section 3), 100 timed frames each.
b() { local name=$1; shift; step "$name" 90 python3 -m vsegcli bench --gpu 0 "$@" --json "$out/$name.json"; }
b gpu_upstream_480x864 -m segformer-b0,mrcfa-b0 --size 480x864 --precision fp32 --protocol upstream --no-e2e --frames 100
b gpu_batch8_480x864 -m segformer-b0,mrcfa-b0,effl0 --size 480x864 --precision fp32,bf16 --batch 8 --no-e2e --frames 50
b gpu_large_1024x2048 -m segformer-b0,mrcfa-b0,stt-segformer-b0 --size 1024x2048 --precision fp32,bf16 --no-e2e --frames 50
b gpu_e2e_fb_480x864 -m mrcfa-b0,stt-effl0,effl0 --size 480x864 --precision bf16 --e2e-only --frame-batch 8 --frames 100
echo "== done in $SECONDS s"
