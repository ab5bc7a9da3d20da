#!/bin/bash
# Registers and spills of the OpenCL tensor-core kernels without a GPU: their OpenCL C through clang's nvptx
# backend (with libclc, and stand-ins for the built-ins libclc leaves external there) to PTX, then ptxas -v.
# NVIDIA's own OpenCL compiler may allocate differently (FLASHATTN_OPENCL_NV_DEFINES=-cl-nv-verbose with
# FLASHATTN_OPENCL_BUILD_LOG=1 prints its counts on the GPU).
#   dev/nv_ptx.sh flash_fwd_nv.cl -DFA_DTYPE=2 -DHEAD_DIM=128 -DBLOCK_N=64 -DFA_ALIGNED=1 -DFA_NV_LDMATRIX=1 \
#     -DFA_NV_CPASYNC=1 [-DFA_INFER=1 ...]          (flash_bwd_nv.cl takes -DBLOCK_M and -DBLOCK_N)
#   dev/nv_ptx.sh decode_nv.cl -DFA_DTYPE=1 -DHEAD_DIM=128 -DFA_DEC_MODS=0 -DFA_DEC_WARPS=1 -DFA_DEC_STAGES=4 \
#     -DFA_DEC_PENDING=3 -DFA_NV_LDMATRIX=1 -DFA_NV_CPASYNC=1
# Environment: CLANG (clang-15), PTXAS (/usr/local/cuda/bin/ptxas), LIBCLC (/usr/lib/clc/nvptx64--nvidiacl.bc),
# ARCH (sm_90), PTXAS_ARGS (e.g. -maxrregcount 168), KEEP (a folder for the .cl and .ptx).
set -eu
file=${1:?usage: nv_ptx.sh KERNEL.cl DEFINES...}
shift
kdir=$(cd "$(dirname "$0")/../kernels" && pwd)
work=${KEEP:-$(mktemp -d)}
mkdir -p "$work"
cat > "$work/prelude.cl" <<'CL'
inline float nvptx_ex2_(float x) { float y; __asm__("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
inline float nvptx_lg2_(float x) { float y; __asm__("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
inline float nvptx_rcp_(float x) { float y; __asm__("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
#define native_exp2(x) nvptx_ex2_(x)
#define exp2(x) nvptx_ex2_(x)
#define log2(x) nvptx_lg2_(x)
#define native_divide(a, b) ((a) * nvptx_rcp_(b))
CL
# decode_nv.cl also takes decode.h (after masks.h, as src/opencl/cl_decode_nv.c builds it).
dec=""
[ "$file" = decode_nv.cl ] && dec="$kdir/decode.h"
# shellcheck disable=SC2086
cat "$work/prelude.cl" "$kdir/common.cl" "$kdir/masks.h" $dec "$kdir/nv_warp.cl" "$kdir/$file" > "$work/k.cl"
"${CLANG:-clang-15}" -x cl -cl-std=CL1.2 -target nvptx64-unknown-nvidiacl -march=sm_80 -O3 \
  -Xclang -finclude-default-header -Xclang -mlink-builtin-bitcode -Xclang "${LIBCLC:-/usr/lib/clc/nvptx64--nvidiacl.bc}" \
  -Wno-linker-warnings "$@" -S "$work/k.cl" -o "$work/k.ptx"
# shellcheck disable=SC2086
"${PTXAS:-/usr/local/cuda/bin/ptxas}" -arch="${ARCH:-sm_90}" -v ${PTXAS_ARGS:-} "$work/k.ptx" -o /dev/null 2>&1 |
  grep -E "Compiling|registers|spill" | sed 's/ptxas info    : //'
[ -n "${KEEP:-}" ] || rm -rf "$work"
