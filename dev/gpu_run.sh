#!/bin/bash
# Everything the GPU machine checks and times, one step at a time, from the repository root with a build folder
# (made with CUDA and the tests, plus `meson introspect BUILD --tests > BUILD/tests.json`, which
# dev/run_tests.py reads) and .device-deps carried (see ../shared/device/pack):
#   dev/gpu_run.sh BUILD STEP...
# Output: the console (a summary last) and, under $OUT (or /tmp/gpu-out), logs and CSV files. The build tree's
# paths were recorded where it was made: $BUILD_ROOT (default /work/main), which run_tests.py rewrites.
#
# Correctness (the suites through dev/run_tests.py; ONLY=name,... and TEST_TIMEOUT=N narrow them):
#   info            flashattn-info
#   tests           every suite, on CUDA, then on OpenCL
#   fwd-tests       forward, sparse, dropout on CUDA: a 30 s smoke per Hopper variant first (a hang costs
#                   seconds), then the suites on the default, on the others only if it fails
#   bwd-tests       backward, sparse, dropout on CUDA (Hopper backward), after a smoke per dQ scheme
#   bwd-sm80-tests  the same and cuda-interop on the sm_80 backward (FLASHATTN_CUDA_BWD=sm80)
#   bwd-modes       backward, sparse, dropout on CUDA with the deterministic dQ kernel for every call, then on
#                   CUDA cores (FLASHATTN_CUDA_BWD=simt) with atomic and with separate dQ
#   sparse-tests    sparse and dropout with both backends in one process (the CUDA-vs-OpenCL mask test)
#   cl-nv-tests     forward, backward, sparse, dropout on NVIDIA's OpenCL with FLASHATTN_OPENCL_NV_TC=force (a
#                   refused build of the tensor-core kernels is an error), then =0 (the portable kernels)
#   decode-tests    decode, forward, errors, api on CUDA, then OpenCL (forward's Sq = 1 cases take decode); decode
#                   on OpenCL's tensor-core decode kernel only (FLASHATTN_DECODE_KERNEL=nv): 1 x 4, 2 x 2, plain
#   python-tests    the Python package's pytest ($PYTEST_ARGS; pytest from .whl when missing)
#   probe           BUILD/dev/sm90_probe: each layout assumption of kernels/sm90.cuh on the GPU
# Workshops (dev/fwd, bwd, decode, standard: each line checked against the float64 reference, then timed):
#   compile         every CUDA variant of each family through NVRTC for this GPU's arch: ptxas registers, spills
#   fwd-check       dev/fwd: each dtype at several shapes, at the device's budget and at 48 and 8 KiB; timings
#                   at D 128 S 8192 B 2 H 16 and others; the sm_80 kernel's registers-per-thread bound swept
#   bwd-check       dev/bwd on CUDA: dtypes, shapes, both dQ schemes, CUDA cores, budgets, the unpipelined
#                   kernel; timings, and FLASHATTN_CUDA_BWD_DEFINES swept
#   cl-bwd          dev/bwd on NVIDIA's OpenCL, portable kernels (NV_TC=0): split and row layouts, an 8 KiB budget,
#                   masks and dropout, determinism; timings per layout; flashattn-bench per layout and tile
#   std             dev/standard: cuBLAS and CLBlast against the reference, out of memory, beside flash
# Timings (flashattn-bench; PyTorch from .device-deps/sdpa_anchor.py and decode_anchor.py; dev/compare.py):
#   bench           the main grid, CUDA and OpenCL, beside FA2 and cuDNN
#   paper-cuda, paper-opencl   the paper's Figure 3 shapes (plot here: dev/compare.py --plot)
#   fwd-bench       issue 10's grid: Hopper and sm_80 forward beside FA2 and cuDNN
#   fwd-tune        the Hopper forward's tile at D 64 causal (FLASHATTN_SM90_TILE)
#   bwd-bench       issue 11's grid: fwd+bwd on Hopper, sm_80 and deterministic beside FA2 and cuDNN
#   sparse-bench    CUDA block-sparse against dense (densities, butterfly, local-global), dropout, fwd and bwd
#   sparse-opencl   the same on NVIDIA's OpenCL, tensor cores on and off
#   sparse-ab       issue 10's proportionality, bf16 non-causal blocks of 128 (D 64 H 32, D 128 H 16; S 8k, 16k),
#                   on this build's kernels and, with $KERNELS_B (a kernels folder: FLASHATTN_KERNEL_DIR) and
#                   $TILE_B (FLASHATTN_SM90_TILE), on those; the dense forward grid on both
#   infer-bench     issue 16 on the default (Hopper) kernels: varlen 8 x 2048 packed against padded, fixed and
#                   random lengths; causal windows 256..4096 at S 16384 against full causal, on the default tiles,
#                   with 64-key tiles and on sm_80; fwd and fwdbwd
#   cl-nv-bench     OpenCL (tensor cores) against CUDA's sm_80 kernels on issue 12's grid, and the ratios
#   cl-nv-sweep     the OpenCL tensor-core forward's knobs (FLASHATTN_OPENCL_NV_STAGES 1, 2 x BLOCK_N 64, 48, 32)
#                   at D 64, 128, 256, S 4096 and 16384, causal and not, beside CUDA's sm_80 forward
#   decode-bench    flashattn-decode-bench (contiguous, paged, window) beside decode_anchor.py
#   python-train    examples/train_gpt2.py: GPT-2 small in bf16 at context 1024 (flashattn, sdpa, math, math from
#                   seed 1 for the noise) and 4096, each <= 300 steps and $SECONDS_1024 / $SECONDS_4096 (35 / 25)
#                   seconds after its first step; plot here with
#                   python3 examples/plot_gpt2.py --out-dir docs/figures --tag h200 gpt2-h200-*.csv
set -u
build=$1
shift
[ -f .device-deps/activate ] && source .device-deps/activate
out=${OUT:-/tmp/gpu-out}
root=${BUILD_ROOT:-/work/main}
mkdir -p "$out/logs"
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-/tmp/flashattn-cache} POCL_CACHE_DIR=/tmp/pocl-cache
bench=$build/tools/flashattn-bench
shapes="--seqlens 512,1024,2048,4096,8192,16384 --head-dims 64,128 --dtypes f16,bf16 --causal 0,1"
grid="--seqlens 1024,4096,16384 --head-dims 64,128,256 --dtypes bf16,f16 --causal 0,1"
arch=sm_$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
[ "$arch" = sm_ ] && arch=sm_90
summary=()

