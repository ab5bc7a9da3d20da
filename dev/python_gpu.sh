#!/bin/bash
# The Python package on the GPU machine (issue 17). From the repository root, with the build folder (made
# here like ./run build), .device-deps and .whl (pytest's wheels: pip download -d .whl pytest) carried:
#   dev/python_gpu.sh BUILD tests    pytest: test_torch.py on CUDA and on the CPU (OpenCL, NVIDIA's driver),
#                                    test_numpy.py on NVIDIA's OpenCL; $PYTEST_ARGS go to pytest (-k cuda: the
#                                    CUDA cases only)
#   dev/python_gpu.sh BUILD train    examples/train_gpt2.py, GPT-2 small in bf16: context 1024 (batch 16) for
#                                    flashattn, sdpa, math, and math from another
#                                    initial seed (the run-to-run noise of the loss), then 4096
#                                    (batch 4) for the three; each run <= 300 steps and $SECONDS_1024 /
#                                    $SECONDS_4096 seconds after its first step (defaults 35 and 25: about
#                                    5 minutes in all)
# Output under $OUT (or /tmp/gpu-out): pytest.txt, gpt2-h200-CONTEXT-ATTENTION.csv; plot them here with
#   python3 examples/plot_gpt2.py --out-dir docs/figures --tag h200 gpt2-h200-*.csv
set -u
SECONDS_1024=${SECONDS_1024:-35} SECONDS_4096=${SECONDS_4096:-25}
build=$1
shift
source .device-deps/activate
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
export FLASHATTN_LIBRARY=$PWD/$build/libflashattn.so PYTHONPATH=$PWD/python PYTHONDONTWRITEBYTECODE=1
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-/tmp/flashattn-cache}
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q --no-index --find-links .whl pytest
python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
failed=0
for step in "$@"; do
  echo "=== $step"
  start=$SECONDS
  case $step in
    tests)
      python3 -m pytest -q -p no:cacheprovider -rfEs --durations=5 python/tests ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.txt"
      [ "${PIPESTATUS[0]}" = 0 ] || failed=$((failed + 1)) ;;
    train)
      for run in 1024:16:flashattn 1024:16:sdpa 1024:16:math 1024:16:math-seed1 \
                 4096:4:flashattn 4096:4:sdpa 4096:4:math; do
        IFS=: read -r context batch name <<< "$run"
        seconds=$SECONDS_1024
        [ "$context" = 4096 ] && seconds=$SECONDS_4096
        seed=0
        [ "$name" = math-seed1 ] && seed=1
        python3 examples/train_gpt2.py --attention "${name%-seed1}" --seed "$seed" --context "$context" --batch "$batch" \
          --steps 300 --max-seconds "$seconds" --csv "$out/gpt2-h200-$context-$name.csv" ${TRAIN_ARGS:-} ||
          { echo "=== FAILED: $run"; failed=$((failed + 1)); }
        tail -1 "$out/gpt2-h200-$context-$name.csv"
      done ;;
    *) echo "python_gpu: unknown step $step"; failed=$((failed + 1)) ;;
  esac
  echo "=== $step: $((SECONDS - start)) s"
done
exit $failed
