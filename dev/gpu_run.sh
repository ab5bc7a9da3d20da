#!/bin/bash
# Everything one GPU-machine call checks and times, from the repository root with the build folder and
# .device-deps carried (see ../shared/device/pack):
#   dev/gpu_run.sh BUILD STEP...
# Steps: info | tests | cuda | std | bench | paper-cuda | paper-opencl. Output: the console (a summary last)
# and, under $OUT (or /tmp/gpu-out), the logs and CSV files.
set -u
build=$1
shift
source .device-deps/activate
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export FLASHATTN_CACHE_DIR=/tmp/flashattn-cache POCL_CACHE_DIR=/tmp/pocl-cache
bench=$build/tools/flashattn-bench
shapes="--seqlens 512,1024,2048,4096,8192,16384 --head-dims 64,128 --dtypes f16,bf16 --causal 0,1"
summary=()
for step in "$@"; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    info) "$build/tools/flashattn-info" ;;
    tests)
      for b in cuda opencl; do
        python3 dev/run_tests.py "$build" /work/main "$out/logs" "$b" FLASHATTN_TEST_BACKEND=$b | tee "$out/tests-$b.txt"
        summary+=("$(tail -1 "$out/tests-$b.txt")")
      done ;;
    cuda) dev/gpu_check.sh "$build" > "$out/cuda-check.txt" 2>&1; summary+=("cuda check: $(tail -1 "$out/cuda-check.txt")")
          cat "$out/cuda-check.txt" | tail -40 ;;
    std) dev/std_check.sh "$build" > "$out/std-check.txt" 2>&1; summary+=("standard check: $(tail -1 "$out/std-check.txt")")
         tail -30 "$out/std-check.txt" ;;
    bench)
      "$bench" --backend cuda --algos flash --modes fwd,fwdbwd $shapes --iters 10 > "$out/bench-cuda.csv"
      python3 .device-deps/sdpa_anchor.py $shapes --modes fwd,fwdbwd --backends flash,cudnn --iters 10 > "$out/anchor.csv"
      "$bench" --backend opencl --algos flash --modes fwd,fwdbwd $shapes --iters 3 --warmup 1 > "$out/bench-opencl.csv"
      python3 dev/compare.py "$out/anchor.csv" "$out/bench-cuda.csv" "$out/bench-opencl.csv" | tee "$out/compare.txt" ;;
    paper-cuda)
      "$bench" --backend cuda --algos flash,standard --modes fwd,bwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 \
        --batch 1 --heads 16 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768,65536 --iters 5 \
        --plot "$out/paper-cuda.png" > "$out/paper-cuda.csv"
      python3 .device-deps/sdpa_anchor.py --modes fwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 --total-tokens 1 \
        --model-dim 1024 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768,65536 --iters 5 > "$out/paper-anchor.csv" ;;
    paper-opencl)
      "$bench" --backend opencl --algos flash,standard --modes fwd,bwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 \
        --batch 1 --heads 16 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768 --iters 3 --warmup 1 \
        --plot "$out/paper-opencl.png" > "$out/paper-opencl.csv" ;;
    *) echo "unknown step $step" ;;
  esac
  echo "=== $step took $((SECONDS - start)) s"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