# suites LABEL TESTS VAR=VALUE...: the named suites through run_tests.py; its last line into the summary.
suites() {
  local label=$1 only=$2
  shift 2
  ONLY=$only TEST_TIMEOUT=${TEST_TIMEOUT:-0} python3 dev/run_tests.py "$build" "$root" "$out/logs" "$label" "$@" |
    tee "$out/$label.txt"
  summary+=("$(tail -1 "$out/$label.txt")")
}

# ws LOG PROGRAM ARGS...: BUILD/dev/PROGRAM ARGS (VAR=VALUE before `ws` reaches it), its lines into $out/LOG.txt.
ws() {
  local log=$out/$1.txt prog=$build/dev/$2
  shift 2
  echo "--- ${prog##*/} $*" >> "$log"
  timeout "${WS_TIMEOUT:-300}" "$prog" "$@" >> "$log" 2>&1
  local rc=$?
  [ $rc = 0 ] || echo "FAILED (rc $rc): ${prog##*/} $*" >> "$log"
}

# ws_summary LOG: what a step's workshop runs found.
ws_summary() {
  local log=$out/$1.txt
  grep -E '^(not ok|FAILED|time -|FAIL)|variants compiled' "$log" | cut -c1-400
  summary+=("$1: $(grep -c '^ok' "$log") ok, $(grep -c '^not ok' "$log") not ok, $(grep -c '^FAILED' "$log") runs failed")
}

