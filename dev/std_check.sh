#!/bin/bash
# FA_ALGO_STANDARD on this machine's backends (the GPU machine: CUDA through cuBLAS, and NVIDIA's OpenCL through
# CLBlast; here: PoCL). Run from the repository root with a carried build folder:
#   dev/std_check.sh [build-dir] [backends]      default: build, "cuda opencl"
# Steps: std_nvrtc (kernels/standard.cu for this GPU's arch, when the build has CUDA); then per backend that
# answers: std_check check (forward and backward vs a float64 loop, every dtype, GQA, causal, strides),
# std_check oom (score matrices that cannot fit: FA_ERROR_OUT_OF_MEMORY, nothing written), std_check bench
# (standard vs flash, fwd and bwd times and peak memory). The backward steps need fa_cl_backward /
# cu_backward to dispatch FA_ALGO_STANDARD to fa_cl_standard_backward / fa_cu_standard_backward.
# Exit status: the number of steps that failed.
set -u
build=${1:-build}
backends=${2:-cuda opencl}
prog=$build/src/cuda/std_check
if [ ! -x "$prog" ]; then # a build without CUDA: compile it against the library
  prog=$build/std_check
  cc -O2 -std=c11 -Iinclude -Itests dev/std_check.c tests/reference.c -L"$build" -lflashattn -lm \
    -Wl,-rpath,"$PWD/$build" -o "$prog" || exit 1
fi
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$PWD/$build/kernel-cache}
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$PWD/$build/pocl-cache}
failed=0
step() {
  echo "=== $*"
  "$@"
  local rc=$?
  if [ $rc = 77 ]; then echo "=== skipped: $*"; elif [ $rc != 0 ]; then echo "=== FAILED ($rc): $*"; failed=$((failed + 1)); fi
}

if [ -x "$build/src/cuda/std_nvrtc" ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  step "$build/src/cuda/std_nvrtc" -q "sm_${cc:-90}"
fi
for be in $backends; do
  step env FLASHATTN_BACKEND="$be" "$prog" check
  step env FLASHATTN_BACKEND="$be" "$prog" oom
  if [ "$be" = cuda ]; then
    step env FLASHATTN_BACKEND="$be" "$prog" bench 4096 128 2 16 10
  else
    step env FLASHATTN_BACKEND="$be" "$prog" bench 1024 64 1 8 5
  fi
done
echo "=== std_check: $failed step(s) failed"
exit "$failed"
