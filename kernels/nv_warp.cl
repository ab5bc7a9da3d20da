/* Warp-level primitives of the inline-PTX tensor-core kernels (kernels/flash_fwd_nv.cl, kernels/flash_bwd_nv.cl),
 * which the host puts after common.cl (and masks.h) and before the kernel's own file.
 *
 *   MMA(d, a, b0, b1)  d += a b: mma.sync.m16n8k16, 16-bit A (4 registers) and B (2), float32 accumulators
 *   SHFL_XOR(x, m)     float x from lane (lane ^ m) of the warp; SHFL_XOR_U the same for a uint
 *   pack2(lo, hi)      two floats rounded to the storage type, as one register (lo in the low half)
 *   EXP2(x)            2^x, ex2.approx on the GPU
 *   ld32(p)            two consecutive 16-bit elements of local memory (an even index) as one register
 *
 * FA_NV_EMULATE=1 does MMA, SHFL_XOR and pack2 in plain OpenCL C through local memory, so that the fragment
 * bookkeeping can be tested on any OpenCL device: the kernel then declares `__local uint emul[NTHREADS * 6]`
 * and makes every call in uniform control flow (they hold barriers). */

#ifndef FA_NV_EMULATE
#define FA_NV_EMULATE 0
#endif
#ifndef FA_ALIGNED
#define FA_ALIGNED 0 /* 1: every row of the tensors read as tiles starts on a 16-byte boundary */
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
 * head dim padded to the mma's k of 16 (zero columns), in 8-element chunks. */
#define NTHREADS 128
#define DP ((HEAD_DIM + 15) / 16 * 16)
#define CH (DP / 8)
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

#define MMA(d, a, b0, b1) mma16816(d, a, b0, b1)
#define SHFL_XOR_U(x, m) shfl_xor_u(x, m)
/* ex2.approx: relative error near 2^-22, far below the 16-bit inputs' rounding; ex2(-inf) = +0. */
#define EXP2(x) native_exp2(x)

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

#define MMA(d, a, b0, b1) mma_emul(d, a, b0, b1, emul)
#define SHFL_XOR_U(x, m) shfl_emul(x, m, emul)
#define EXP2(x) exp2(x)

#endif

#define SHFL_XOR(x, m) as_float(SHFL_XOR_U(as_uint(x), m))

/* Two consecutive 16-bit elements of local memory (an even element index) as one register. */
inline uint ld32(const __local ushort *p) { return *(const __local uint *)p; }

/* ---- tiles and fragments ---- */

/* Rows [0, rows) of a [rows][HEAD_DIM] tile of global memory (element `base`, row stride `stride`) into local
 * memory, row-major at rm (row stride rs) when rm_on, transposed at tr (element (r, c) at tr[c * ts + r]) when
 * tr_on. Rows >= valid and columns in [HEAD_DIM, DP) become zeros, so padding adds nothing to products.
 * Row-major only: consecutive work-items take consecutive 16-byte chunks of a row (coalesced); with the
 * transpose, consecutive rows, so that a warp's 16-bit transposed stores fall in consecutive words. */
static inline void nv_load_tile(__local ushort *rm, int rs, int rm_on, __local ushort *tr, int ts, int tr_on,
                                const __global ushort *gm, long base, long stride, int rows, int valid) {
  const int lid = get_local_id(0);
#if FA_ALIGNED
  for (int x = lid; x < rows * CH; x += NTHREADS) {
    const int r = tr_on ? x % rows : x / CH, c = tr_on ? x / rows : x % CH;
    uint4 val = (uint4)(0u);
    if (r < valid && c * 8 < HEAD_DIM) val = *(const __global uint4 *)(gm + base + r * stride + c * 8);
    if (rm_on) *(__local uint4 *)(rm + r * rs + c * 8) = val;
    if (tr_on) {
      __local ushort *d = tr + c * 8 * ts + r;
      d[0] = (ushort)val.s0, d[ts] = (ushort)(val.s0 >> 16);
      d[2 * ts] = (ushort)val.s1, d[3 * ts] = (ushort)(val.s1 >> 16);
      d[4 * ts] = (ushort)val.s2, d[5 * ts] = (ushort)(val.s2 >> 16);
      d[6 * ts] = (ushort)val.s3, d[7 * ts] = (ushort)(val.s3 >> 16);
    }
  }
#else
  for (int x = lid; x < rows * DP; x += NTHREADS) {
    const int r = tr_on ? x % rows : x / DP, c = tr_on ? x / rows : x % DP;
    const ushort e = (r < valid && c < HEAD_DIM) ? gm[base + r * stride + c] : (ushort)0;
    if (rm_on) rm[r * rs + c] = e;
    if (tr_on) tr[c * ts + r] = e;
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

/* The mma A fragments (16 rows x DP, k-steps of 16) of rows [row0, row0 + 16) of a global tile, straight into
 * registers: a[kk] = rows g, g + 8 x columns 16 kk + 2 t (+ 8). Once per kernel, so uncoalesced is fine. */
static inline void nv_a_frags(uint a[DP / 16][4], const __global ushort *gm, long base, long stride, int row0,
                              int valid) {
  const int lane = get_local_id(0) & 31, g = lane >> 2, t = lane & 3;
NV_UNROLL
  for (int kk = 0; kk < DP / 16; kk++) {
    a[kk][0] = nv_gld2(gm, base, stride, row0 + g, valid, kk * 16 + 2 * t);
    a[kk][1] = nv_gld2(gm, base, stride, row0 + g + 8, valid, kk * 16 + 2 * t);
    a[kk][2] = nv_gld2(gm, base, stride, row0 + g, valid, kk * 16 + 2 * t + 8);
    a[kk][3] = nv_gld2(gm, base, stride, row0 + g + 8, valid, kk * 16 + 2 * t + 8);
  }
}
