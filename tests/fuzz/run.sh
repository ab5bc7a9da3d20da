#!/usr/bin/env bash
# The API fuzzer (tests/fuzz/fuzz_api.c) for a bounded time in a sanitized build (ASan + UBSan), on the
# OpenCL device of this machine (PoCL in CI), then how much of src/api.c it reached.
#   tests/fuzz/run.sh SOURCE_ROOT BUILD_ROOT [SECONDS]   (SECONDS: else $FUZZ_SECONDS, else 120)
# The build goes to BUILD_ROOT/fuzz (clang with libFuzzer when there is one, else gcc and the standalone
# driver), configured once and rebuilt incrementally; the corpus stays in BUILD_ROOT/fuzz/corpus. Exit status:
# 0 when the run found nothing; 1 on a crash, a sanitizer report, a write after an error or a hang (an input
# taking over 300 s (a cold kernel compile on a loaded PoCL machine takes up to a minute), or the whole run over SECONDS + 600 s); 77 (skip) when the machine has no device.
set -uo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
seconds=${3:-${FUZZ_SECONDS:-120}}
fz=$build/fuzz

if ! "$build/tools/flashattn-info" 2>/dev/null | grep -Eq '^(cuda|opencl): [1-9][0-9]* device'; then
  echo "fuzz: no device answers here (flashattn-info): skipped"
  exit 77
fi

cc=gcc
for c in clang-15 clang; do
  if command -v "$c" >/dev/null && echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
      "$c" -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
    cc=$c
    break
  fi
done
if [ ! -f "$fz/build.ninja" ]; then
  # CUDA is left out: CI has no GPU, and the build stays short. -O0: gcov's line counts stay exact.
  CC=$cc meson setup "$fz" "$src" -Dfuzz=enabled -Dtests=disabled -Dcuda=disabled -Dbuildtype=debug \
    -Db_sanitize=address,undefined -Db_lundef=false -Db_coverage=true > "$build/fuzz-setup.log" 2>&1 ||
    { cat "$build/fuzz-setup.log"; exit 1; }
fi
ninja -C "$fz" tests/fuzz/fuzz_api > "$build/fuzz-build.log" 2>&1 || { tail -40 "$build/fuzz-build.log"; exit 1; }

# Hostile cache directories for FLASHATTN_CACHE_DIR (fuzz_api.c names them).
box=$fz/sandbox
rm -rf "$box"
mkdir -p "$box/ok" "$box/shared" "$fz/corpus" "$fz/artifacts"
touch "$box/file"
mkfifo "$box/fifo"
chmod 777 "$box/shared"
ln -s ok "$box/link"
# Only PoCL's ICD where it is installed: other vendors' libraries can abort under ASan.
if [ -f /etc/OpenCL/vendors/pocl.icd ]; then
  mkdir -p "$fz/icd"
  cp /etc/OpenCL/vendors/pocl.icd "$fz/icd/"
  export OCL_ICD_VENDORS=$fz/icd
fi
export FUZZ_SANDBOX=$box
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export FLASHATTN_CACHE_DIR=${FLASHATTN_CACHE_DIR:-$build/kernel-cache} POCL_CACHE_DIR=${POCL_CACHE_DIR:-$build/pocl-cache}

find "$fz" -name '*.gcda' -delete
log=$build/fuzz.log
start=$(date +%s.%N)
if [ "$cc" = gcc ]; then
  timeout $((seconds + 600)) "$fz/tests/fuzz/fuzz_api" -seconds="$seconds" > "$log" 2>&1
else
  timeout $((seconds + 600)) "$fz/tests/fuzz/fuzz_api" -max_total_time="$seconds" -timeout=300 -max_len=512 \
    -print_final_stats=1 -artifact_prefix="$fz/artifacts/" "$fz/corpus" > "$log" 2>&1
fi
status=$?
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
if [ $status -ne 0 ]; then
  tail -60 "$log"
  echo "fuzz: FAILED (exit $status after ${elapsed} s; $( [ $status = 124 ] && echo hang || echo 'crash or check') ); log: $log"
  ls "$fz/artifacts" 2>/dev/null | sed 's/^/fuzz: artifact: /'
  exit 1
fi

# calls: fuzz_api's own count (every checked API call); coverage: src/api.c's lines through gcov.
calls=$(grep -o '[0-9]* inputs, [0-9]* API calls' "$log" | tail -1)
n_calls=$(echo "$calls" | awk '{print $3}')
echo "fuzz: $cc, ${elapsed} s: $calls, $(echo "$n_calls / $elapsed" | bc) API calls/s"
gcda=$(find "$fz" -name '*api.c.gcda' | grep -v fuzz_api | head -1)
gcov=gcov
if [ "$cc" != gcc ]; then
  gcov=
  for c in llvm-cov-15 llvm-cov; do command -v "$c" >/dev/null && { gcov="$c gcov"; break; }; done
fi
if [ -n "$gcda" ] && [ -n "$gcov" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && $gcov -o "$(dirname "$gcda")" "$gcda" 2>/dev/null) |
    awk -v want="$src/src/api.c" '/^File/ {f = $2; gsub(/\x27/, "", f)} /^Lines executed/ && index(f, "src/api.c") {print "fuzz: src/api.c " $0; exit}'
  rm -rf "$tmp"
fi
exit 0
