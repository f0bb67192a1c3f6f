#!/usr/bin/env bash
# CUDA checks of every GPU code path, in one short script for a lent GPU machine (minutes).
#
#   bash benchmarks/gpu_check.sh [WORKDIR]          # lrfb must be installed; needs CUDA
#
# 1. throughput figures first, on an otherwise idle GPU: training per stage of CR's paper
#    preset (bf16 autocast, channels_last; then with torch.compile) next to the measured conv
#    peak, and inference of every method (ms/face at batch 1, faces/s at batch 256);
# 2. a smoke run of every trainable method on CUDA (GPU-resident feeder, bf16, channels_last),
#    CR once more with --compile, `lrfb sr` on CUDA from the smoke run, and the benchmark
#    harness (Table 3: PSNR/SSIM, no FID weights needed) on CUDA.
# Every step prints PASS or FAIL and the script ends with the count of failures.
set -u
W=${1:-$(mktemp -d)}
mkdir -p "$W"
fails=0
step() {  # step NAME CMD...: run CMD, print its tail and PASS/FAIL
    local name=$1; shift
    echo "=== $name: $*"
    if "$@" >"$W/$name.log" 2>&1; then echo "PASS $name"; else echo "FAIL $name (rc $?)"; fails=$((fails + 1)); fi
    tail -n 25 "$W/$name.log"
}
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 2
step doctor lrfb doctor
if [ -z "${SKIP_BENCH:-}" ]; then  # SKIP_BENCH=1: only the functional checks
step bench_train python3 benchmarks/bench_train.py --method cr --preset paper --devices cuda --steps 30 --warmup 5 --big-batch 256
step bench_train_compile python3 benchmarks/bench_train.py --method cr --preset paper --devices cuda --steps 30 --warmup 10 --compile
step bench_inference python3 benchmarks/bench_inference.py --devices cuda --runs 300 --big-batch 256
fi
for m in cr vdsr srgan cyclegan lrgan; do
    step "smoke_$m" lrfb train "$m" --preset smoke --device cuda --out "$W/smoke-$m"
done
step smoke_cr_compile lrfb train cr --preset smoke --device cuda --compile --out "$W/smoke-cr-compile"
step sr_cuda lrfb sr "$W/smoke-cr" lrfacebench/sample/genuine_lr --out "$W/sr" --device cuda --batch 64
step table3_cuda lrfb benchmark --table 3 --methods bicubic --methods cr --device cuda --out "$W/bench" --runs "$W/bench-runs"
echo "gpu_check: $fails failure(s); logs in $W"
exit "$fails"