for step in "$@"; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    info) "$build/tools/flashattn-info" ;;
    tests)
      for b in cuda opencl; do suites "tests-$b" "${ONLY:-}" FLASHATTN_TEST_BACKEND=$b; done ;;
    fwd-tests)
      for v in default overlap0 pingpong0; do
        defs=$(case $v in overlap0) echo -DFA_SM90_OVERLAP=0 ;; pingpong0) echo -DFA_SM90_PINGPONG=0 ;; esac)
        FLASHATTN_SM90_DEFINES="$defs" timeout 30 "$bench" --backend cuda --algos flash --modes fwd --dtypes bf16 \
          --head-dims 128 --seqlens 1024 --causal 0 --iters 2 --warmup 1 > "$out/smoke-$v.csv" 2>&1
        summary+=("smoke $v: rc=$? $(tail -1 "$out/smoke-$v.csv")")
      done
      for v in default overlap0 pingpong0; do
        defs=$(case $v in overlap0) echo -DFA_SM90_OVERLAP=0 ;; pingpong0) echo -DFA_SM90_PINGPONG=0 ;; esac)
        FLASHATTN_SM90_DEFINES="$defs" TEST_TIMEOUT=150 suites "fwd-$v" forward,sparse,dropout FLASHATTN_TEST_BACKEND=cuda
        grep -q " 0 failed" "$out/fwd-$v.txt" && break
      done ;;
    bwd-tests)
      for det in 0 1; do
        timeout 30 "$bench" --backend cuda --algos flash --modes fwdbwd --dtypes bf16 --head-dims 128 --seqlens 1024 \
          --causal 1 --deterministic $det --iters 2 --warmup 1 > "$out/bwd-smoke-$det.csv" 2>&1
        summary+=("bwd smoke det=$det: rc=$? $(tail -1 "$out/bwd-smoke-$det.csv")")
      done
      TEST_TIMEOUT=150 suites bwd-sm90 backward,sparse,dropout FLASHATTN_TEST_BACKEND=cuda
      grep -h "not ok\|relative errors" "$out"/logs/bwd-sm90* 2>/dev/null | grep -v "^ok" | head -40 ;;
    bwd-sm80-tests) TEST_TIMEOUT=300 suites bwd-sm80 backward,sparse,dropout,cuda-interop FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD=sm80 ;;
    bwd-modes)
      suites bwd-separate backward,sparse,dropout FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD_DQ=separate
      suites bwd-simt backward,sparse,dropout FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD=simt
      suites bwd-simt-separate backward,sparse,dropout FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD=simt \
        FLASHATTN_CUDA_BWD_DQ=separate ;;
    sparse-tests)
      suites sparse-both sparse,dropout
      grep -h "backends agree\|every backend" "$out"/logs/sparse-both-dropout.log | head -4 ;;
    cl-nv-tests)
      FLASHATTN_BACKEND=opencl "$build/tools/flashattn-info" | tee "$out/info-opencl.txt"
      suites cl-nv-force forward,backward,sparse,dropout FLASHATTN_TEST_BACKEND=opencl FLASHATTN_OPENCL_NV_TC=force
      # Did the tensor-core variants with masks and dropout build (with force a fallback is an error)?
      summary+=("tensor-core mask/dropout programs in the cache: $(grep -rlaE 'FA_NV_EMULATE=0 -DFA_BLOCK_MASK=1|FA_NV_EMULATE=0 -DFA_BLOCK_MASK=0 -DFA_DROPOUT=1' "$FLASHATTN_CACHE_DIR" 2>/dev/null | wc -l)")
      suites cl-nv-off forward,backward,sparse,dropout FLASHATTN_TEST_BACKEND=opencl FLASHATTN_OPENCL_NV_TC=0 ;;
    decode-tests)
      for b in cuda opencl; do suites "decode-$b" decode,forward,errors,api FLASHATTN_TEST_BACKEND=$b; done
      # OpenCL's tensor-core decode kernel or an error (its cases only), a refused build an error too; then 4 warps
      # x 2 stages... lowered to fit 48 KiB (2 x 2), and without ldmatrix and cp.async.
      suites decode-opencl-nv decode FLASHATTN_TEST_BACKEND=opencl FLASHATTN_DECODE_KERNEL=nv FLASHATTN_OPENCL_NV_TC=force
      suites decode-opencl-nv-w2 decode FLASHATTN_TEST_BACKEND=opencl FLASHATTN_DECODE_KERNEL=nv \
        FLASHATTN_OPENCL_NV_TC=force FLASHATTN_DECODE_WARPS=4 FLASHATTN_DECODE_STAGES=2
      suites decode-opencl-nv-plain decode FLASHATTN_TEST_BACKEND=opencl FLASHATTN_DECODE_KERNEL=nv \
        FLASHATTN_OPENCL_NV_TC=force FLASHATTN_OPENCL_NV_LDMATRIX=0 FLASHATTN_OPENCL_NV_CPASYNC=0 ;;
    python-tests|python-train)
      export FLASHATTN_LIBRARY=$PWD/$build/libflashattn.so PYTHONPATH=$PWD/python PYTHONDONTWRITEBYTECODE=1
      if [ $step = python-tests ]; then
        python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q --no-index --find-links .whl pytest
        python3 -m pytest -q -p no:cacheprovider -rfEs --durations=5 python/tests ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.txt"
        summary+=("pytest: $(tail -1 "$out/pytest.txt")")
      else
        for run in 1024:16:flashattn 1024:16:sdpa 1024:16:math 1024:16:math-seed1 4096:4:flashattn 4096:4:sdpa 4096:4:math; do
          IFS=: read -r context batch name <<< "$run"
          seconds=${SECONDS_1024:-35}
          [ "$context" = 4096 ] && seconds=${SECONDS_4096:-25}
          python3 examples/train_gpt2.py --attention "${name%-seed1}" --seed "$([ "$name" = math-seed1 ] && echo 1 || echo 0)" \
            --context "$context" --batch "$batch" --steps 300 --max-seconds "$seconds" \
            --csv "$out/gpt2-h200-$context-$name.csv" || summary+=("train FAILED: $run")
          tail -1 "$out/gpt2-h200-$context-$name.csv"
        done
      fi ;;
    probe)
      if [ -x "$build/dev/sm90_probe" ]; then
        timeout 60 "$build/dev/sm90_probe" | tee "$out/probe.txt"
        summary+=("probe: $(tail -1 "$out/probe.txt")")
      else
        summary+=("probe: $build/dev/sm90_probe not built (nvcc was not found at configure time)")
      fi ;;
    compile)
      archs=$arch
      for p in fwd bwd decode standard; do ws compile "$p" nvrtc -q $archs; done
      ws_summary compile ;;
    fwd-check)
      for budget in device 49152 8192; do
        for dt in f32 f16 bf16; do
          for shape in "2,100,257,4,2,64 --causal 0" "1,130,70,3,1,128 --causal 1" "1,77,200,2,2,256 --causal 1" \
                       "3,1,33,2,1,80 --scale 0.3" "1,65,129,2,2,96 --causal 1 --layout bhsd+padded" \
                       "1,50,50,2,2,40 --causal 1" "2,192,192,2,2,160 --layout bhsd" "1,64,64,1,1,16 --causal 1"; do
            # shellcheck disable=SC2086
            if [ $budget = device ]; then ws fwd-check fwd --backend cuda --dtype $dt --shape $shape --iters 0
            else FLASHATTN_LOCAL_MEM_BYTES=$budget ws fwd-check fwd --backend cuda --dtype $dt --shape $shape --iters 0; fi
          done
        done
      done
      for t in "f16 2,8192,8192,16,16,128 0" "f16 2,8192,8192,16,16,128 1" "bf16 2,8192,8192,16,16,128 0" \
               "f16 2,8192,8192,32,32,64 0" "f16 2,8192,8192,8,8,256 0" "f16 8,2048,2048,16,16,128 0" \
               "f32 2,4096,4096,16,16,128 0"; do
        read -r dt shape causal <<< "$t"
        ws fwd-check fwd --backend cuda --dtype "$dt" --shape "$shape" --causal "$causal" --iters 20 --warmup 3
      done
      for mb in 1 2 3 4; do # the sm_80 kernel's registers per thread: __launch_bounds__ blocks per SM
        FLASHATTN_CUDA_FWD=sm80 FLASHATTN_CUDA_DEFINES=-DMIN_BLOCKS=$mb ws fwd-check fwd --backend cuda --dtype f16 \
          --shape 2,8192,8192,16,16,128 --iters 20 --warmup 3
      done
      ws_summary fwd-check ;;
    bwd-check) # as dev/bwd's modes: every dtype and shape at the device's budget, both dQ schemes; 16-bit on CUDA
      # cores (f32 always runs there) and on the unpipelined sm_80 kernel; a few shapes at 48 and 8 KiB
      bshapes=("2,100,257,4,2,64 --causal 0" "1,130,70,3,1,128 --causal 1" "1,77,200,2,2,256 --causal 1" "3,1,33,2,1,80"
               "1,65,129,2,2,96 --causal 1 --layout bhsd+padded" "2,300,300,8,1,128" "1,200,333,4,2,160"
               "2,257,190,2,1,192 --causal 1")
      for dt in f32 f16 bf16; do
        for shape in "${bshapes[@]}"; do
          for det in 0 1; do
            # shellcheck disable=SC2086
            ws bwd-check bwd --backend cuda --dtype $dt --shape $shape --deterministic $det --iters 0
            [ $dt = f32 ] && continue
            # shellcheck disable=SC2086
            FLASHATTN_CUDA_BWD=simt ws bwd-check bwd --backend cuda --dtype $dt --shape $shape --deterministic $det --iters 0
            # shellcheck disable=SC2086
            FLASHATTN_CUDA_BWD=sm80 FLASHATTN_CUDA_BWD_DEFINES=-DFA_BWD_PIPELINE=0 ws bwd-check bwd --backend cuda \
              --dtype $dt --shape $shape --deterministic $det --iters 0
          done
        done
        for budget in 49152 8192; do
          for shape in "${bshapes[@]:0:4}"; do
            # shellcheck disable=SC2086
            FLASHATTN_LOCAL_MEM_BYTES=$budget ws bwd-check bwd --backend cuda --dtype $dt --shape $shape --iters 0
          done
        done
      done
      FLASHATTN_LOCAL_MEM_BYTES=8192 ws bwd-check bwd --backend cuda --dtype f16 --shape 1,130,70,3,1,128 --causal 1 \
        --deterministic 1 --iters 0
      for d in 64 128 256; do
        for causal in 0 1; do
          ws bwd-check bwd --backend cuda --dtype f16 --shape 2,8192,8192,16,16,$d --causal $causal --iters 5
          ws bwd-check bwd --backend cuda --dtype f16 --shape 2,8192,8192,16,16,$d --causal $causal --deterministic 1 --iters 3
        done
      done
      FLASHATTN_CUDA_BWD=simt ws bwd-check bwd --backend cuda --dtype f16 --shape 2,8192,8192,16,16,128 --iters 5
      for defs in "-DFA_BWD_PIPELINE=0" "-DMIN_BLOCKS=1" "-DMIN_BLOCKS=2" "-DMIN_BLOCKS=3"; do
        FLASHATTN_CUDA_BWD=sm80 FLASHATTN_CUDA_BWD_DEFINES="$defs" ws bwd-check bwd --backend cuda --dtype f16 \
          --shape 2,8192,8192,16,16,128 --iters 5
      done
      ws_summary bwd-check ;;
    cl-bwd)
      export FLASHATTN_OPENCL_NV_TC=0
      for layout in split row; do
        for t in "f32 1,64,64,1,1,64 0" "f32 2,77,131,4,2,64 1" "f32 1,150,40,3,1,32 1" "f32 1,1,200,2,2,128 0" \
                 "f32 3,33,33,3,3,16 1 --layout bhsd" "f32 1,70,90,6,2,40 0 --layout padded" "f32 1,50,60,2,1,8 1" \
                 "f32 1,100,130,2,1,256 1" "f16 2,77,131,4,2,64 1" "bf16 1,100,130,2,1,128 0" \
                 "f32 1,128,128,2,2,64 0 --mask 64x64:0.5" "f16 2,77,131,4,2,32 1 --mask 16x48:0.5 --dropout 0.2" \
                 "f32 1,200,96,2,1,64 1 --mask 1000x7:0.5" "bf16 1,256,256,1,1,128 1 --dropout 0.2"; do
          read -r dt shape causal rest <<< "$t"
          # shellcheck disable=SC2086
          FLASHATTN_OPENCL_BWD_LAYOUT=$layout ws cl-bwd bwd --backend opencl --dtype $dt --shape $shape --causal $causal \
            $rest --deterministic 1 --iters 0
        done
      done
      FLASHATTN_LOCAL_MEM_BYTES=8192 ws cl-bwd bwd --backend opencl --dtype f32 --shape 2,77,131,4,2,64 --causal 1 --iters 0
      FLASHATTN_LOCAL_MEM_BYTES=8192 ws cl-bwd bwd --backend opencl --dtype f16 --shape 1,128,128,2,1,64 --mask 64x64:0.5 \
        --dropout 0.1 --iters 0
      for layout in split row; do
        for t in "1,1024,1024,8,8,64 10" "2,4096,4096,16,16,128 5" "1,8192,8192,16,16,64 3"; do
          read -r shape iters <<< "$t"
          FLASHATTN_OPENCL_BWD_LAYOUT=$layout ws cl-bwd bwd --backend opencl --dtype f32 --shape "$shape" --iters "$iters"
        done
        for m in "" "--mask 128x128:0.5" "--mask 64x64:0.25" "--dropout 0.1"; do
          # shellcheck disable=SC2086
          FLASHATTN_OPENCL_BWD_LAYOUT=$layout ws cl-bwd bwd --backend opencl --dtype f32 --shape 1,4096,4096,16,16,64 $m --iters 5
        done
        FLASHATTN_OPENCL_BWD_LAYOUT=$layout timeout 120 "$bench" --backend opencl --algos flash --modes bwd,fwdbwd --dtypes f16 \
          --head-dims 64 --causal 0,1 --batch 1 --heads 16 --seqlens 4096,16384 --iters 3 --warmup 1 > "$out/cl-bwd-$layout.csv"
      done
      # The split layout's tiles, BRxBCxR (tiles that do not fit the 48 KiB are ignored: the default runs).
      for tiles in 32x16 16x32 16x16 32x32x2 32x16x2 16x16x2; do
        FLASHATTN_OPENCL_BWD_TILES=$tiles timeout 60 "$bench" --backend opencl --algos flash --modes bwd --dtypes f16 \
          --head-dims 64,128 --causal 0 --batch 1 --heads 16 --seqlens 16384 --iters 3 --warmup 1 | sed "s/^opencl,/opencl-$tiles,/"
      done | grep -v "^backend" > "$out/cl-bwd-tiles.csv"
      unset FLASHATTN_OPENCL_NV_TC
      cat "$out"/cl-bwd-*.csv
      ws_summary cl-bwd ;;
    std)
      ws std standard nvrtc -q "$arch"
      for be in cuda opencl; do
        for t in "f32 2,77,131,4,2,64 1" "f32 1,150,40,3,1,32 1" "f32 1,1,200,2,2,128 0" "f32 3,33,33,3,3,16 1 --layout bhsd" \
                 "f32 1,70,90,6,2,40 0 --layout padded" "f32 1,100,130,2,1,256 1" "f32 1,300,260,2,2,64 0" \
                 "f16 2,77,131,4,2,64 1" "f16 1,1,200,2,1,80 0 --layout bhsd" "bf16 1,100,130,2,1,128 0" \
                 "bf16 1,150,40,3,1,32 1 --layout padded"; do
          read -r dt shape causal rest <<< "$t"
          # shellcheck disable=SC2086
          ws std standard --backend $be --dtype $dt --shape $shape --causal $causal $rest --iters 0
        done
        ws std standard oom --backend $be
      done
      ws std standard --backend cuda --dtype f16 --shape 2,4096,4096,16,16,128 --iters 10
      ws std standard --backend opencl --dtype f16 --shape 1,4096,4096,16,16,64 --iters 3
      ws_summary std ;;
    bench)
      "$bench" --backend cuda --algos flash --modes fwd,fwdbwd $shapes --iters 10 > "$out/bench-cuda.csv"
      python3 .device-deps/sdpa_anchor.py $shapes --modes fwd,fwdbwd --backends flash,cudnn --iters 10 > "$out/anchor.csv"
      "$bench" --backend opencl --algos flash --modes fwd,fwdbwd $shapes --iters 3 --warmup 1 > "$out/bench-opencl.csv"
      python3 dev/compare.py "$out/anchor.csv" "$out/bench-cuda.csv" "$out/bench-opencl.csv" | tee "$out/compare.txt" ;;
    paper-cuda)
      "$bench" --backend cuda --algos flash,standard --modes fwd,bwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 \
        --batch 1 --heads 16 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768,65536 --iters 5 \
        --plot "$out/paper-cuda.png" > "$out/paper-cuda.csv"
      python3 .device-deps/sdpa_anchor.py --modes fwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 --total-tokens 1 \
        --model-dim 1024 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768,65536 --iters 5 > "$out/paper-anchor.csv" ;;
    paper-opencl)
      "$bench" --backend opencl --algos flash,standard --modes fwd,bwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 \
        --batch 1 --heads 16 --seqlens 128,256,512,1024,2048,4096,8192,16384,32768 --iters 3 --warmup 1 \
        --plot "$out/paper-opencl.png" > "$out/paper-opencl.csv" ;;
    fwd-bench)
      timeout 150 "$bench" --backend cuda --algos flash $grid --modes fwd --iters 10 > "$out/fwd-sm90.csv"
      FLASHATTN_CUDA_FWD=sm80 timeout 100 "$bench" --backend cuda --algos flash $grid --modes fwd --iters 10 |
        sed 's/^cuda,/cuda-sm80,/' > "$out/fwd-sm80.csv"
      timeout 150 python3 .device-deps/sdpa_anchor.py $grid --modes fwd --backends flash,cudnn --iters 10 > "$out/fwd-anchor.csv"
      python3 dev/compare.py "$out/fwd-anchor.csv" "$out/fwd-sm90.csv" "$out/fwd-sm80.csv" | tee "$out/fwd-compare.txt" ;;
    fwd-tune)
      for tile in default 128x128 128x96 128x64 192x96 192x64; do
        FLASHATTN_SM90_TILE=$([ $tile = default ] || echo $tile) timeout 40 "$bench" --backend cuda --algos flash \
          --modes fwd --dtypes bf16 --head-dims 64 --seqlens 1024,4096 --causal 1 --iters 20 | sed "s/^cuda,/cuda-$tile,/"
      done | grep -v "^backend" | tee "$out/fwd-tune.csv" ;;
    bwd-bench)
      timeout 150 "$bench" --backend cuda --algos flash $grid --modes fwdbwd --iters 5 > "$out/bwd-sm90.csv"
      FLASHATTN_CUDA_BWD=sm80 timeout 120 "$bench" --backend cuda --algos flash $grid --modes fwdbwd --iters 5 |
        sed 's/^cuda,/cuda-sm80,/' > "$out/bwd-sm80.csv"
      timeout 150 "$bench" --backend cuda --algos flash $grid --modes fwdbwd --iters 5 --deterministic 1 |
        sed 's/^cuda,/cuda-det,/' > "$out/bwd-det.csv"
      timeout 180 python3 .device-deps/sdpa_anchor.py $grid --modes fwdbwd --backends flash,cudnn --iters 5 > "$out/bwd-anchor.csv"
      python3 dev/compare.py "$out/bwd-anchor.csv" "$out/bwd-sm90.csv" "$out/bwd-sm80.csv" "$out/bwd-det.csv" |
        tee "$out/bwd-compare.txt" ;;
    sparse-bench)
      sparse="--algos flash --dtypes f16 --head-dims 64 --causal 0 --batch 1 --heads 16 --block-size 128"
      "$bench" --backend cuda $sparse --modes fwd,fwdbwd --seqlens 4096,16384,65536 \
        --block-density 1,0.5,0.25,0.125 --pattern butterfly,local-global --iters 5 --warmup 1 > "$out/sparse-cuda.csv"
      "$bench" --backend cuda --algos flash --modes fwd,bwd,fwdbwd --dtypes f16 --head-dims 128 --seqlens 8192 --batch 2 \
        --heads 16 --causal 0,1 --block-density 1,0.5,0.25,0.1 --pattern butterfly,local-global --block-size 128 \
        --dropout 0,0.1 --iters 10 --warmup 2 > "$out/sparse-dropout-cuda.csv"
      "$bench" --backend cuda --algos flash --modes fwd,bwd --dtypes f16 --head-dims 128 --seqlens 8192 --batch 2 \
        --heads 16 --causal 0 --block-density 1,0.25 --pattern butterfly --block-size 64 --iters 10 > "$out/sparse-64-cuda.csv"
      "$bench" --backend cuda --algos flash --dtypes f16 --head-dims 64,128 --causal 0,1 --batch 2 --heads 16 \
        --modes fwd,fwdbwd --seqlens 4096,16384 --dropout 0,0.1 --iters 10 > "$out/dropout-cuda.csv"
      python3 .device-deps/sdpa_anchor.py --modes fwd,fwdbwd --dtypes f16 --head-dims 64 --causal 0 --total-tokens 1 \
        --model-dim 1024 --seqlens 4096,16384,65536 --backends flash,cudnn --iters 5 > "$out/anchor-sparse.csv"
      cat "$out"/sparse-*cuda.csv "$out/dropout-cuda.csv" "$out/anchor-sparse.csv" ;;
    sparse-opencl)
      sparse="--algos flash --dtypes f16 --head-dims 64 --causal 0 --batch 1 --heads 16 --block-size 128 --iters 3 --warmup 1"
      for tc in 1 0; do
        FLASHATTN_OPENCL_NV_TC=$tc "$bench" --backend opencl $sparse --modes fwd --seqlens 4096,16384,65536 \
          --block-density 1,0.5,0.25,0.125 --pattern butterfly --dropout 0,0.1 | sed "s/^opencl,/opencl-tc$tc,/"
        FLASHATTN_OPENCL_NV_TC=$tc "$bench" --backend opencl $sparse --modes fwdbwd --seqlens 4096,16384 \
          --block-density 1,0.5,0.25,0.125 --pattern butterfly --dropout 0,0.1 | sed "s/^opencl,/opencl-tc$tc,/"
      done | tee "$out/sparse-opencl.csv" ;;
    sparse-ab)
      sab="--algos flash --modes fwd --dtypes bf16 --causal 0 --batch 1 --block-size 128 --seqlens 8192,16384
           --block-density 1,0.99,0.5,0.25 --iters 10 --warmup 2"
      for side in a b; do
        [ $side = b ] && [ -z "${KERNELS_B:-}" ] && continue
        for dh in 64,32 128,16; do
          # shellcheck disable=SC2086
          ( [ $side = b ] && export FLASHATTN_KERNEL_DIR=$KERNELS_B FLASHATTN_SM90_TILE=${TILE_B:-}
            timeout 100 "$bench" --backend cuda $sab --head-dims ${dh%,*} --heads ${dh#*,} ) | sed "s/^cuda,/cuda-$side,/"
        done
        # shellcheck disable=SC2086
        ( [ $side = b ] && export FLASHATTN_KERNEL_DIR=$KERNELS_B
          timeout 150 "$bench" --backend cuda --algos flash $grid --modes fwd --iters 10 ) | sed "s/^cuda,/cuda-$side,/"
      done | grep -v "^backend" | tee "$out/sparse-ab.csv" ;;
    infer-bench)
      for cfg in default 128x64 sm80; do
        ( case $cfg in 128x64) export FLASHATTN_SM90_TILE=128x64 ;; sm80) export FLASHATTN_CUDA_FWD=sm80 ;; esac
          timeout 100 "$bench" --backend cuda --algos flash --modes fwd,fwdbwd --dtypes bf16 --head-dims 128 \
            --seqlens 16384 --batch 1 --heads 16 --causal 1 --sliding-window -1,256,1024,4096 --iters 10 ) |
          sed "s/^cuda,/cuda-$cfg,/"
      done | grep -v "^backend" > "$out/infer-window.csv"
      for lengths in fixed random; do
        timeout 100 "$bench" --backend cuda --algos flash --modes fwd,fwdbwd --dtypes bf16 --head-dims 64,128 \
          --seqlens 2048 --batch 8 --heads 16 --causal 0,1 --varlen 0,1 --varlen-lengths $lengths --iters 10 |
          sed "s/^cuda,/cuda-$lengths,/"
      done | grep -v "^backend" > "$out/infer-varlen.csv"
      cat "$out/infer-window.csv" "$out/infer-varlen.csv" ;;
    cl-nv-sweep)
      sw="--algos flash --modes fwd --dtypes bf16 --head-dims 64,128,256 --seqlens 4096,16384 --causal 0,1
          --total-tokens 16384 --model-dim 2048 --iters 5 --warmup 1"
      for cfg in 1x64 2x64 1x48 2x48 1x32 2x32; do
        # shellcheck disable=SC2086
        FLASHATTN_OPENCL_NV_STAGES=${cfg%x*} FLASHATTN_OPENCL_NV_BLOCK_N=${cfg#*x} timeout 80 "$bench" --backend opencl $sw |
          sed "s/^opencl,/opencl-$cfg,/"
      done | grep -v "^backend" > "$out/cl-nv-sweep.csv"
      # shellcheck disable=SC2086
      FLASHATTN_CUDA_FWD=sm80 timeout 60 "$bench" --backend cuda $sw | sed 's/^cuda,/cuda-sm80,/' >> "$out/cl-nv-sweep.csv"
      cat "$out/cl-nv-sweep.csv" ;;
    cl-nv-bench)
      nv="--algos flash --modes fwd,fwdbwd $grid --total-tokens 16384 --model-dim 2048 --iters 5 --warmup 1"
      # shellcheck disable=SC2086
      "$bench" --backend opencl $nv > "$out/cl-nv-opencl.csv" 2> "$out/cl-nv-opencl.err"
      # shellcheck disable=SC2086
      FLASHATTN_CUDA_FWD=sm80 FLASHATTN_CUDA_BWD=sm80 "$bench" --backend cuda $nv > "$out/cl-nv-cuda.csv" 2> "$out/cl-nv-cuda.err"
      python3 dev/compare.py "$out/cl-nv-cuda.csv" "$out/cl-nv-opencl.csv" | tee "$out/cl-nv-ratios.txt" ;;
    decode-bench)
      db=$build/tools/flashattn-decode-bench
      dshapes="--batch 1,8,64 --seqlens-k 1024,8192,32768,131072 --seqlens-q 1,4"
      FLASHATTN_BACKEND=cuda timeout 120 "$db" $dshapes > "$out/decode-cuda.csv"
      FLASHATTN_BACKEND=opencl timeout 120 "$db" $dshapes --iters 10 > "$out/decode-opencl.csv"
      FLASHATTN_BACKEND=opencl FLASHATTN_DECODE_KERNEL=simple timeout 120 "$db" $dshapes --iters 10 |
        sed 's/^flashattn-opencl/flashattn-opencl-simple/' > "$out/decode-opencl-simple.csv"
      FLASHATTN_BACKEND=opencl timeout 60 "$db" --batch 8 --seqlens-k 8192,32768,131072 --page-size 64 > "$out/decode-paged-opencl.csv"
      FLASHATTN_BACKEND=cuda timeout 60 "$db" --batch 8 --seqlens-k 8192,32768,131072 --page-size 64 > "$out/decode-paged.csv"
      FLASHATTN_BACKEND=cuda timeout 60 "$db" --batch 8 --seqlens-k 131072 --seqlens-q 1 --window 4096 > "$out/decode-window.csv"
      timeout 120 python3 .device-deps/decode_anchor.py $dshapes > "$out/decode-torch.csv"
      cat "$out"/decode-*.csv ;;
    *) echo "unknown step $step"; summary+=("unknown step $step") ;;
  esac
  echo "=== $step took $((SECONDS - start)) s"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
