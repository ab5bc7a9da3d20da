/* Warp-level primitives of the inline-PTX tensor-core kernels (kernels/flash_fwd_nv.cl, kernels/flash_bwd_nv.cl),
 * which the host puts after common.cl (and masks.h) and before the kernel's own file.
 *
 *   MMA(d, a, b0, b1)  d += a b: mma.sync.m16n8k16, 16-bit A (4 registers) and B (2), float32 accumulators
 *   SHFL_XOR(x, m)     float x from lane (lane ^ m) of the warp; SHFL_XOR_U the same for a uint
 *   pack2(lo, hi)      two floats rounded to the storage type, as one register (lo in the low half)
 *   EXP2(x)            2^x, ex2.approx on the GPU
 *   FRAG_A, FRAG_B, FRAG_BT  mma operands from a row-major tile in local memory: ldmatrix (FA_NV_LDMATRIX=1)
 *                      or 32-bit / 16-bit local loads (0); see below
 *   nv_fetch, nv_put   a tile from global to local memory: cp.async (FA_NV_CPASYNC=1), or staged through
 *                      registers, or element by element (unaligned tensors); see below
 *
 * FA_NV_EMULATE=1 does MMA, SHFL_XOR, pack2, ldmatrix and cp.async in plain OpenCL C (through local memory for
 * the warp exchanges, cp.async as a plain copy), so that the fragment bookkeeping can be tested on any OpenCL
 * device: the kernel then declares `__local uint emul[NTHREADS * 6]` and makes every call in uniform control
 * flow (they hold barriers). The emulated ldmatrix gives each lane the elements the PTX ISA's ldmatrix gives
 * it, from the row addresses the lanes pass, so a wrong lane offset fails the tests there too.
 *
 * Shared-memory addresses: ldmatrix and cp.async take a 32-bit address in the .shared window. A __local
 * pointer converted to an integer is its address in that state space (NVPTX keeps __local pointers in
 * address space 3; clang's PTX shows `mov.u64 %rd, <.shared symbol>` then cvt.u32.u64), so nv_saddr() is a
 * plain cast. Were a driver to give a generic address instead, ldmatrix would read outside the window: a
 * launch error or wrong values, which the OpenCL suites with FLASHATTN_OPENCL_NV_TC=force report. */

#ifndef FA_NV_EMULATE
#define FA_NV_EMULATE 0
#endif
#ifndef FA_ALIGNED
#define FA_ALIGNED 0 /* 1: every row of the tensors read as tiles starts on a 16-byte boundary */
#endif
#ifndef FA_NV_LDMATRIX
#define FA_NV_LDMATRIX 0 /* 1: mma operands from local memory through ldmatrix */
#endif
#ifndef FA_NV_CPASYNC
#define FA_NV_CPASYNC 0 /* 1: aligned tiles move to local memory through cp.async (else through registers) */
#endif
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif

/* Loops over fragments: unrolled on the GPU (register arrays need constant indices); rolled when emulating,
 * where every MMA holds barriers and PoCL's compile time grows with the barriers in the unrolled code. */
#if FA_NV_EMULATE
#define NV_UNROLL _Pragma("unroll 1")
#else
#define NV_UNROLL _Pragma("unroll")
#endif

/* The geometry both kernels share: groups of 4 warps (NVIDIA puts 32 consecutive local ids in a warp), the
 * head dim padded with zero columns to the mma's k of 16, to 32 above 128 (so that the backward can give each
 * of two warps half of it in whole k-steps), in 8-element (16-byte) chunks; local rows DS elements apart: an
 * odd number of 16-byte units, so the 8 rows of an ldmatrix phase or of a 32-bit fragment load fall in 8
 * different bank groups. src/opencl/cl_flash_nv.c's fa_cl_nv_dp() is the host's copy of DP. */
#define NTHREADS 128
#define DP (HEAD_DIM <= 128 ? (HEAD_DIM + 15) / 16 * 16 : (HEAD_DIM + 31) / 32 * 32)
#define CH (DP / 8)
#define DS (DP + 8)

/* ---- the warp-level primitives ---- */

#if !FA_NV_EMULATE

/* d += a b, 16x16 (row) by 16x8 (col), 16-bit inputs, float32 accumulators. Not volatile: a pure function
 * of its operands, which the compiler may schedule freely (as flash_fwd.cu's). */
