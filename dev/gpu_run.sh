#!/bin/bash
# Everything one GPU-machine call checks and times, from the repository root with the build folder and
# .device-deps carried (see ../shared/device/pack):
#   dev/gpu_run.sh BUILD STEP...
# Steps: info | tests | cuda | std | bench | paper-cuda | paper-opencl | probe | fwd-tests | fwd-bench | fwd-tune |
# bwd-tests | bwd-sm80-tests | bwd-bench | python-tests | python-train. Output: the console (a summary last)
# and, under $OUT (or /tmp/gpu-out), the logs and CSV files.
set -u
build=$1
shift
source .device-deps/activate
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export FLASHATTN_CACHE_DIR=/tmp/flashattn-cache POCL_CACHE_DIR=/tmp/pocl-cache
bench=$build/tools/flashattn-bench
shapes="--seqlens 512,1024,2048,4096,8192,16384 --head-dims 64,128 --dtypes f16,bf16 --causal 0,1"
summary=()
for step in "$@"; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    info) "$build/tools/flashattn-info" ;;
    tests)
      for b in cuda opencl; do
        python3 dev/run_tests.py "$build" /work/main "$out/logs" "$b" FLASHATTN_TEST_BACKEND=$b | tee "$out/tests-$b.txt"
        summary+=("$(tail -1 "$out/tests-$b.txt")")
      done ;;
    cuda) dev/gpu_check.sh "$build" > "$out/cuda-check.txt" 2>&1; summary+=("cuda check: $(tail -1 "$out/cuda-check.txt")")
          cat "$out/cuda-check.txt" | tail -40 ;;
    std) dev/std_check.sh "$build" > "$out/std-check.txt" 2>&1; summary+=("standard check: $(tail -1 "$out/std-check.txt")")
         tail -30 "$out/std-check.txt" ;;
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
    probe) timeout 60 "$build/sm90_probe" | tee "$out/probe.txt"; summary+=("probe: $(tail -1 "$out/probe.txt")") ;;
    fwd-tests) # the forward suites through CUDA (sm90 on Hopper). A 30-second smoke per sm90 variant first, so a
      # hang costs seconds; the suites then run on the default variant, and on the others only if it fails.
      for v in default overlap0 pingpong0; do
        defs=$(case $v in overlap0) echo -DFA_SM90_OVERLAP=0 ;; pingpong0) echo -DFA_SM90_PINGPONG=0 ;; esac)
        FLASHATTN_SM90_DEFINES="$defs" timeout 30 "$bench" --backend cuda --algos flash --modes fwd --dtypes bf16 \
          --head-dims 128 --seqlens 1024 --causal 0 --iters 2 --warmup 1 > "$out/smoke-$v.csv" 2>&1
        summary+=("smoke $v: rc=$? $(tail -1 "$out/smoke-$v.csv")")
      done
      for v in default overlap0 pingpong0; do
        defs=$(case $v in overlap0) echo -DFA_SM90_OVERLAP=0 ;; pingpong0) echo -DFA_SM90_PINGPONG=0 ;; esac)
        ONLY=forward,sparse,dropout TEST_TIMEOUT=150 FLASHATTN_SM90_DEFINES="$defs" \
          python3 dev/run_tests.py "$build" /work/main "$out/logs" "fwd-$v" FLASHATTN_TEST_BACKEND=cuda | tee "$out/fwd-$v.txt"
        summary+=("$(tail -1 "$out/fwd-$v.txt")")
        grep -q " 0 failed" "$out/fwd-$v.txt" && break
      done ;;
    fwd-bench) # issue 10's grid: bf16 and f16, D 64/128/256, causal 0/1, S 1k/4k/16k, B S = 16384, H = 2048 / D
      grid="--seqlens 1024,4096,16384 --head-dims 64,128,256 --dtypes bf16,f16 --causal 0,1 --modes fwd"
      timeout 150 "$bench" --backend cuda --algos flash $grid --iters 10 > "$out/fwd-sm90.csv"
      FLASHATTN_CUDA_FWD=sm80 timeout 100 "$bench" --backend cuda --algos flash $grid --iters 10 | sed 's/^cuda,/cuda-sm80,/' > "$out/fwd-sm80.csv"
      timeout 150 python3 .device-deps/sdpa_anchor.py $grid --backends flash,cudnn --iters 10 > "$out/fwd-anchor.csv"
      python3 dev/compare.py "$out/fwd-anchor.csv" "$out/fwd-sm90.csv" "$out/fwd-sm80.csv" | tee "$out/fwd-compare.txt" ;;
    fwd-tune) # the Hopper forward's tile at D 64 causal, where it trails cuDNN at S 1k: each FLASHATTN_SM90_TILE
      for tile in default 128x128 128x96 128x64 192x96 192x64; do
        FLASHATTN_SM90_TILE=$([ $tile = default ] || echo $tile) timeout 40 "$bench" --backend cuda --algos flash \
          --modes fwd --dtypes bf16 --head-dims 64 --seqlens 1024,4096 --causal 1 --iters 20 | sed "s/^cuda,/cuda-$tile,/"
      done | grep -v "^backend" | tee "$out/fwd-tune.csv" ;;
    bwd-tests) # the backward suites through CUDA (the sm90 backward on Hopper), after a 30-second smoke per scheme
      for det in 0 1; do
        timeout 30 "$bench" --backend cuda --algos flash --modes fwdbwd --dtypes bf16 --head-dims 128 --seqlens 1024 \
          --causal 1 --deterministic $det --iters 2 --warmup 1 > "$out/bwd-smoke-$det.csv" 2>&1
        summary+=("bwd smoke det=$det: rc=$? $(tail -1 "$out/bwd-smoke-$det.csv")")
      done
      ONLY=backward,sparse,dropout TEST_TIMEOUT=150 \
        python3 dev/run_tests.py "$build" /work/main "$out/logs" bwd-sm90 FLASHATTN_TEST_BACKEND=cuda | tee "$out/bwd-sm90.txt"
      summary+=("$(tail -1 "$out/bwd-sm90.txt")")
      grep -h "not ok\|relative errors" "$out"/logs/bwd-sm90* 2>/dev/null | grep -v "^ok" | head -40 ;;
    bwd-sm80-tests) # the same suites and cuda-interop on the sm_80 (mma.sync) backward, kept tested on Hopper
      ONLY=backward,sparse,dropout,cuda-interop TEST_TIMEOUT=300 python3 dev/run_tests.py "$build" /work/main \
        "$out/logs" bwd-sm80 FLASHATTN_TEST_BACKEND=cuda FLASHATTN_CUDA_BWD=sm80 | tee "$out/bwd-sm80.txt"
      summary+=("$(tail -1 "$out/bwd-sm80.txt")") ;;
    python-tests|python-train) # the Python package (issue 17) on the carried build; .whl carried too (pytest's
      # wheels: pip download -d .whl pytest). python-tests: pytest ($PYTEST_ARGS, e.g. -k cuda); python-train:
      # examples/train_gpt2.py, GPT-2 small in bf16 at context 1024 (batch 16: flashattn, sdpa, math, and math from
      # seed 1 for the run-to-run noise) and 4096 (batch 4), each <= 300 steps and $SECONDS_1024 / $SECONDS_4096
      # (default 35 / 25) seconds after its first step; plot here with
      # python3 examples/plot_gpt2.py --out-dir docs/figures --tag h200 gpt2-h200-*.csv
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
    bwd-bench) # issue 11's grid: fwd+bwd, bf16 and f16, D 64/128/256, causal 0/1, S 1k/4k/16k; sm90, sm80 and
      # deterministic beside FlashAttention-2 and cuDNN
      grid="--seqlens 1024,4096,16384 --head-dims 64,128,256 --dtypes bf16,f16 --causal 0,1 --modes fwdbwd"
      timeout 150 "$bench" --backend cuda --algos flash $grid --iters 5 > "$out/bwd-sm90.csv"
      FLASHATTN_CUDA_BWD=sm80 timeout 120 "$bench" --backend cuda --algos flash $grid --iters 5 | sed 's/^cuda,/cuda-sm80,/' > "$out/bwd-sm80.csv"
      timeout 150 "$bench" --backend cuda --algos flash $grid --iters 5 --deterministic 1 | sed 's/^cuda,/cuda-det,/' > "$out/bwd-det.csv"
      timeout 180 python3 .device-deps/sdpa_anchor.py $grid --backends flash,cudnn --iters 5 > "$out/bwd-anchor.csv"
      python3 dev/compare.py "$out/bwd-anchor.csv" "$out/bwd-sm90.csv" "$out/bwd-sm80.csv" "$out/bwd-det.csv" | tee "$out/bwd-compare.txt" ;;
    *) echo "unknown step $step" ;;
  esac
  echo "=== $step took $((SECONDS - start)) s"
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
