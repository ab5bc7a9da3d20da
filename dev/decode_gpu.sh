#!/bin/bash
# The decode kernels and inference options (issue 16) on the GPU machine. Run from the repository root with a
# build folder made with the CUDA backend and the tests (meson setup build-gpu; meson introspect build-gpu
# --tests > build-gpu/tests.json, which dev/run_tests.py reads) and .device-deps carried:
#   dev/decode_gpu.sh [build-dir] [steps]     default build-gpu, steps "nvrtc tests bench"
# nvrtc: every decode.cu variant compiles for sm_90 without spills (dev/nvrtc_check -d).
# tests: decode, forward, errors and api through CUDA, then NVIDIA's OpenCL (forward's Sq=1 cases run the
#        decode kernels); logs under $OUT/logs.
# bench: flashattn-decode-bench beside decode_anchor.py on the issue's shapes (B 1, 8, 64; Hq 32, Hkv 8,
#        D 128; Sq 1 and 4; caches 1k to 128k; f16), CUDA then OpenCL, then paged (page 64) and a 4096-key
#        window at B 8, CSV files in $OUT. Compare the GBps columns (K and V bytes per second).
# Exit status: the number of steps that failed.
set -u
build=${1:-build-gpu}
steps=${2:-nvrtc tests bench}
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
nvidia-smi -L || echo "decode_gpu: nvidia-smi failed"
case " $steps " in *" nvrtc "*) step "$build/src/cuda/nvrtc_check" -d -q sm_90 ;; esac
case " $steps " in *" tests "*)
  for be in cuda opencl; do
    ONLY=decode,forward,errors,api python3 dev/run_tests.py "$build" /work/main "$out/logs" "$be" \
      FLASHATTN_TEST_BACKEND=$be | tee "$out/tests-decode-$be.txt"
    if grep -Eq "rc=[^0]|[1-9][0-9]* failed" "$out/tests-decode-$be.txt"; then
      echo "=== FAILED: tests on $be (logs: $out/logs/$be-*.log)"
      for f in "$out"/logs/$be-*.log; do grep -m 20 "^not ok" "$f" | sed "s|^|$(basename "$f"): |"; done
      failed=$((failed + 1))
    fi
  done ;;
esac
case " $steps " in *" bench "*)
  db=$build/tools/flashattn-decode-bench
  shapes="--batch 1,8,64 --seqlens-k 1024,8192,32768,131072 --seqlens-q 1,4"
  FLASHATTN_BACKEND=cuda step "$db" $shapes > "$out/decode-cuda.csv"; cat "$out/decode-cuda.csv"
  FLASHATTN_BACKEND=opencl step "$db" $shapes --iters 10 > "$out/decode-opencl.csv"; cat "$out/decode-opencl.csv"
  FLASHATTN_BACKEND=cuda step "$db" --batch 8 --seqlens-k 8192,32768,131072 --page-size 64 > "$out/decode-paged.csv"
  cat "$out/decode-paged.csv"
  FLASHATTN_BACKEND=cuda step "$db" --batch 8 --seqlens-k 131072 --seqlens-q 1 --window 4096 > "$out/decode-window.csv"
  cat "$out/decode-window.csv"
  if [ -f .device-deps/decode_anchor.py ]; then
    step python3 .device-deps/decode_anchor.py --batch 1,8,64 --seqlens-k 1024,8192,32768,131072 --seqlens-q 1,4 \
      > "$out/decode-torch.csv"
    cat "$out/decode-torch.csv"
  fi ;;
esac
echo "=== decode_gpu: $failed step(s) failed"
exit "$failed"
