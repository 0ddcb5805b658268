#!/usr/bin/env bash
# Produce the JSON behind docs/PERFORMANCE.md.
#
#   benchmarks/run_all.sh cpu [OUTDIR]   # the 2-core CPU tables (about an hour there)
#   benchmarks/run_all.sh gpu [OUTDIR]   # the GPU (H100) tables: run on the GPU machine
#   benchmarks/run_all.sh gpu-models|gpu-compile|gpu-e2e [OUTDIR]   # the same in three parts
#   benchmarks/run_all.sh cpu-fixes [OUTDIR]   # docs 2.0: what host memory + BN folding bought (~10 min)
#
# OUTDIR defaults to benchmarks/results. Every file records the machine and the exact command;
# `python benchmarks/to_markdown.py OUTDIR/*.json` turns them into the doc's tables.
# Set VSEG to change how vseg is invoked (default: python -m vsegcli, no install needed).
set -euo pipefail

target=${1:-}
out=${2:-benchmarks/results}
vseg=${VSEG:-python -m vsegcli}
models=segformer-b0,mrcfa-b0,stt-segformer-b0,effl0,stt-effl0
mkdir -p "$out"

run() {  # run NAME ARGS...: one vseg bench call, its JSON in $out/NAME.json, load noted before
    local name=$1
    shift
    echo "== $name: uptime: $(uptime)" >&2
    $vseg bench "$@" --json "$out/$name.json"
}

case "$target" in
cpu)
    # A 2-core CPU shared with other work. Model-only rows use one torch thread: then the process
    # CPU time per step (reported beside wall time) hardly depends on other processes' load, while
    # with 2 threads OpenMP workers spin while waiting for each other and inflate it. Every row is
    # measured twice (interleaved, best kept) and every command run twice (a, b) to show the spread.
    for pass in a b; do
        run "cpu_models_256x448_$pass" --device cpu --threads 1 -m "$models" --size 256x448 \
            --frames 20 --warmup 3 --repeat 2 --no-e2e
    done
    for pass in a b; do
        run "cpu_mrcfa_480x864_$pass" --device cpu --threads 1 -m segformer-b0,mrcfa-b0 --size 480x864 \
            --frames 10 --warmup 2 --repeat 2 --no-e2e
    done
    # The three temporal models with their baselines, one round-robin run (docs 2.1).
    run cpu_unpaired_256x448 --device cpu --threads 1 -m mrcfa-b0,stt-segformer-b0,stt-effl0 --size 256x448 \
        --frames 20 --warmup 3 --repeat 2 --no-e2e
    # Ratios for a shared machine: streaming, naive and baseline steps interleaved in one loop
    # (--paired), so load changes hit all three alike; ratios are medians of per-step ratios.
    for pass in a b; do
        run "cpu_paired_256x448_$pass" --device cpu --threads 1 -m mrcfa-b0,stt-segformer-b0,stt-effl0 \
            --size 256x448 --frames 20 --warmup 3 --repeat 2 --paired --no-e2e
    done
    run cpu_paired_480x864 --device cpu --threads 1 -m mrcfa-b0 --size 480x864 \
        --frames 10 --warmup 2 --repeat 2 --paired --no-e2e
    run cpu_precision_256x448 --device cpu --threads 1 -m segformer-b0,mrcfa-b0 --size 256x448 \
        --precision fp32,bf16,fp16 --frames 10 --warmup 2 --no-e2e
    run cpu_upstream_256x448 --device cpu --threads 1 -m segformer-b0,mrcfa-b0 --size 256x448 \
        --protocol upstream --frames 20 --no-e2e
    # End to end with one torch thread too: on a loaded 2-core machine two OpenMP workers spend most
    # of their time spinning (measured: ~1.2 CPU-s per segformer-b0 frame instead of ~0.15), and the
    # pipeline's decode/encode threads get the other core. Two rounds per model, back to back
    # (inference alone, PNGs alone, end to end), best kept.
    run cpu_e2e_256x448 --device cpu --threads 1 -m "$models" --size 256x448 --frames 30 --warmup 2 \
        --repeat 2 --e2e-only --input examples/bikes.mp4
    ;;
