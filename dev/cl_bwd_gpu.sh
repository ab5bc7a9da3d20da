#!/bin/bash
# The OpenCL flash backward (kernels/flash_bwd.cl) on a GPU's OpenCL (the GPU machine: NVIDIA's, 48 KiB of local
# memory). Checks and times the GPU layout (8 work-items per row, the default on GPUs) against the row layout
# (one row per work-item, FLASHATTN_OPENCL_BWD_LAYOUT=row: the layout before it). Run from the repository root
# with a carried build folder made with OpenCL:
#   dev/cl_bwd_gpu.sh [build-dir]        default: build
# Steps (dev/cl_bwd_bench.c, OpenCL device 0): check (dq, dk, dv vs the float64 reference: dtypes, GQA, causal
# with Sq != Sk, masked rows, strides, D 8..256) in both layouts, and at an 8 KiB budget (the row layout where
# the GPU one does not fit); determinism (two runs, same bits); bench (f32 fwd and bwd, causal and not) in both
# layouts; then flashattn-bench (f16, bwd and fwdbwd, B 1 H 16 D 64, S 4096..16384) in both layouts.
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
step env FLASHATTN_OPENCL_BWD_LAYOUT=row "$prog" check
step env FLASHATTN_LOCAL_MEM_BYTES=8192 "$prog" reduced
step "$prog" determinism
for layout in split row; do
  step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$prog" bench 1024 64 1 8 10
  step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$prog" bench 4096 128 2 16 5
  step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$prog" bench 8192 64 1 16 3
done
if [ -x "$build/tools/flashattn-bench" ]; then
  for layout in split row; do
    step env FLASHATTN_OPENCL_BWD_LAYOUT=$layout "$build/tools/flashattn-bench" --backend opencl --algos flash \
      --modes bwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0,1 --batch 1 --heads 16 --seqlens 4096,16384 \
      --iters 3 --warmup 1
  done
  # Tiles of the GPU layout (BRxBCxR: multiples of 8, R rows per work-item, 8 * BC / R and 8 * BR / R
  # work-items at most 256; tiles that do not fit the 48 KiB are ignored, the default runs).
  for tiles in 32x16 16x32 16x16 32x32x2 32x16x2 16x16x2; do
    step env FLASHATTN_OPENCL_BWD_TILES=$tiles "$build/tools/flashattn-bench" --backend opencl --algos flash \
      --modes bwd --dtypes f16 --head-dims 64,128 --causal 0 --batch 1 --heads 16 --seqlens 16384 --iters 3 --warmup 1
  done
fi
echo "=== cl_bwd_gpu: $failed step(s) failed"
exit "$failed"