inline void mma16816(float *d, const uint *a, uint b0, uint b1) {
  float d0 = d[0], d1 = d[1], d2 = d[2], d3 = d[3];
#if FA_DTYPE == 2
  __asm__("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(d0), "f"(d1), "f"(d2), "f"(d3));
#else
  __asm__("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(d0), "f"(d1), "f"(d2), "f"(d3));
#endif
}

/* x from lane (lane ^ mask) of the warp. */
inline uint shfl_xor_u(uint x, int mask) {
  uint r;
  __asm__ __volatile__("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(x), "r"(mask));
  return r;
}

/* Two floats as one register of two 16-bit values, lo in the low half (cvt packs its first source high). */
inline uint pack2(float lo, float hi) {
  uint r;
#if FA_DTYPE == 2
  __asm__("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  __asm__("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}

/* The 32-bit .shared address of a __local pointer (see the head of this file). */
inline uint nv_saddr(const __local void *p) { return (uint)(ulong)p; }

/* Four 8x8 matrices of 16-bit elements (ldmatrix .x4): lane l passes the address of row l % 8 of matrix l / 8
 * (16-byte aligned) and receives in r[i] matrix i's elements (row l / 4, columns 2 (l % 4), 2 (l % 4) + 1);
 * with trans, each matrix transposed on the way: (rows 2 (l % 4), 2 (l % 4) + 1, column l / 4). Volatile: it
 * reads memory the compiler does not see, so it must stay between the barriers that publish the tile. */
inline void nv_ldsm(uint *r, const __local ushort *p, int off, int trans) {
  const uint addr = nv_saddr(p) + (uint)off * 2u;
  if (trans)
    __asm__ __volatile__("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                         : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                         : "r"(addr));
  else
    __asm__ __volatile__("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                         : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                         : "r"(addr));
}

/* 16 bytes global -> local without passing through registers (cp.async.cg, L2 only); n = 0 writes 16 zero
 * bytes and reads nothing (src must still be a valid address). One commit group per tile; nv_cp_wait() waits
 * for every group this work-item issued. */
inline void nv_cp16(__local ushort *dst, const __global ushort *src, int n) {
  __asm__ __volatile__("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(nv_saddr(dst)), "l"((ulong)src), "r"(n)
                       : "memory");
}
inline void nv_cp_commit(void) { __asm__ __volatile__("cp.async.commit_group;" ::: "memory"); }
inline void nv_cp_wait(void) { __asm__ __volatile__("cp.async.wait_group 0;" ::: "memory"); }

/* p, hidden from the optimizer: the fragment addresses of a tile are the same in every iteration of the key
 * loop, and hoisted out of it they would hold a register each (an inline-asm operand cannot take the
 * [reg + offset] form that ptxas folds); computed inside the loop from this, they are a register plus a
 * constant at each use. */
inline const __local ushort *nv_fresh(const __local ushort *p) {
  uint a;
  __asm__ __volatile__("mov.b32 %0, %1;" : "=r"(a) : "r"(nv_saddr(p)));
  return (const __local ushort *)(ulong)a;
}

/* The same for a global pointer (nv_fetch's running source pointer). */
inline const __global ushort *nv_fresh_g(const __global ushort *p) {
  ulong a;
  __asm__ __volatile__("mov.b64 %0, %1;" : "=l"(a) : "l"((ulong)p));
  return (const __global ushort *)a;
}

#define MMA(d, a, b0, b1) mma16816(d, a, b0, b1)
#define SHFL_XOR_U(x, m) shfl_xor_u(x, m)
#define NV_FRESH(p) nv_fresh(p)
#define NV_FRESH_G(p) nv_fresh_g(p)
#define LDSM(r, p, off, trans) nv_ldsm(r, p, off, trans)
/* ex2.approx: relative error near 2^-22, far below the 16-bit inputs' rounding; ex2(-inf) = +0. */
#define EXP2(x) native_exp2(x)
#define NV_EMUL_ARG

#else /* FA_NV_EMULATE: the same operations with local-memory exchanges; every call is made by the whole
         group in uniform control flow, so barriers are legal. */

inline ushort to16(float x) {
#if FA_DTYPE == 2
  return fa_f32_to_bf16(x);
#else
  ushort h[1];
  vstore_half_rte(x, 0, (__private half *)h);
  return h[0];
#endif
}

inline float from16(uint h) {
#if FA_DTYPE == 2
  return as_float((h & 0xffffu) << 16);
#else
  ushort b[1] = {(ushort)h};
  return vload_half(0, (const __private half *)b);
#endif
}

inline uint pack2(float lo, float hi) { return (uint)to16(lo) | ((uint)to16(hi) << 16); }

/* scratch: 6 words per work-item (a[0..3], b0, b1). */
inline void mma_emul(float *d, const uint *a, uint b0, uint b1, __local uint *scratch) {
  const int lid = get_local_id(0), lane = lid & 31, g = lane >> 2, t = lane & 3;
  __local uint *w = scratch + (lid - lane) * 6; /* this warp's 32 x 6 words */
  for (int x = 0; x < 4; x++) w[lane * 6 + x] = a[x];
  w[lane * 6 + 4] = b0, w[lane * 6 + 5] = b1;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int i = 0; i < 4; i++) {
    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
    float acc = 0.0f;
    for (int k = 0; k < 16; k++) {
      /* A[row][k]: lane (row % 8) * 4 + (k % 8) / 2, register (row >= 8) + 2 (k >= 8), half k & 1 */
      uint ar = w[((row & 7) * 4 + (k & 7) / 2) * 6 + (row >> 3) + 2 * (k >> 3)];
      /* B[k][col]: lane col * 4 + (k % 8) / 2, register 4 + (k >= 8), half k & 1 */
      uint br = w[(col * 4 + (k & 7) / 2) * 6 + 4 + (k >> 3)];
      acc += from16((k & 1) ? ar >> 16 : ar) * from16((k & 1) ? br >> 16 : br);
    }
    d[i] += acc;
  }
  barrier(CLK_LOCAL_MEM_FENCE);
}

inline uint shfl_emul(uint x, int mask, __local uint *scratch) {
  const int lid = get_local_id(0);
  scratch[lid] = x;
  barrier(CLK_LOCAL_MEM_FENCE);
  uint r = scratch[lid ^ mask];
  barrier(CLK_LOCAL_MEM_FENCE);
  return r;
}

/* ldmatrix .x4 as the PTX ISA defines it (see nv_ldsm): the lanes' row pointers go through scratch (two words
 * each), then each lane gathers its elements. */
inline void ldsm_emul(uint *r, const __local ushort *p, int off, int trans, __local uint *scratch) {
  const int lid = get_local_id(0), lane = lid & 31;
  __local uint *w = scratch + (lid - lane) * 2; /* this warp's 64 words */
  const ulong a = (ulong)(p + off);
  w[2 * lane] = (uint)a, w[2 * lane + 1] = (uint)(a >> 32);
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int i = 0; i < 4; i++) {
    const int src0 = trans ? 8 * i + 2 * (lane & 3) : 8 * i + (lane >> 2), src1 = trans ? src0 + 1 : src0;
    const __local ushort *p0 = (const __local ushort *)((ulong)w[2 * src0] | ((ulong)w[2 * src0 + 1] << 32));
    const __local ushort *p1 = (const __local ushort *)((ulong)w[2 * src1] | ((ulong)w[2 * src1 + 1] << 32));
    /* trans: column lane / 4 of rows src0, src1; else row src0, columns 2 (lane % 4), + 1 */
    r[i] = trans ? (uint)p0[lane >> 2] | ((uint)p1[lane >> 2] << 16)
                 : (uint)p0[2 * (lane & 3)] | ((uint)p0[2 * (lane & 3) + 1] << 16);
  }
  barrier(CLK_LOCAL_MEM_FENCE);
}

/* cp.async as a plain copy: the copy is done when nv_cp16 returns, so commit and wait have nothing to do. */
inline void nv_cp16(__local ushort *dst, const __global ushort *src, int n) {
  *(__local uint4 *)dst = n ? *(const __global uint4 *)src : (uint4)(0u);
}
inline void nv_cp_commit(void) {}
inline void nv_cp_wait(void) {}

#define NV_FRESH(p) (p)
#define NV_FRESH_G(p) (p)
#define MMA(d, a, b0, b1) mma_emul(d, a, b0, b1, emul)
#define SHFL_XOR_U(x, m) shfl_emul(x, m, emul)
#define LDSM(r, p, off, trans) ldsm_emul(r, p, off, trans, emul)
#define EXP2(x) exp2(x)
#define NV_EMUL_ARG , emul

#endif

#define SHFL_XOR(x, m) as_float(SHFL_XOR_U(as_uint(x), m))

/* Two consecutive 16-bit elements of local memory (an even element index) as one register; two elements a
 * row apart (rows of `stride` elements) as one register, the first in the low half. */
inline uint ld32(const __local ushort *p) { return *(const __local uint *)p; }
inline uint ld2r(const __local ushort *p, int stride) { return (uint)p[0] | ((uint)p[stride] << 16); }

/* ---- mma operands from a row-major tile s in local memory (row stride DS elements) ----
 *
 * Each operand kind starts from this lane's own pointer into the tile, taken once per tile (per iteration of
 * the loop that refills it) with NV_LANE_A, NV_LANE_B or NV_LANE_BT; then
 * FRAG_A(a, p, r0, c0)   the A fragment of rows r0 .. r0 + 15, columns (k) c0 .. c0 + 15
 * FRAG_B(b, p, r0, c0)   the B operands of two n-tiles whose n index is the tile's row: b[0], b[1] for rows
 *                        r0 .. r0 + 7, b[2], b[3] for rows r0 + 8 .. r0 + 15, k = columns c0 .. c0 + 15
 *                        (K of S = Q K^T, Q of S^T = K Q^T)
 * FRAG_BT(b, p, r0, c0)  the B operands of two n-tiles whose k index is the tile's row: k = rows r0 .. r0 + 15,
 *                        b[0], b[1] for columns (n) c0 .. c0 + 7, b[2], b[3] for c0 + 8 .. c0 + 15
 *                        (V of O += P V, dO of dV += P^T dO, ...)
 * r0 and c0 are compile-time constants wherever the loops unroll, so each use is the lane pointer plus a
 * constant. Macros, so that the emulation's scratch is the calling kernel's. ldmatrix: lane l's row
 * address, as flash_fwd.cu's a_off, k_off, v_off (NV_FRESH keeps them from being hoisted out of the key loop,
 * one register each); otherwise the fragment layouts (flash_fwd_nv.cl's head) element by element: 32-bit
 * loads where two k are adjacent in a row (A, B), 16-bit pairs a row apart for BT. */
#define NV_LANE (get_local_id(0) & 31)
#if FA_NV_LDMATRIX
#define NV_LANE_A(s) NV_FRESH((s) + (NV_LANE & 15) * DS + (NV_LANE >> 4) * 8)
#define NV_LANE_B(s) NV_FRESH((s) + ((NV_LANE & 7) + ((NV_LANE >> 4) << 3)) * DS + ((NV_LANE >> 3) & 1) * 8)
#define NV_LANE_BT(s) NV_FRESH((s) + ((NV_LANE & 7) + (((NV_LANE >> 3) & 1) << 3)) * DS + (NV_LANE >> 4) * 8)
#define FRAG_A(a, p, r0, c0) LDSM(a, p, (r0) * DS + (c0), 0)
#define FRAG_B(b, p, r0, c0) LDSM(b, p, (r0) * DS + (c0), 0)
#define FRAG_BT(b, p, r0, c0) LDSM(b, p, (r0) * DS + (c0), 1)
#else
#define NV_LANE_A(s) ((s) + (NV_LANE >> 2) * DS + 2 * (NV_LANE & 3))
#define NV_LANE_B(s) NV_LANE_A(s)
#define NV_LANE_BT(s) ((s) + 2 * (NV_LANE & 3) * DS + (NV_LANE >> 2))
#define FRAG_A(a, p, r0, c0)                                                                                   \
  do {                                                                                                         \
    const __local ushort *p_ = (p) + (r0) * DS + (c0);                                                         \
    (a)[0] = ld32(p_), (a)[1] = ld32(p_ + 8 * DS), (a)[2] = ld32(p_ + 8), (a)[3] = ld32(p_ + 8 * DS + 8);     \
  } while (0)
#define FRAG_B(b, p, r0, c0)                                                                                   \
  do {                                                                                                         \
    const __local ushort *p_ = (p) + (r0) * DS + (c0);                                                         \
    (b)[0] = ld32(p_), (b)[1] = ld32(p_ + 8), (b)[2] = ld32(p_ + 8 * DS), (b)[3] = ld32(p_ + 8 * DS + 8);     \
  } while (0)
#define FRAG_BT(b, p, r0, c0)                                                                                  \
  do {                                                                                                         \
    const __local ushort *p_ = (p) + (r0) * DS + (c0);                                                         \
    (b)[0] = ld2r(p_, DS), (b)[1] = ld2r(p_ + 8 * DS, DS), (b)[2] = ld2r(p_ + 8, DS),                          \
    (b)[3] = ld2r(p_ + 8 * DS + 8, DS);                                                                        \
  } while (0)
#endif

/* ---- tiles: global -> local memory ----
 *
 * Rows [0, rows) of a [rows][HEAD_DIM] tile of global memory (element `base`, row stride `stride`, 1 <= valid
 * <= rows rows present) to local memory row-major at dst (row stride DS): rows >= valid and columns in
 * [HEAD_DIM, DP) become zeros, so that padding adds nothing to products (and no stale NaN meets a zero P).
 * nv_fetch starts the move, nv_put completes it; between the two the work-items may compute:
 *   FA_ALIGNED and FA_NV_CPASYNC  nv_fetch issues cp.async per 16-byte chunk (one commit group), nv_put waits
 *   FA_ALIGNED only               nv_fetch loads the chunks into the staging registers st (NV_STAGED(rows)
 *                                 uint4 per work-item), nv_put stores them
 *   unaligned                     nv_fetch does nothing, nv_put copies element by element
 * dst is written only by nv_put, except with cp.async (from nv_fetch on): the caller's barriers must keep
 * dst's readers before nv_fetch in that case. Consecutive work-items take consecutive chunks of a row
 * (coalesced). rows is a compile-time constant at every call, so the chunk loops unroll. */
#define NV_STAGED(rows) (((rows) * CH + NTHREADS - 1) / NTHREADS)

static inline void nv_fetch(uint4 *st, __local ushort *dst, const __global ushort *gm, long base, long stride,
                            int rows, int valid) {
#if FA_ALIGNED && FA_NV_CPASYNC && NTHREADS % CH == 0
  /* Work-item lid copies chunk lid % CH of rows lid / CH + NTHREADS / CH * i through one running source
   * pointer and one running destination, as flash_fwd.cu's load_tile, both laundered at each step: computed
   * from base per chunk, the compiler hoisted every chunk's 64-bit source offset and its shared address out of
   * the key loop (clang's PTX at D 128: about 48 registers for the K and V tiles). */
  (void)st;
  const int lid = get_local_id(0), c = lid % CH, r0 = lid / CH, rpi = NTHREADS / CH;
  const int okc = c * 8 < HEAD_DIM;
  const __global ushort *row = NV_FRESH_G(gm + base + (long)r0 * stride + c * 8);
  __local ushort *d = dst + r0 * DS + c * 8;
  const long step = (long)rpi * stride;
NV_UNROLL
  for (int i = 0; i < (rows + rpi - 1) / rpi; i++) {
    const int r = r0 + i * rpi;
    if (rows % rpi == 0 || r < rows) {
      const int ok = okc && r < valid;
      nv_cp16((__local ushort *)NV_FRESH(d), ok ? row : gm + base, ok ? 16 : 0); /* row 0: valid */
    }
    row = NV_FRESH_G(row + step);
    d += rpi * DS;
  }
  nv_cp_commit();
#elif FA_ALIGNED
  const int lid = get_local_id(0);
NV_UNROLL
  for (int i = 0; i < NV_STAGED(rows); i++) {
    const int x = lid + i * NTHREADS, r = x / CH, c = x % CH;
    if (x < rows * CH) {
      const int ok = r < valid && c * 8 < HEAD_DIM;
      const __global ushort *src = gm + base + (ok ? (long)r * stride + c * 8 : 0); /* row 0: valid */
#if FA_NV_CPASYNC
      nv_cp16(dst + r * DS + c * 8, src, ok ? 16 : 0);
#else
      st[i] = ok ? *(const __global uint4 *)src : (uint4)(0u);
#endif
    }
  }
#if FA_NV_CPASYNC
  nv_cp_commit();
#endif
#endif
}

static inline void nv_put(const uint4 *st, __local ushort *dst, const __global ushort *gm, long base, long stride,
                          int rows, int valid) {
  const int lid = get_local_id(0);
#if FA_ALIGNED && FA_NV_CPASYNC
  nv_cp_wait();
#elif FA_ALIGNED
NV_UNROLL
  for (int i = 0; i < NV_STAGED(rows); i++) {
    const int x = lid + i * NTHREADS, r = x / CH, c = x % CH;
    if (x < rows * CH) *(__local uint4 *)(dst + r * DS + c * 8) = st[i];
  }
#else
  for (int x = lid; x < rows * DP; x += NTHREADS) {
    const int r = x / DP, c = x % DP;
    dst[r * DS + c] = (r < valid && c < HEAD_DIM) ? gm[base + (long)r * stride + c] : (ushort)0;
  }
#endif
}

/* Elements (row, col) and (row, col + 1) of a [rows][HEAD_DIM] tile of global memory as one register, zero
 * for row >= valid or col >= HEAD_DIM (col even; HEAD_DIM is a multiple of 8). */
static inline uint nv_gld2(const __global ushort *gm, long base, long stride, int row, int valid, int col) {
  if (row >= valid || col >= HEAD_DIM) return 0u;
  const __global ushort *p = gm + base + (long)row * stride + col;
#if FA_ALIGNED
  return *(const __global uint *)p;
#else
  return (uint)p[0] | ((uint)p[1] << 16);
#endif
}

/* The mma A fragments of rows [row0, row0 + 16) of a global tile, columns [col0, col0 + 16 ksteps), straight
 * into registers: a[kk] = rows g, g + 8 x columns col0 + 16 kk + 2 t (+ 8). Once per kernel, so uncoalesced
 * is fine. */
static inline void nv_a_frags(uint a[][4], int ksteps, int col0, const __global ushort *gm, long base, long stride,
                              int row0, int valid) {
  const int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;
NV_UNROLL
  for (int kk = 0; kk < ksteps; kk++) {
    const int c = col0 + kk * 16 + 2 * t;
    a[kk][0] = nv_gld2(gm, base, stride, row0 + g, valid, c);
    a[kk][1] = nv_gld2(gm, base, stride, row0 + g + 8, valid, c);
    a[kk][2] = nv_gld2(gm, base, stride, row0 + g, valid, c + 8);
    a[kk][3] = nv_gld2(gm, base, stride, row0 + g + 8, valid, c + 8);
  }
}

/* ---- the inference options (FA_INFER: varlen, the causal / sliding-window band, ALiBi, softcap) ----
 *
 * Both kernels take masks.h's rules: fa_seq_span for a sequence's rows, fa_band_lo / fa_band_hi / fa_band_tile /
 * fa_band_rows for the band and the walk over it, and the modifiers below on the base-2 scaled score. */
#ifndef FA_INFER
#define FA_INFER 0
#endif
#if FA_INFER
#if (defined(FA_BLOCK_MASK) && FA_BLOCK_MASK) || (defined(FA_DROPOUT) && FA_DROPOUT)
#error "FA_INFER does not combine with FA_BLOCK_MASK or FA_DROPOUT"
#endif
#define FA_INFER_ARGS FA_INFER_CL_PARAMS /* masks.h */
/* x (base 2, scaled) of a row at diagonal position p and key j: softcap (fa_softcap_fast: tanh's evaluation
 * costs registers these kernels do not have), then ALiBi; *g gets softcap's factor on dS (1 without it). */
inline float nv_mod_score(float x, float softcap2, float slope2, long p, int j, float *g) {
  *g = 1.0f;
  if (softcap2 > 0.0f) {
    x = fa_softcap_fast(x, softcap2);
    *g = fa_softcap_grad(x, softcap2);
  }
  return slope2 != 0.0f ? x + fa_alibi(slope2, p, j) : x;
}
/* ALiBi's slope of head h of sequence b, in base 2 (0: none). */
#define NV_SLOPE2(b, h) (has_alibi ? alibi[al_off + (long)(b) * al_sb + (long)(h) * al_sh] * FA_LOG2E : 0.0f)
/* The sequence of grid index b: query rows qfirst .. qfirst + Sq - 1, keys kfirst .. kfirst + Sk - 1 of tensor
 * batch bt (varlen: batch 0 of the packed axes; else all of batch b). */
#define NV_SEQ_SETUP(b)                                           \
  int Sq = Sq_all, Sk = Sk_all, qfirst = 0, kfirst = 0, bt = (b); \
  if (varlen) {                                                   \
    fa_seq_span(cu_q + cuq_off, cuq_s, (b), Sq_all, &qfirst, &Sq); \
    fa_seq_span(cu_k + cuk_off, cuk_s, (b), Sk_all, &kfirst, &Sk); \
    bt = 0;                                                       \
  }
#else
#define FA_INFER_ARGS
#define NV_SEQ_SETUP(b) const int Sq = Sq_all, Sk = Sk_all, qfirst = 0, kfirst = 0, bt = (b);
#endif
