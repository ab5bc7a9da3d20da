#!/bin/bash
# The OpenCL tensor-core kernels (kernels/flash_fwd_nv.cl, kernels/flash_bwd_nv.cl) on the GPU machine, from the
# repository root with a build folder configured like ./run build:
#   dev/cl_nv_check.sh BUILD [tests] [bench-opencl] [bench-cuda] [ratios]    (no step: all of them)
# tests         flashattn-info (its kernels line says which kernels the device gets), then tests/test_forward,
#               test_backward, test_sparse and test_dropout on the OpenCL backend with FLASHATTN_OPENCL_NV_TC=force
#               (a build the driver refuses is then an error with the build log, not the silent fallback); the
#               ok / not ok count of each. About 2 minutes.
# bench-opencl  flashattn-bench --backend opencl: bf16 and f16, D 64/128/256, causal 0/1, S 1024/4096/16384
#               (B*S = 16384, H = 2048/D), fwd and fwdbwd. About 2-3 minutes.
# bench-cuda    the same grid through the CUDA backend (FLASHATTN_CUDA_FWD=sm80: the mma.sync kernels, the
#               family OpenCL can reach; the issue's targets are against those). About 2 minutes.
# ratios        OpenCL / CUDA TFLOP/s for every case of the two CSVs.
# Output: the console, and under $OUT (or /tmp/cl-nv-out) the logs and CSV files.
set -u
build=${1:?usage: dev/cl_nv_check.sh BUILD [tests] [bench-opencl] [bench-cuda] [ratios]}
shift
steps=${*:-tests bench-opencl bench-cuda ratios}
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/cl-nv-out}
mkdir -p "$out"
export POCL_CACHE_DIR=/tmp/pocl-cache CK_TAP_LOG_FILE_NAME=- CK_VERBOSITY=silent CK_FORK=no
export FLASHATTN_CACHE_DIR=/tmp/flashattn-cache-nv
grid="--algos flash --modes fwd,fwdbwd --dtypes bf16,f16 --head-dims 64,128,256 --seqlens 1024,4096,16384
      --total-tokens 16384 --model-dim 2048 --causal 0,1 --iters 5 --warmup 1"
summary=()

for step in $steps; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    tests)
      FLASHATTN_BACKEND=opencl "$build/tools/flashattn-info" | tee "$out/info.txt"
      for suite in forward backward sparse dropout; do
        FLASHATTN_TEST_BACKEND=opencl FLASHATTN_OPENCL_NV_TC=force "$build/tests/test_$suite" > "$out/test_$suite.txt" 2>&1
        rc=$?
        grep -E '^not ok' "$out/test_$suite.txt" | cut -c1-600
        summary+=("test_$suite (opencl, NV_TC=force): rc $rc, $(grep -c '^ok' "$out/test_$suite.txt") ok, $(grep -c '^not ok' "$out/test_$suite.txt") not ok")
      done ;;
    bench-opencl)
      # shellcheck disable=SC2086
      "$build/tools/flashattn-bench" --backend opencl $grid > "$out/bench-opencl.csv" 2> "$out/bench-opencl.err"
      summary+=("bench-opencl: rc $?, $(grep -vc '^#' "$out/bench-opencl.csv") lines")
      cat "$out/bench-opencl.csv"; tail -5 "$out/bench-opencl.err" ;;
    bench-cuda)
      # shellcheck disable=SC2086
      FLASHATTN_CUDA_FWD=sm80 FLASHATTN_CUDA_BWD=sm80 "$build/tools/flashattn-bench" --backend cuda $grid \
        > "$out/bench-cuda.csv" 2> "$out/bench-cuda.err"
      summary+=("bench-cuda: rc $?, $(grep -vc '^#' "$out/bench-cuda.csv") lines")
      cat "$out/bench-cuda.csv"; tail -5 "$out/bench-cuda.err" ;;
    ratios)
      python3 - "$out/bench-opencl.csv" "$out/bench-cuda.csv" <<'EOF' | tee "$out/ratios.txt"
import csv, sys
KEY = ('dtype', 'batch', 'heads_q', 'seqlen_q', 'head_dim', 'causal', 'mode')
def load(path):
    with open(path) as f:
        return {tuple(r[k] for k in KEY): float(r['tflops'] or 'nan') for r in csv.DictReader(l for l in f if not l.startswith('#'))}
ocl, cu = load(sys.argv[1]), load(sys.argv[2])
print(f'{"dtype":5s} {"D":>3s} {"c":>1s} {"S":>6s} {"mode":6s} {"OpenCL":>7s} {"CUDA":>7s} {"ratio":>6s}')
for k in sorted(ocl, key=lambda k: (k[6], k[0], int(k[4]), k[5], int(k[3]))):
    c = cu.get(k, float('nan'))
    print(f'{k[0]:5s} {k[4]:>3s} {k[5]:>1s} {k[3]:>6s} {k[6]:6s} {ocl[k]:7.1f} {c:7.1f} {ocl[k] / c:6.2f}')
EOF
      ;;
    *) echo "unknown step $step"; summary+=("unknown step $step") ;;
  esac
  summary+=("  ($step: $((SECONDS - start)) s)")
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
