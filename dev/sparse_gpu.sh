#!/bin/bash
# Block-sparse attention and dropout on the GPU machine, from the repository root with the build folder and
# .device-deps carried (BUILD/tests.json written here by `meson introspect BUILD --tests`):
#   dev/sparse_gpu.sh BUILD STEP...
# Steps:
#   tests    the sparse and dropout suites with every backend in one process (so the CUDA-vs-OpenCL test runs)
#   modes    sparse, dropout and backward on CUDA with the deterministic dQ kernel, then the CUDA-core backward
#   bench    CUDA: block-sparse against dense (random densities 1/2, 1/4, 1/8, butterfly; blocks of 128) at
#            D = 64, B = 1, H = 16 up to S = 65536, fwd and fwd+bwd; dropout 0 vs 0.1; PyTorch's dense kernels
#   opencl   the same on NVIDIA's OpenCL, shorter
# Output: the console and, under $OUT (or /tmp/sparse-out), logs and CSV files.
set -u
build=$1
shift
source .device-deps/activate
out=${OUT:-/tmp/sparse-out}
mkdir -p "$out"
export FLASHATTN_CACHE_DIR=/tmp/flashattn-cache
bench=$build/tools/flashattn-bench
sparse_shape="--algos flash --dtypes f16 --head-dims 64 --causal 0 --batch 1 --heads 16 --block-size 128"
dropout_shape="--algos flash --dtypes f16 --head-dims 64,128 --causal 0,1 --batch 2 --heads 16"

# A tests.json holding only the named tests, for dev/run_tests.py.
select_tests() {
  local dir=$1
  shift
  mkdir -p "$dir"
  python3 - "$build/tests.json" "$dir/tests.json" "$@" <<'EOF'
import json, sys
keep = [t for t in json.load(open(sys.argv[1])) if t['name'] in sys.argv[3:]]
json.dump(keep, open(sys.argv[2], 'w'))
EOF
}

for step in "$@"; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    tests)
      select_tests /tmp/sel-sd sparse dropout
      python3 dev/run_tests.py /tmp/sel-sd /work/main "$out/logs" both | tee "$out/tests-both.txt"
      grep -h "backends agree\|every backend" "$out"/logs/both-dropout.log | head -4 ;;
    modes)
      select_tests /tmp/sel-m backward sparse dropout
      python3 dev/run_tests.py /tmp/sel-m /work/main "$out/logs" cuda-sepdq FLASHATTN_TEST_BACKEND=cuda \
        FLASHATTN_CUDA_BWD_DQ=separate | tail -4
      python3 dev/run_tests.py /tmp/sel-m /work/main "$out/logs" cuda-simt FLASHATTN_TEST_BACKEND=cuda \
        FLASHATTN_CUDA_BWD=simt | tail -4 ;;
    bench)
      "$bench" --backend cuda $sparse_shape --modes fwd,fwdbwd --seqlens 4096,16384,65536 \
        --block-density 1,0.5,0.25,0.125 --pattern butterfly --iters 5 --warmup 1 > "$out/sparse-cuda.csv"
      cat "$out/sparse-cuda.csv"
      "$bench" --backend cuda $dropout_shape --modes fwd,fwdbwd --seqlens 4096,16384 --dropout 0,0.1 \
        --iters 10 > "$out/dropout-cuda.csv"
      cat "$out/dropout-cuda.csv"
      python3 .device-deps/sdpa_anchor.py --modes fwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 --total-tokens 1 \
        --model-dim 1024 --seqlens 4096,16384,65536 --backends flash,cudnn --iters 5 > "$out/anchor-sparse.csv"
      python3 .device-deps/sdpa_anchor.py --modes fwd,fwdbwd --dtypes f16 --head-dims 64,128 --causal 0,1 \
        --total-tokens 8192 --model-dim 2048 --seqlens 4096 --backends flash --iters 10 > "$out/anchor-dropout.csv"
      cat "$out/anchor-sparse.csv" "$out/anchor-dropout.csv" ;;
    opencl)
      "$bench" --backend opencl $sparse_shape --modes fwd --seqlens 4096,16384,65536 \
        --block-density 1,0.5,0.25,0.125 --pattern butterfly --iters 3 --warmup 1 > "$out/sparse-opencl-fwd.csv"
      "$bench" --backend opencl $sparse_shape --modes fwdbwd --seqlens 4096,16384 \
        --block-density 1,0.5,0.25,0.125 --pattern butterfly --iters 3 --warmup 1 > "$out/sparse-opencl-fwdbwd.csv"
      "$bench" --backend opencl --algos flash --dtypes f16 --head-dims 64 --causal 0 --batch 2 --heads 16 \
        --modes fwd,fwdbwd --seqlens 4096 --dropout 0,0.1 --iters 3 --warmup 1 > "$out/dropout-opencl.csv"
      cat "$out"/sparse-opencl-*.csv "$out/dropout-opencl.csv" ;;
    *) echo "unknown step $step" ;;
  esac
  echo "=== $step took $((SECONDS - start)) s"
done