cpu-fixes)
    # docs 2.0: host allocator x BatchNorm folding, all four variants interleaved, two rounds;
    # then the post-processing and SAME-padding comparisons (each in one process, interleaved).
    for pass in a b; do
        for variant in "before:--host-allocator system --no-fold-bn" "alloc:--no-fold-bn" \
                       "fold:--host-allocator system" "after:"; do
            # shellcheck disable=SC2086  # the flags are meant to split
            run "cpu_ab_${variant%%:*}_256x448_$pass" --device cpu --threads 1 -m "$models" --size 256x448 \
                --frames 20 --warmup 3 --no-e2e ${variant#*:}
        done
    done
    python benchmarks/postprocess.py | tee "$out/cpu_postprocess.txt"
    python benchmarks/same_padding.py | tee "$out/cpu_same_padding.txt"
    ;;
gpu | gpu-models | gpu-compile | gpu-e2e)
    # Three parts of under 10 minutes each on an H100 (the device tool's per-command limit);
    # `gpu` runs all three. The issue's targets are at 480x864 (VSPW), batch 1; 200 timed frames
    # after 5 warm-up.
    if [[ $target == gpu || $target == gpu-models ]]; then
        run gpu_models_480x864 --gpu 0 -m "$models" --size 480x864 --precision fp32,bf16 --repeat 3 --no-e2e
        run gpu_mrcfa_vspw_480x864 --gpu 0 -m mrcfa-b0,segformer-b0 --size 480x864 --precision bf16 \
            --classes 124 --repeat 3 --no-e2e
        run gpu_paired_480x864 --gpu 0 -m mrcfa-b0,stt-segformer-b0,stt-effl0 --size 480x864 --precision bf16 \
            --paired --repeat 3 --no-e2e
        run gpu_upstream_480x864 --gpu 0 -m segformer-b0,mrcfa-b0 --size 480x864 --precision fp32 \
            --protocol upstream --no-e2e
        run gpu_batch8_480x864 --gpu 0 -m segformer-b0,mrcfa-b0 --size 480x864 --precision bf16 --batch 8 --no-e2e
        # What BatchNorm folding buys on the GPU (docs 2.0 measured it on CPU).
        run gpu_no_fold_480x864 --gpu 0 -m effl0,stt-effl0 --size 480x864 --precision bf16 --no-fold-bn --no-e2e
        run gpu_large_1024x2048 --gpu 0 -m segformer-b0,mrcfa-b0,stt-segformer-b0 --size 1024x2048 \
            --precision bf16 --no-e2e
    fi
    if [[ $target == gpu || $target == gpu-compile ]]; then
        run gpu_compile_480x864 --gpu 0 -m segformer-b0,mrcfa-b0,effl0,stt-effl0 --size 480x864 --precision bf16 \
            --compile --channels-last --no-e2e
        # CUDA graphs for the fixed input size (the >= 1000 fps target, docs 3.3).
        run gpu_cuda_graphs_480x864 --gpu 0 -m segformer-b0,mrcfa-b0 --size 480x864 --precision bf16 \
            --compile reduce-overhead --no-e2e
    fi
    if [[ $target == gpu || $target == gpu-e2e ]]; then
        run gpu_e2e_480x864 --gpu 0 -m "$models" --size 480x864 --precision fp32,bf16 --repeat 3 --e2e-only \
            --input examples/bikes.mp4
        # What NVDEC and micro-batching buy (docs section 4).
        run gpu_e2e_software_decode_480x864 --gpu 0 -m mrcfa-b0,stt-effl0 --size 480x864 --precision bf16 \
            --repeat 3 --e2e-only --hwaccel none
        for fb in 4 8; do
            run "gpu_e2e_frame_batch${fb}_480x864" --gpu 0 -m mrcfa-b0,stt-effl0 --size 480x864 --precision bf16 \
                --repeat 3 --e2e-only --frame-batch "$fb"
        done
    fi
    ;;
*)
    echo "usage: $0 cpu|cpu-fixes|gpu|gpu-models|gpu-compile|gpu-e2e [OUTDIR]" >&2
    exit 2
    ;;
esac
echo "done: $out (render with: python benchmarks/to_markdown.py $out/*.json)" >&2
