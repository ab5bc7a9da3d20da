/* What every OpenCL kernel shares; the host puts this file before each program's own files.
 *
 * Storage types: FA_DTYPE 0 = float32, 1 = float16, 2 = bfloat16 (the values of fa_dtype), set by the host
 * with -DFA_DTYPE=N. Arithmetic is always float32: fa_load() widens an element, fa_store() narrows one.
 * float16 goes through vload_half / vstore_half_rte, which are core OpenCL C and need no cl_khr_fp16 (PoCL
 * and NVIDIA lack it): a `half` pointer may be declared and passed to them without the extension.
 * bfloat16 is the high half of a float32: widening is a shift, narrowing rounds to nearest even. */

#ifndef FA_DTYPE
#define FA_DTYPE 0
#endif

/* bfloat16 <-> float32 by bits. NaN stays a (quiet) NaN; the rounding carry may overflow into inf, which is
 * the correctly rounded result. */
inline float fa_bf16_to_f32(ushort b) { return as_float((uint)b << 16); }
inline ushort fa_f32_to_bf16(float f) {
  uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (ushort)(u >> 16);
}

/* Element i (in elements, 64-bit) of a tensor of each storage type, as float32, and back. */
inline float fa_load_f32(const __global float *p, long i) { return p[i]; }
inline float fa_load_f16(const __global half *p, long i) { return vload_half((size_t)i, p); }
inline float fa_load_bf16(const __global ushort *p, long i) { return fa_bf16_to_f32(p[i]); }
inline void fa_store_f32(__global float *p, long i, float x) { p[i] = x; }
inline void fa_store_f16(__global half *p, long i, float x) { vstore_half_rte(x, (size_t)i, p); }
inline void fa_store_bf16(__global ushort *p, long i, float x) { p[i] = fa_f32_to_bf16(x); }

/* Eight consecutive elements from element i, as float32 (any alignment of i). */
inline float8 fa_load8_f32(const __global float *p, long i) { return vload8(0, p + i); }
inline float8 fa_load8_f16(const __global half *p, long i) { return vload_half8(0, p + i); }
inline float8 fa_load8_bf16(const __global ushort *p, long i) {
  return as_float8(convert_uint8(vload8(0, p + i)) << 16);
}

/* fa_t, fa_load(p, i), fa_load8(p, i) and fa_store(p, i, x) for the dtype this program was built for. */
#if FA_DTYPE == 0
typedef float fa_t;
#define fa_load fa_load_f32
#define fa_load8 fa_load8_f32
#define fa_store fa_store_f32
#elif FA_DTYPE == 1
typedef half fa_t;
#define fa_load fa_load_f16
#define fa_load8 fa_load8_f16
#define fa_store fa_store_f16
#elif FA_DTYPE == 2
typedef ushort fa_t;
#define fa_load fa_load_bf16
#define fa_load8 fa_load8_bf16
#define fa_store fa_store_bf16
#else
#error "FA_DTYPE must be 0 (f32), 1 (f16) or 2 (bf16)"
#endif

/* The running maximum of an online softmax starts here, not at -INFINITY, so that m_old - m_new is never
 * inf - inf; masked scores are -INFINITY, and exp2(-INFINITY - finite) = 0. */
#define FA_MAX_INIT (-FLT_MAX)
#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f
