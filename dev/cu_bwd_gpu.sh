#!/bin/bash
# The CUDA flash backward (kernels/flash_bwd.cu) on the GPU machine. Run from the repository root after carrying
# a build folder made here with the CUDA backend (meson setup build-cubwd -Dopencl=disabled -Dtests=disabled):
#   dev/cu_bwd_gpu.sh [build-dir]        default build-cubwd (this tuning round: build-cubwd2)
# Steps: nvidia-smi -L; cu_bwd_check --nvrtc for this GPU's arch (every backward variant through NVRTC, ptxas
# registers and spills); cu_bwd_check (dq, dk, dv against tests/reference.c for every dtype and shape, with
# tensor cores and FLASHATTN_CUDA_BWD=simt, budgets device / 49152 / 8192, atomic and deterministic dQ, then
# fwd+bwd timings at D=128 S=8192 B=2 H=16 f16, causal 0 and 1, tensor cores then simt); the same checks
# with FLASHATTN_CUDA_BWD_DEFINES=-DFA_BWD_PIPELINE=0 (the unpipelined tensor-core kernel, --no-timing); then
# tensor-core timings (--timing-only) for each setting of FLASHATTN_CUDA_BWD_DEFINES in $sweeps (the default,
# pipelined kernel is the first step's timing): compare the "bwd ... TFLOP/s" of each line.
# Exit status: the number of steps that failed.
set -u
build=${1:-build-cubwd}
prog=$build/src/cuda/cu_bwd_check
if [ ! -x "$prog" ]; then
  echo "cu_bwd_gpu: $prog not found: build with the CUDA backend first" >&2
  exit 1
fi
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$(mktemp -d /tmp/flashattn-cache.XXXXXX)}
failed=0
step() {
  echo "=== $*"
  "$@"
  local rc=$?
  if [ $rc != 0 ]; then echo "=== FAILED ($rc): $*"; failed=$((failed + 1)); fi
}
nvidia-smi -L || echo "cu_bwd_gpu: nvidia-smi failed"
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
step "$prog" --nvrtc "sm_${cc:-90}"
step "$prog"
step env FLASHATTN_CUDA_BWD_DEFINES=-DFA_BWD_PIPELINE=0 "$prog" --no-timing
sweeps=("-DFA_BWD_PIPELINE=0" "-DMIN_BLOCKS=1" "-DMIN_BLOCKS=2" "-DMIN_BLOCKS=3" "-DFA_BWD_PIPELINE=0 -DMIN_BLOCKS=1")
for d in "${sweeps[@]}"; do
  step env FLASHATTN_CUDA_BWD_DEFINES="$d" "$prog" --timing-only
done
echo "=== cu_bwd_gpu: $failed step(s) failed"
exit "$failed"
