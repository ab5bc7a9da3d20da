#!/bin/bash
# The OpenCL flash backward (kernels/flash_bwd.cl) on a GPU's OpenCL (the GPU machine: NVIDIA's, 48 KiB of local
# memory: the GPU layout, one row per work-item). Run from the repository root with a carried build folder made
# with OpenCL:
#   dev/cl_bwd_gpu.sh [build-dir]        default: build
# Steps (dev/cl_bwd_bench.c, OpenCL device 0): check (dq, dk, dv vs the float64 reference: dtypes, GQA, causal
# with Sq != Sk, masked rows, strides, D 8..256) with both dQ schemes and at an 8 KiB budget; determinism (two
# runs, same bits); bench (fwd and bwd times) at B 1 H 8 S 1024 D 64 and B 2 H 16 S 4096 D 128 (f32).
# Exit status: the number of steps that failed.
set -u
build=${1:-build}
prog=$build/cl_bwd_bench
cc -O2 -std=c11 -Iinclude -Itests dev/cl_bwd_bench.c tests/reference.c -L"$build" -lflashattn -lm \
  -Wl,-rpath,"$PWD/$build" -o "$prog" || exit 1
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$PWD/$build/kernel-cache}
failed=0
step() {
  echo "=== $*"
  "$@"
  local rc=$?
  if [ $rc != 0 ]; then echo "=== FAILED ($rc): $*"; failed=$((failed + 1)); fi
}
step "$prog" check
step env FLASHATTN_OPENCL_BWD_DQ=atomic "$prog" check
step env FLASHATTN_LOCAL_MEM_BYTES=8192 "$prog" reduced
step "$prog" determinism
step "$prog" bench 1024 64 1 8 10
step "$prog" bench 4096 128 2 16 5
echo "=== cl_bwd_gpu: $failed step(s) failed"
exit "$failed"
