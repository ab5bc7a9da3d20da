#!/bin/bash
# Block-sparse attention and dropout in the CUDA backward (kernels/flash_bwd.cu, FA_BLOCK_MASK / FA_DROPOUT) on the
# GPU machine. Run from the repository root with a carried build folder made with the CUDA backend and the tests:
#   dev/cu_bwd_sparse_gpu.sh [build-dir]        default build-gpu
# Steps, each on the CUDA backend only (FLASHATTN_TEST_BACKEND=cuda), the test binaries run directly with
# meson's test environment (TAP on stdout):
#   1. tests/test_backward, test_sparse, test_dropout: tensor-core dK/dV where the library takes it (f16/bf16,
#      D <= 128), each case's own dQ scheme (atomic, or separate where a case asks for deterministic);
#   2. the same with FLASHATTN_CUDA_BWD_DQ=separate: the deterministic dQ kernel (flash_bwd_dq_simt) for every call;
#   3. the same with FLASHATTN_CUDA_BWD=simt (CUDA-core dK/dV for every dtype), atomic, then separate;
#   4. timings, flashattn-bench fwd+bwd and bwd alone, D = 128, S = 8192, f16, B = 2, H = 16, non-causal:
#      dense, random blocks at density 0.5, the butterfly pattern (block size 128), each without dropout and
#      with p = 0.1; then the same causal.
# Output: the console (the "not ok" lines of each suite and a count), and under $OUT (or /tmp/cu-sparse-out) the
# full TAP logs and the CSV. Exit status: the number of steps that failed.
set -u
build=${1:-build-gpu}
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/cu-sparse-out}
mkdir -p "$out"
export FLASHATTN_TEST_BACKEND=cuda FLASHATTN_BACKEND=cuda
export CK_TAP_LOG_FILE_NAME=- CK_VERBOSITY=silent CK_FORK=no
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-/tmp/flashattn-cache-sparse}
nvidia-smi -L || echo "cu_bwd_sparse_gpu: nvidia-smi failed"
failed=0
summary=()

# suite NAME ENV...: run tests/test_NAME with the extra environment, keep its TAP, print what failed.
suite() {
  local name=$1 tag=$2
  shift 2
  local prog=$build/tests/test_$name log=$out/$name-$tag.tap
  if [ ! -x "$prog" ]; then
    echo "=== $name ($tag): $prog not found"
    summary+=("$name $tag: missing")
    failed=$((failed + 1))
    return
  fi
  echo "=== $name ($tag): $*"
  local start=$SECONDS
  env "$@" timeout 900 "$prog" > "$log" 2>&1
  local rc=$?
  grep -E '^not ok|^# ' "$log" | grep -v '^# backend opencl' | head -40
  local line="$name $tag: rc $rc, $(grep -c '^ok' "$log") ok, $(grep -c '^not ok' "$log") not ok, $((SECONDS - start)) s"
  echo "=== $line"
  summary+=("$line")
  [ $rc != 0 ] && failed=$((failed + 1))
}

for name in backward sparse dropout; do
  suite $name tc-atomic FLASHATTN_CUDA_BWD=
  suite $name tc-separate FLASHATTN_CUDA_BWD= FLASHATTN_CUDA_BWD_DQ=separate
  suite $name simt-atomic FLASHATTN_CUDA_BWD=simt
  suite $name simt-separate FLASHATTN_CUDA_BWD=simt FLASHATTN_CUDA_BWD_DQ=separate
done

bench=$build/tools/flashattn-bench
if [ -x "$bench" ]; then
  for causal in 0 1; do
    echo "=== flashattn-bench causal $causal"
    "$bench" --backend cuda --algos flash --modes bwd,fwdbwd --dtypes f16 --head-dims 128 --seqlens 8192 \
      --batch 2 --heads 16 --causal $causal --block-density 1,0.5 --pattern butterfly --block-size 128 \
      --dropout 0,0.1 --iters 10 --warmup 2 | tee "$out/bench-causal$causal.csv"
    rc=${PIPESTATUS[0]}
    [ "$rc" != 0 ] && failed=$((failed + 1)) && summary+=("bench causal $causal: rc $rc")
  done
else
  echo "=== $bench not found: no timings"
  failed=$((failed + 1))
fi
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "=== cu_bwd_sparse_gpu: $failed step(s) failed"
exit "$failed"
