#!/bin/bash
# Block-sparse attention and dropout in the OpenCL forward on the GPU machine (NVIDIA's OpenCL): f16/bf16 take
# the tensor-core kernel (kernels/flash_fwd_nv.cl, inline PTX: nothing here can compile it), f32 the portable
# kernel's GPU layout. Run from the repository root with a carried build folder made with OpenCL:
#   dev/cl_sparse_gpu.sh [build-dir]        default: build
# Steps:
#  1. dev/cl_sparse_check.c (float64 reference + host masks.h): fa_dropout_mask bits, then forward cases (block
#     sizes 1..1000, broadcast masks, causal, GQA, empty rows, dropout with and without masks) per dtype, with
#     FLASHATTN_OPENCL_NV_TC=force (a failed build of the tensor-core kernel is an error, not a fallback) and =0
#     (the portable kernel for every dtype).
#  2. the test suites sparse, dropout and forward (tests/test_sparse.c, test_dropout.c when they exist) on the
#     OpenCL backend (FLASHATTN_TEST_BACKEND=opencl), NV_TC=force.
#  3. timings: flashattn-bench f16 D 64, B 1 H 16 S 4096/16384, dense / random block masks 1/2, 1/4 (block 128)
#     / dropout 0.1, NV_TC=1 and 0; and cl_sparse_check bench (f32, B1 H8 S2048 D64).
# Exit status: the number of steps that failed. Logs also under $OUT (or /tmp/cl-sparse-out).
set -u
build=${1:-build}
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/cl-sparse-out}
mkdir -p "$out"
prog=$build/cl_sparse_check
cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude -Ikernels -Itests dev/cl_sparse_check.c tests/reference.c -L"$build" \
  -lflashattn -lm -Wl,-rpath,"$PWD/$build" -o "$prog" || exit 1
export FLASHATTN_BACKEND=opencl FLASHATTN_TEST_BACKEND=opencl
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-/tmp/flashattn-cache-sparse}
export CK_TAP_LOG_FILE_NAME=- CK_VERBOSITY=silent CK_FORK=no
failed=0
step() {
  local name=$1
  shift
  echo "=== $name: $*"
  "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  grep -E 'FAIL|^not ok|failed|error' "$out/$name.txt" | head -20
  tail -2 "$out/$name.txt"
  if [ $rc != 0 ]; then echo "=== FAILED ($rc): $name"; failed=$((failed + 1)); fi
}

step check-tcforce env FLASHATTN_OPENCL_NV_TC=force "$prog"
step check-tc0 env FLASHATTN_OPENCL_NV_TC=0 "$prog"
# Did the tensor-core variants build (a fallback would have passed quietly with NV_TC=1, not with force)?
echo "tensor-core variants in the kernel cache (mask or dropout; 0 means they never built):" \
  "$(grep -rlaE 'FA_NV_EMULATE=0 -DFA_BLOCK_MASK=1|FA_NV_EMULATE=0 -DFA_BLOCK_MASK=0 -DFA_DROPOUT=1' "$FLASHATTN_CACHE_DIR" 2>/dev/null | wc -l)"
for t in sparse dropout forward; do
  if [ -x "$build/tests/test_$t" ]; then
    step "test_$t" env FLASHATTN_OPENCL_NV_TC=force "$build/tests/test_$t"
  else
    echo "=== test_$t: not built in $build"
  fi
done

if [ -x "$build/tools/flashattn-bench" ]; then
  for tc in 1 0; do
    step "bench-tc$tc" env FLASHATTN_OPENCL_NV_TC=$tc "$build/tools/flashattn-bench" --backend opencl --algos flash \
      --modes fwd --dtypes f16 --head-dims 64 --causal 0 --batch 1 --heads 16 --seqlens 4096,16384 \
      --block-density 1,0.5,0.25 --block-size 128 --dropout 0,0.1 --iters 10 --warmup 2
    cat "$out/bench-tc$tc.txt"
  done
fi
step bench-f32 "$prog" bench
cat "$out/bench-f32.txt"
echo "=== $failed step(s) failed"
exit $failed
