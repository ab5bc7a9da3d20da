#!/bin/bash
# Block-sparse attention and dropout in the CUDA forward (kernels/flash_fwd.cu FA_BLOCK_MASK / FA_DROPOUT,
# kernels/dropout_mask.cu) on the GPU machine. Run from the repository root with a build folder made here with
# the CUDA backend and the tests (meson setup build-gpu; then `meson introspect build-gpu --tests >
# build-gpu/tests.json`, which dev/run_tests.py reads) and .device-deps carried:
#   dev/cu_sparse_gpu.sh [build-dir]       default build-gpu
# Steps: nvidia-smi -L; the tests named forward, sparse and dropout (with their meson environment, through
# dev/run_tests.py) under FLASHATTN_TEST_BACKEND=cuda, logs under $OUT/logs; then flashattn-bench forward
# timings at D=128 S=8192 B=2 H=16 f16, non-causal and causal: dense (density 1) against random block masks
# of density 0.5 / 0.25 / 0.1 and the butterfly and local-global patterns (block size 128, then 64), and
# dropout 0.1 dense and with the masks. Compare the TFLOP/s column: the bench counts only visible scores'
# FLOPs, so a mask that skips what it should keeps TFLOP/s near dense (time falls with the density), and
# the density-1 row must match the dense kernel's usual numbers (dev/gpu_check.sh, BENCHMARKS.md).
# Exit status: the number of steps that failed.
set -u
build=${1:-build-gpu}
bench=$build/tools/flashattn-bench
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out/logs"
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$(mktemp -d /tmp/flashattn-cache.XXXXXX)}
failed=0
step() {
  echo "=== $*"
  "$@"
  local rc=$?
  if [ $rc != 0 ]; then echo "=== FAILED ($rc): $*"; failed=$((failed + 1)); fi
}
nvidia-smi -L || echo "cu_sparse_gpu: nvidia-smi failed"

# The tests: run_tests.py runs every test of BUILD/tests.json; give it a folder holding only the three.
if [ -f "$build/tests.json" ]; then
  sel=$(mktemp -d /tmp/cu-sparse-tests.XXXXXX)
  python3 - "$build/tests.json" "$sel/tests.json" <<'EOF'
import json, sys
tests = json.load(open(sys.argv[1]))
keep = [t for t in tests if t['name'] in ('forward', 'sparse', 'dropout')]
print('cu_sparse_gpu: tests', ', '.join(t['name'] for t in keep) or 'none found')
json.dump(keep, open(sys.argv[2], 'w'))
EOF
  # The build tree's paths were recorded where it was made (/work/main); run_tests.py rewrites them.
  python3 dev/run_tests.py "$sel" /work/main "$out/logs" cuda FLASHATTN_TEST_BACKEND=cuda | tee "$out/tests-sparse-cuda.txt"
  if grep -Eq "rc=[^0]|[1-9][0-9]* failed" "$out/tests-sparse-cuda.txt"; then
    echo "=== FAILED: tests (logs: $out/logs/cuda-*.log)"
    for f in "$out"/logs/cuda-*.log; do grep -m 20 "^not ok" "$f" | sed "s|^|$(basename "$f"): |"; done
    failed=$((failed + 1))
  fi
else
  echo "=== FAILED: $build/tests.json missing (meson introspect $build --tests > $build/tests.json)"
  failed=$((failed + 1))
fi

if [ -x "$bench" ]; then
  shape="--backend cuda --algos flash --modes fwd --dtypes f16 --head-dims 128 --seqlens 8192 --batch 2 --heads 16"
  # (Into files, then shown: a step inside a pipeline would count its failure in a subshell.)
  step "$bench" $shape --causal 0,1 --block-density 1,0.5,0.25,0.1 --pattern butterfly,local-global \
    --block-size 128 --iters 10 > "$out/bench-sparse-128.csv"
  cat "$out/bench-sparse-128.csv"
  step "$bench" $shape --causal 0 --block-density 1,0.25 --pattern butterfly --block-size 64 --iters 10 \
    > "$out/bench-sparse-64.csv"
  cat "$out/bench-sparse-64.csv"
  step "$bench" $shape --causal 0,1 --block-density 1,0.25 --pattern butterfly --dropout 0,0.1 --iters 10 \
    > "$out/bench-dropout.csv"
  cat "$out/bench-dropout.csv"
else
  echo "=== FAILED: $bench not found"
  failed=$((failed + 1))
fi
echo "=== cu_sparse_gpu: $failed step(s) failed"
exit "$failed"
