#!/bin/bash
# The CUDA backend on the GPU machine. Run from the repository root after carrying a build folder made here
# with the CUDA backend in it (meson setup build-cuda -Dopencl=disabled -Dtests=disabled; any build folder
# with src/cuda/cu_smoke works, one with tests also runs tests/test_cuda_interop):
#   dev/gpu_check.sh [build-dir]            default build-cuda
#   GPU_CHECK_NVRTC=1 dev/gpu_check.sh ...  also compile every kernel variant for this GPU's arch and print
#                                           ptxas's registers and spills (about a minute)
# Steps: nvidia-smi -L; cu_smoke (every dtype at 8 shapes against a float64 loop, then CUDA-event timings:
# D=128 S=8192 B=2 H=16 f16 non-causal and causal, and a few more, median of 20 after 3 warm-ups, TFLOP/s;
# then a sweep of the registers-per-thread bound of the tensor-core kernel at D = 64 and 128);
# the same checks under FLASHATTN_LOCAL_MEM_BYTES=49152 and =8192 (smaller tiles, and the CUDA-core kernel);
# test_cuda_interop (runtime API, cudaMalloc'd memory wrapped, the caller's stream). Exit status: the number
# of steps that failed.
set -u
build=${1:-build-cuda}
smoke=$build/src/cuda/cu_smoke
if [ ! -x "$smoke" ]; then
  echo "gpu_check: $smoke not found: build with the CUDA backend first" >&2
  exit 1
fi
# A fresh kernel cache: the first calls include NVRTC compiles, and the timings run warm afterwards.
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$(mktemp -d /tmp/flashattn-cache.XXXXXX)}
failed=0
step() {
  echo "=== $*"
  "$@" || { echo "=== FAILED ($?): $*"; failed=$((failed + 1)); }
}

nvidia-smi -L || echo "gpu_check: nvidia-smi failed"
if [ "${GPU_CHECK_NVRTC:-0}" = 1 ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  step "$build/src/cuda/nvrtc_check" -q "sm_${cc:-90}"
fi
step "$smoke" --sweep
step env FLASHATTN_LOCAL_MEM_BYTES=49152 "$smoke" --no-timing
step env FLASHATTN_LOCAL_MEM_BYTES=8192 "$smoke" --no-timing
if [ -x "$build/tests/test_cuda_interop" ]; then
  step "$build/tests/test_cuda_interop"
fi
echo "=== gpu_check: $failed step(s) failed"
exit "$failed"
