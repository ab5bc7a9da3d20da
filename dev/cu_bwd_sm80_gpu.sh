#!/bin/bash
# The sm_80 (mma.sync) CUDA backward on the GPU machine, kept on it on Hopper with FLASHATTN_CUDA_BWD=sm80:
#   dev/cu_bwd_sm80_gpu.sh BUILD STEP...     from the repository root, BUILD carried (configured like ./run build,
#                                           with `meson introspect BUILD --tests > BUILD/tests.json` done here)
# Steps (each well under 3 minutes):
#   nvrtc   cu_bwd_check --nvrtc for sm_80 and sm_90: every variant, ptxas registers and spills (exit 1 on a spill)
#   check   cu_bwd_check: dq, dk, dv against tests/reference.c (every dtype, D 16..256, GQA, causal, strides,
#           budgets device / 49152 / 8192, atomic and deterministic with bit-identity), then fwd+bwd timings at
#           D 64, 128, 256 (S 8192, B 2, H 16, f16; deterministic beside the default)
#   tests   the backward, sparse, dropout and cuda-interop suites through CUDA (run_tests.py)
#   grid    flashattn-bench fwdbwd, bf16/f16, D 64/128/256, causal 0/1, S 1024/4096/16384, deterministic 0 then 1
# Output: the console, and $OUT (or /tmp/gpu-out) for the logs and CSV files.
set -u
build=$1
shift
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-/tmp/flashattn-cache} FLASHATTN_CUDA_BWD=sm80
failed=0
for step in "$@"; do
  echo "=== $step"
  case $step in
    nvrtc) "$build/src/cuda/cu_bwd_check" --nvrtc sm_80 sm_90 > "$out/sm80-nvrtc.txt" 2>&1 || failed=$((failed + 1))
           grep -E "FAIL|spill stores" "$out/sm80-nvrtc.txt" | grep -v " 0 bytes spill stores"; tail -1 "$out/sm80-nvrtc.txt" ;;
    check) "$build/src/cuda/cu_bwd_check" > "$out/sm80-check.txt" 2>&1 || failed=$((failed + 1))
           grep -E "FAIL|checks passed|^time" "$out/sm80-check.txt" ;;
    tests) ONLY=backward,sparse,dropout,cuda-interop python3 dev/run_tests.py "$build" /work/main "$out/sm80-logs" cuda \
             FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD=sm80 | tee "$out/sm80-tests.txt"
           tail -1 "$out/sm80-tests.txt" | grep -q " 0 failed" || failed=$((failed + 1)) ;;
    grid)
      for det in 0 1; do
        "$build/tools/flashattn-bench" --backend cuda --algos flash --modes fwdbwd --dtypes bf16,f16 \
          --head-dims 64,128,256 --causal 0,1 --seqlens 1024,4096,16384 --iters 5 --deterministic $det \
          > "$out/sm80-grid-det$det.csv" || failed=$((failed + 1))
        cut -d, -f3,9,10,7,13 "$out/sm80-grid-det$det.csv"
      done ;;
    *) echo "cu_bwd_sm80_gpu: unknown step $step"; failed=$((failed + 1)) ;;
  esac
done
echo "=== cu_bwd_sm80_gpu: $failed step(s) failed"
exit "$failed"
