#!/bin/bash
# The OpenCL tensor-core forward (kernels/flash_fwd_nv.cl) on the GPU machine: correctness with the path on
# and off, then timings both ways. Builds nothing; run from the repository root:
#   dev/cl_nv_check.sh BUILD
# Correctness: tests/test_forward (float64 reference; f16/bf16 cases with GQA, causal Sq != Sk, odd lengths,
# BHSD / padded strides and element offsets, all-masked rows) on the OpenCL backend with
# FLASHATTN_OPENCL_NV_TC=force (a failed build of the tensor-core kernel is then an error with the build log,
# not the silent fallback of =1) and =0; then a look at the kernel cache for flash_fwd_nv binaries. Timings: flashattn-bench --backend opencl, fp16, D 64/128, S 4096/8192, B*S = 16384,
# H = 2048/D, causal 0/1, each with FLASHATTN_OPENCL_NV_TC=1 and =0.
# Output: the console, and under $OUT (or /tmp/cl-nv-out) the logs and CSV files.
set -u
build=${1:?usage: dev/cl_nv_check.sh BUILD}
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/cl-nv-out}
mkdir -p "$out"
export FLASHATTN_BACKEND=opencl FLASHATTN_TEST_BACKEND=opencl
export POCL_CACHE_DIR=/tmp/pocl-cache CK_TAP_LOG_FILE_NAME=- CK_VERBOSITY=silent CK_FORK=no
summary=()

for tc in force 0; do
  export FLASHATTN_OPENCL_NV_TC=$tc FLASHATTN_CACHE_DIR=/tmp/flashattn-cache-nv$tc
  echo "=== test_forward, FLASHATTN_OPENCL_NV_TC=$tc"
  "$build/tests/test_forward" > "$out/test_forward-tc$tc.txt" 2>&1
  rc=$?
  grep -E '^not ok|^ok .*(f16|bf16)' "$out/test_forward-tc$tc.txt" | tail -30
  summary+=("test_forward NV_TC=$tc: rc $rc, $(grep -c '^ok' "$out/test_forward-tc$tc.txt") ok, $(grep -c '^not ok' "$out/test_forward-tc$tc.txt") not ok")
done
# The short list (bf16 D 128 with odd offsets, f16 GQA) once more with the tensor cores.
FLASHATTN_OPENCL_NV_TC=force FLASHATTN_CACHE_DIR=/tmp/flashattn-cache-nvforce "$build/tests/test_forward" --reduced \
  > "$out/test_forward-reduced-tcforce.txt" 2>&1
rc=$?
grep -E '^not ok|^ok .*(f16|bf16)' "$out/test_forward-reduced-tcforce.txt"
summary+=("test_forward --reduced NV_TC=force: rc $rc, $(grep -c '^not ok' "$out/test_forward-reduced-tcforce.txt") not ok")

# Did the tensor-core kernel build? Its build options carry -DFA_NV_EMULATE=0; a cached binary proves it.
echo "=== kernel cache entries of flash_fwd_nv"
hits=$(grep -rl "flash_fwd_nv" /tmp/flashattn-cache-nvforce 2>/dev/null | wc -l)
echo "files mentioning flash_fwd_nv in the NV_TC=force cache: $hits"
grep -m3 -h "FAIL\|clBuildProgram\|error" "$out/test_forward-tcforce.txt" | head -5
summary+=("flash_fwd_nv cache files: $hits (0 means the build failed and the portable kernel ran)")

echo "=== flashattn-bench --backend opencl, f16, NV_TC 1 and 0"
for tc in 1 0; do
  export FLASHATTN_OPENCL_NV_TC=$tc FLASHATTN_CACHE_DIR=/tmp/flashattn-cache-nv$tc
  "$build/tools/flashattn-bench" --backend opencl --algos flash --modes fwd --dtypes f16 --head-dims 64,128 \
    --seqlens 4096,8192 --total-tokens 16384 --model-dim 2048 --causal 0,1 --iters 10 --warmup 2 \
    > "$out/bench-opencl-tc$tc.csv" 2> "$out/bench-opencl-tc$tc.err"
  echo "--- NV_TC=$tc (rc $?)"
  cat "$out/bench-opencl-tc$tc.csv"
  tail -3 "$out/bench-opencl-tc$tc.err"
done
# bf16 once with the tensor cores, one shape, so that the bf16 mma path is timed too.
FLASHATTN_OPENCL_NV_TC=1 FLASHATTN_CACHE_DIR=/tmp/flashattn-cache-nv1 "$build/tools/flashattn-bench" \
  --backend opencl --algos flash --modes fwd --dtypes bf16 --head-dims 128 --seqlens 8192 --causal 0,1 \
  --iters 10 --warmup 2 > "$out/bench-opencl-bf16-tc1.csv" 2>&1
cat "$out/bench-opencl-bf16-tc1.csv"

echo "=== summary"
printf '%s\n' "${summary[@]}"
