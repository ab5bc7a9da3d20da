/* What every CUDA kernel shares: the storage type chosen by FA_DTYPE, conversions to and from float, and
 * the inline PTX for shared-memory addresses, cp.async, ldmatrix and mma. No toolkit header is included
 * (NVRTC may not find one): conversions are PTX or bit operations, constants are literals.
 * FA_DTYPE: 0 float32, 1 float16, 2 bfloat16 (16-bit types travel as unsigned short bit patterns). */
#ifndef FA_CUDA_COMMON_CUH
#define FA_CUDA_COMMON_CUH

#ifndef FA_DTYPE
#define FA_DTYPE 0
#endif

#define FA_NEG_INF __int_as_float(0xff800000)
#define FA_FLT_MAX 3.402823466e+38f
#define FA_LN2 0.6931471805599453f

#if FA_DTYPE == 0
typedef float fa_elem;
#else
typedef unsigned short fa_elem;
#endif

static __device__ __forceinline__ float fa_f16_to_float(unsigned short h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

static __device__ __forceinline__ unsigned short fa_float_to_f16(float f) {
  unsigned short h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

static __device__ __forceinline__ float fa_bf16_to_float(unsigned short h) {
  return __uint_as_float((unsigned)h << 16);
}

static __device__ __forceinline__ unsigned short fa_float_to_bf16(float f) {
#if __CUDA_ARCH__ >= 800
  unsigned short h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
#else
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u); /* NaN stays NaN */
  u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
  return (unsigned short)(u >> 16);
#endif
}

static __device__ __forceinline__ float fa_load(const fa_elem *p) {
#if FA_DTYPE == 0
  return *p;
#elif FA_DTYPE == 1
  return fa_f16_to_float(*p);
#else
  return fa_bf16_to_float(*p);
#endif
}

static __device__ __forceinline__ fa_elem fa_from_float(float f) {
#if FA_DTYPE == 0
  return f;
#elif FA_DTYPE == 1
  return fa_float_to_f16(f);
#else
  return fa_float_to_bf16(f);
#endif
}

/* ---- tensor-core helpers (sm_80+) ---- */

/* The 32-bit shared-state-space address of a generic pointer into shared memory. */
static __device__ __forceinline__ unsigned fa_smem_addr(const void *p) {
  unsigned a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

/* Copy 16 bytes global -> shared without passing through registers; src_bytes 0 writes 16 zero bytes
 * (and reads nothing): that is how rows past the end of a tensor are zero-filled. */
static __device__ __forceinline__ void fa_cp_async16(unsigned dst, const void *src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

static __device__ __forceinline__ void fa_cp_async_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }

static __device__ __forceinline__ void fa_cp_async_wait_all(void) { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

/* Four 8x8 matrices of 16-bit elements; lane l gives the address of row l % 8 of matrix l / 8, and
 * receives in r[i] the elements (row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1) of matrix i. */
static __device__ __forceinline__ void fa_ldmatrix_x4(unsigned r[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/* The same, each matrix transposed on the way (the B operand from a row-major [k][n] tile). */
static __device__ __forceinline__ void fa_ldmatrix_x4_trans(unsigned r[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/* d += a b for a 16x16 (row) by 16x8 (col) product of 16-bit inputs with float accumulators. */
static __device__ __forceinline__ void fa_mma_16816(float d[4], const unsigned a[4], unsigned b0, unsigned b1) {
#if FA_DTYPE == 2
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* Two floats as one 32-bit register of two 16-bit values, lo in the low half (the lower column index, as
 * mma fragments want it). cvt packs its first source into the upper half. */
static __device__ __forceinline__ unsigned fa_pack2(float lo, float hi) {
  unsigned r;
#if FA_DTYPE == 2
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#endif
  return r;
}

#endif
