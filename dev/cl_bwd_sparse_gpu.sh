#!/bin/bash
# The OpenCL flash backward's block-sparse and dropout variants (kernels/flash_bwd.cl) on a GPU's OpenCL: checks
# (dev/cl_bwd_sparse.c: dq, dk, dv vs the float64 reference given the same masks, o and lse from the reference;
# two runs, same bits) in the GPU layout, the row layout and at an 8 KiB budget, then backward times (f32:
# dense, block masks of density 1/2 and 1/4 with blocks of 64 and 128, dropout 0.1) in both layouts. Run from
# the repository root with a carried build folder made with OpenCL:
#   dev/cl_bwd_sparse_gpu.sh [build-dir]        default: build
# Exit status: the number of steps that failed.
set -u
build=${1:-build}
prog=$build/cl_bwd_sparse
# Built here when missing or stale (the GPU machine's linker may fail on it: build it before carrying the folder).
if [ ! -x "$prog" ] || [ dev/cl_bwd_sparse.c -nt "$prog" ]; then
  cc -O2 -std=c11 -Iinclude -Itests -I. dev/cl_bwd_sparse.c tests/reference.c -L"$build" -lflashattn -lm \
    -Wl,-rpath,"$PWD/$build" -o "$prog" || exit 1
fi
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$PWD/$build/kernel-cache}
failed=0
step() {
  echo "=== $*"
  "$@"
  local rc=$?
  if [ $rc != 0 ]; then echo "=== FAILED ($rc): $*"; failed=$((failed + 1)); fi
}
step "$prog" check
step env FLASHATTN_OPENCL_BWD_LAYOUT=row "$prog" reduced
step env FLASHATTN_LOCAL_MEM_BYTES=8192 "$prog" reduced
for layout in split row; do
  step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$prog" bench 4096 64 1 16 5
  step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$prog" bench 8192 128 1 16 3
done
exit $failed
