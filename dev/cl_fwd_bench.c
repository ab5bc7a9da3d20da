/* Workshop for the OpenCL flash forward (kernels/flash_fwd.cl): correctness against a float64 loop, and
 * timings next to a naive single-thread CPU loop and CLBlast's SGEMM on the same OpenCL device.
 *
 *   cl_fwd_bench check              many shapes, dtypes, layouts; prints the relative errors, exits 1 on a miss
 *   cl_fwd_bench bench [S D B H T]  flash forward GFLOP/s (causal and not), OpenCL profiling, median of 10;
 *                                   T = 0/1/2 for f32/f16/bf16
 *   cl_fwd_bench naive [S D B H]    the naive float32 CPU loop (one thread), GFLOP/s
 *   cl_fwd_bench tiles              the tiles for head dims 16..256
 *   cl_fwd_bench sgemm              CLBlast SGEMM GFLOP/s: batched Q K^T shape and a square 1024^3
 *
 * Public API only, plus a cl_command_queue of our own (profiling on) handed in as native_queue, so that
 * markers around fa_forward() give device timestamps. FLOPs: 4 B H Sq Sk D, halved when causal.
 * Knobs the library reads: FLASHATTN_LOCAL_MEM_BYTES, FLASHATTN_OPENCL_VEC (1/2/4/8/16: vector width),
 * FLASHATTN_OPENCL_TILES=gpu|cpu (the other kernel layout). Results: docs/PERFORMANCE.md.
 *
 * Build, after `ninja -C build-ocl` (CLBlast only for the sgemm mode; not part of the meson build):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Iinclude dev/cl_fwd_bench.c -o build-ocl/cl_fwd_bench -Lbuild-ocl \
 *       -lflashattn -Wl,-rpath,$PWD/build-ocl -lOpenCL -lclblast -lm */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <clblast_c.h>
#include <flashattn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define CHECK_FA(call)                                                                          \
  do {                                                                                          \
    fa_status st_ = (call);                                                                     \
    if (st_ != FA_SUCCESS) {                                                                    \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, fa_status_string(st_), \
              fa_context_last_error(g_ctx));                                                    \
      exit(1);                                                                                  \
    }                                                                                           \
  } while (0)
#define CHECK_CL(call)                                                                  \
  do {                                                                                  \
    cl_int e_ = (call);                                                                 \
    if (e_ != CL_SUCCESS) {                                                             \
      fprintf(stderr, "%s:%d: %s: OpenCL error %d\n", __FILE__, __LINE__, #call, e_); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

static fa_context *g_ctx;
static cl_context g_clctx;
static cl_command_queue g_queue;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* uniform in [-1, 1) */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

static uint16_t f32_to_f16(float f) { /* round to nearest even, IEEE half */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    mant |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - exp);
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}
static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, x;
  if (exp == 0) {
    float f = ldexpf((float)mant, -24);
    return sign ? -f : f;
  }
  if (exp == 31) x = sign | 0x7f800000u | (mant << 13);
  else x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}
static uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
static float bf16_to_f32(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
/* Store x in dtype at element i of raw; return the value actually stored (what the device reads). */
static double put(void *raw, size_t i, fa_dtype dt, double x) {
  if (dt == FA_F32) return ((float *)raw)[i] = (float)x;
  if (dt == FA_F16) return f16_to_f32(((uint16_t *)raw)[i] = f32_to_f16((float)x));
  return bf16_to_f32(((uint16_t *)raw)[i] = f32_to_bf16((float)x));
}
static double get(const void *raw, size_t i, fa_dtype dt) {
  if (dt == FA_F32) return ((const float *)raw)[i];
  if (dt == FA_F16) return f16_to_f32(((const uint16_t *)raw)[i]);
  return bf16_to_f32(((const uint16_t *)raw)[i]);
}

typedef struct shape {
  int b, sq, sk, hq, hkv, d, causal;
  fa_dtype dt;
  int layout; /* 0 packed BSHD, 1 BHSD-ordered strides, 2 padded rows and an offset */
  float scale;
} shape;

/* Strides (elements) of a [B, S, H, D] tensor in a layout, its element offset and the elements it spans. */
static void layout_of(int layout, int b, int s, int h, int d, int64_t st[4], size_t *off, size_t *span) {
  (void)b;
  if (layout == 1) { /* memory order B, H, S, D */
    st[3] = 1, st[1] = d, st[2] = (int64_t)s * d, st[0] = (int64_t)h * s * d;
    *off = 0;
  } else if (layout == 2) { /* each (s) row padded by 24 elements, 40 elements before the first */
    st[3] = 1, st[2] = d, st[1] = (int64_t)h * d + 24, st[0] = st[1] * s + 8;
    *off = 40;
  } else {
    st[3] = 1, st[2] = d, st[1] = (int64_t)h * d, st[0] = (int64_t)s * h * d;
    *off = 0;
  }
  *span = *off + (size_t)st[0] * b;
}

/* float64 reference for one (b, h, i) row: o (d values) and lse. */
static void ref_row(const shape *c, const double *q, const double *k, const double *v, int bb, int h, int i,
                    double *o, double *lse) {
  int hk = h / (c->hq / c->hkv);
  double scale = c->scale > 0 ? c->scale : 1.0 / sqrt((double)c->d);
  double *s = malloc(sizeof(double) * (size_t)c->sk);
  double m = -INFINITY;
  for (int j = 0; j < c->sk; j++) {
    if (c->causal && j > i + (c->sk - c->sq)) {
      s[j] = -INFINITY;
      continue;
    }
    double acc = 0;
    for (int x = 0; x < c->d; x++)
      acc += q[(((size_t)bb * c->sq + i) * c->hq + h) * c->d + x] * k[(((size_t)bb * c->sk + j) * c->hkv + hk) * c->d + x];
    s[j] = acc * scale;
    if (s[j] > m) m = s[j];
  }
  for (int x = 0; x < c->d; x++) o[x] = 0;
  if (m == -INFINITY) {
    *lse = -INFINITY;
    free(s);
    return;
  }
  double l = 0;
  for (int j = 0; j < c->sk; j++) {
    if (s[j] == -INFINITY) continue;
    double p = exp(s[j] - m);
    l += p;
    for (int x = 0; x < c->d; x++) o[x] += p * v[(((size_t)bb * c->sk + j) * c->hkv + hk) * c->d + x];
  }
  for (int x = 0; x < c->d; x++) o[x] /= l;
  *lse = m + log(l);
  free(s);
}

static fa_buffer *upload(const void *host, size_t bytes) {
  fa_buffer *buf;
  CHECK_FA(fa_buffer_create(g_ctx, bytes, &buf));
  CHECK_FA(fa_buffer_write(g_ctx, buf, 0, host, bytes));
  return buf;
}

/* One case: returns 0 when within tolerance. */
static int run_case(const shape *c) {
  size_t es = fa_dtype_size(c->dt);
  int64_t qst[4], kst[4], ost[4];
  size_t qoff, koff, ooff, qspan, kspan, ospan;
  layout_of(c->layout, c->b, c->sq, c->hq, c->d, qst, &qoff, &qspan);
  layout_of(c->layout, c->b, c->sk, c->hkv, c->d, kst, &koff, &kspan);
  layout_of(c->layout, c->b, c->sq, c->hq, c->d, ost, &ooff, &ospan);
  size_t nq = (size_t)c->b * c->sq * c->hq * c->d, nk = (size_t)c->b * c->sk * c->hkv * c->d;
  double *q = malloc(nq * sizeof(double)), *k = malloc(nk * sizeof(double)), *v = malloc(nk * sizeof(double));
  unsigned char *qr = calloc(qspan, es), *kr = calloc(kspan, es), *vr = calloc(kspan, es), *orw = malloc(ospan * es);
  float *lse = malloc(sizeof(float) * (size_t)c->b * c->hq * c->sq);
  for (size_t x = 0; x < ospan * es; x++) orw[x] = 0xff; /* NaN in every dtype */
  for (int bb = 0; bb < c->b; bb++)
    for (int s = 0; s < c->sq; s++)
      for (int h = 0; h < c->hq; h++)
        for (int x = 0; x < c->d; x++)
          q[(((size_t)bb * c->sq + s) * c->hq + h) * c->d + x] =
              put(qr, qoff + bb * qst[0] + s * qst[1] + h * qst[2] + x, c->dt, 2 * urand());
  for (int bb = 0; bb < c->b; bb++)
    for (int s = 0; s < c->sk; s++)
      for (int h = 0; h < c->hkv; h++)
        for (int x = 0; x < c->d; x++) {
          size_t e = (((size_t)bb * c->sk + s) * c->hkv + h) * c->d + x, at = koff + bb * kst[0] + s * kst[1] + h * kst[2] + x;
          k[e] = put(kr, at, c->dt, 2 * urand());
          v[e] = put(vr, at, c->dt, urand());
        }
  fa_buffer *qb = upload(qr, qspan * es), *kb = upload(kr, kspan * es), *vb = upload(vr, kspan * es),
            *ob = upload(orw, ospan * es), *lb = upload(lse, sizeof(float) * (size_t)c->b * c->hq * c->sq);
  fa_tensor tq = {qb, qoff * es, c->dt, {c->b, c->sq, c->hq, c->d}, {qst[0], qst[1], qst[2], qst[3]}};
  fa_tensor tk = {kb, koff * es, c->dt, {c->b, c->sk, c->hkv, c->d}, {kst[0], kst[1], kst[2], kst[3]}};
  fa_tensor tv = tk;
  tv.buf = vb;
  fa_tensor to = {ob, ooff * es, c->dt, {c->b, c->sq, c->hq, c->d}, {ost[0], ost[1], ost[2], ost[3]}};
  fa_tensor tl;
  fa_tensor_packed(&tl, lb, 0, FA_F32, c->b, c->hq, c->sq, 1);
  fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .softmax_scale = c->scale, .causal = c->causal};
  CHECK_FA(fa_forward(g_ctx, &desc, &tq, &tk, &tv, &to, &tl));
  CHECK_FA(fa_buffer_read(g_ctx, ob, 0, orw, ospan * es));
  CHECK_FA(fa_buffer_read(g_ctx, lb, 0, lse, sizeof(float) * (size_t)c->b * c->hq * c->sq));

  double num = 0, den = 0, lse_err = 0;
  int bad_lse = 0;
  double *ro = malloc(sizeof(double) * (size_t)c->d);
  for (int bb = 0; bb < c->b; bb++)
    for (int h = 0; h < c->hq; h++)
      for (int i = 0; i < c->sq; i++) {
        double rl;
        ref_row(c, q, k, v, bb, h, i, ro, &rl);
        for (int x = 0; x < c->d; x++) {
          double got = get(orw, ooff + bb * ost[0] + i * ost[1] + h * ost[2] + x, c->dt);
          if (isnan(got)) got = 1e30; /* unwritten */
          num += (got - ro[x]) * (got - ro[x]);
          den += ro[x] * ro[x];
        }
        float gl = lse[((size_t)bb * c->hq + h) * c->sq + i];
        if (isinf(rl)) {
          if (!(isinf(gl) && gl < 0)) bad_lse++;
        } else {
          double e = fabs(gl - rl) / fmax(1.0, fabs(rl));
          if (!(e <= lse_err)) lse_err = isnan(e) ? 1e30 : fmax(lse_err, e);
        }
      }
  /* The padding between rows must stay untouched (0xff bytes). */
  int touched = 0;
  if (c->layout == 2) {
    unsigned char *chk = malloc(ospan * es);
    CHECK_FA(fa_buffer_read(g_ctx, ob, 0, chk, ospan * es));
    for (size_t x = 0; x < ooff * es; x++) touched += chk[x] != 0xff;
    free(chk);
  }
  double rel = den > 0 ? sqrt(num / den) : sqrt(num);
  double tol = c->dt == FA_F32 ? 1e-5 : c->dt == FA_F16 ? 2e-3 : 1e-2;
  int ok = rel <= tol && lse_err <= 1e-3 && !bad_lse && !touched;
  printf("%s %-4s B%d Sq%-4d Sk%-4d Hq%d Hkv%d D%-3d causal%d layout%d scale%.3g: rel %.2e lse %.1e%s%s\n",
         ok ? "ok  " : "FAIL", fa_dtype_name(c->dt), c->b, c->sq, c->sk, c->hq, c->hkv, c->d, c->causal, c->layout,
         c->scale, rel, lse_err, bad_lse ? " (lse not -inf on a masked row)" : "", touched ? " (padding written)" : "");
  fa_buffer_destroy(qb), fa_buffer_destroy(kb), fa_buffer_destroy(vb), fa_buffer_destroy(ob), fa_buffer_destroy(lb);
  free(q), free(k), free(v), free(qr), free(kr), free(vr), free(orw), free(lse), free(ro);
  return !ok;
}

static void open_context(void) {
  cl_platform_id plat;
  cl_device_id dev;
  CHECK_CL(clGetPlatformIDs(1, &plat, NULL));
  CHECK_CL(clGetDeviceIDs(plat, CL_DEVICE_TYPE_ALL, 1, &dev, NULL));
  cl_int err;
  g_clctx = clCreateContext(NULL, 1, &dev, NULL, NULL, &err);
  CHECK_CL(err);
  g_queue = clCreateCommandQueue(g_clctx, dev, CL_QUEUE_PROFILING_ENABLE, &err);
  CHECK_CL(err);
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_OPENCL;
  opt.native_queue = g_queue;
  fa_status st = fa_context_create(&opt, &g_ctx);
  if (st != FA_SUCCESS) {
    fprintf(stderr, "fa_context_create: %s: %s\n", fa_status_string(st), fa_last_create_error());
    exit(1);
  }
}

static int check_all(void) {
  int fails = 0;
  static const int dims[] = {16, 32, 64, 80, 96, 128, 160, 192, 224, 256};
  for (size_t x = 0; x < sizeof dims / sizeof dims[0]; x++) {
    shape c = {1, 37, 53, 2, 1, dims[x], (int)(x % 2), FA_F32, 0, 0};
    fails += run_case(&c);
  }
  shape more[] = {
      {1, 1, 1, 1, 1, 64, 0, FA_F32, 0, 0},       {1, 1, 200, 1, 1, 64, 1, FA_F32, 0, 0},
      {3, 100, 100, 3, 3, 64, 1, FA_F32, 0, 0},   {2, 257, 129, 6, 2, 64, 1, FA_F32, 0, 0},
      {2, 129, 257, 6, 2, 64, 1, FA_F32, 0, 0},   {1, 300, 17, 4, 1, 32, 1, FA_F32, 1, 0.3f},
      {1, 65, 130, 2, 2, 128, 0, FA_F32, 2, 0},   {2, 90, 70, 4, 2, 64, 1, FA_F32, 2, 0},
      {1, 70, 90, 2, 1, 64, 1, FA_F16, 0, 0},     {1, 70, 90, 2, 1, 64, 1, FA_BF16, 1, 0},
      {1, 33, 160, 2, 2, 128, 0, FA_F16, 2, 0},   {1, 200, 200, 2, 1, 128, 1, FA_BF16, 0, 0},
      {1, 1000, 1000, 1, 1, 64, 1, FA_F32, 0, 0},
  };
  for (size_t x = 0; x < sizeof more / sizeof more[0]; x++) fails += run_case(&more[x]);
  printf("%d failed\n", fails);
  return fails != 0;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* CPU seconds this process used (PoCL's worker threads included): on a machine shared with other jobs,
 * flops per CPU-second compares kernel variants better than wall time does. */
static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + 1e-6 * ru.ru_utime.tv_usec + ru.ru_stime.tv_sec + 1e-6 * ru.ru_stime.tv_usec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Device time of what fa_forward enqueued: between markers before and after. */
static double time_forward(const fa_attention_desc *desc, const fa_tensor *q, const fa_tensor *k,
                           const fa_tensor *v, const fa_tensor *o, const fa_tensor *l) {
  cl_event e0, e1;
  CHECK_CL(clEnqueueMarkerWithWaitList(g_queue, 0, NULL, &e0));
  CHECK_FA(fa_forward(g_ctx, desc, q, k, v, o, l));
  CHECK_CL(clEnqueueMarkerWithWaitList(g_queue, 0, NULL, &e1));
  CHECK_CL(clFinish(g_queue));
  cl_ulong t0, t1;
  CHECK_CL(clGetEventProfilingInfo(e0, CL_PROFILING_COMMAND_END, sizeof t0, &t0, NULL));
  CHECK_CL(clGetEventProfilingInfo(e1, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL));
  clReleaseEvent(e0), clReleaseEvent(e1);
  return (double)(t1 - t0) * 1e-9;
}

static void bench(int s, int d, int b, int h, fa_dtype dt) {
  size_t n = (size_t)b * s * h * d, es = fa_dtype_size(dt);
  unsigned char *host = malloc(n * es);
  for (size_t x = 0; x < n; x++) put(host, x, dt, urand());
  fa_buffer *qb = upload(host, n * es), *kb = upload(host, n * es), *vb = upload(host, n * es), *ob = upload(host, n * es);
  fa_tensor tq, tk, tv, to;
  fa_tensor_packed(&tq, qb, 0, dt, b, s, h, d);
  fa_tensor_packed(&tk, kb, 0, dt, b, s, h, d);
  fa_tensor_packed(&tv, vb, 0, dt, b, s, h, d);
  fa_tensor_packed(&to, ob, 0, dt, b, s, h, d);
  fa_tiles tiles;
  CHECK_FA(fa_context_tiles(g_ctx, d, dt, &tiles));
  for (int causal = 0; causal < 2; causal++) {
    fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .causal = causal};
    double t_build = now();
    time_forward(&desc, &tq, &tk, &tv, &to, NULL); /* builds and warms up */
    t_build = now() - t_build;
    time_forward(&desc, &tq, &tk, &tv, &to, NULL);
    double t[10], wall = now(), cpu = cpu_seconds();
    for (int it = 0; it < 10; it++) t[it] = time_forward(&desc, &tq, &tk, &tv, &to, NULL);
    wall = (now() - wall) / 10;
    cpu = (cpu_seconds() - cpu) / 10;
    qsort(t, 10, sizeof t[0], cmp_double);
    double med = 0.5 * (t[4] + t[5]);
    double flops = 4.0 * b * h * (double)s * s * d / (causal ? 2 : 1);
    printf("flash %s B%d H%d S%d D%d causal%d tiles Br%d Bc%d threads%d local%zu: %.2f ms (wall %.2f, first %.2f s), "
           "%.2f GFLOP/s (best %.2f), %.2f GFLOP per CPU-second\n",
           fa_dtype_name(dt), b, h, s, d, causal, tiles.block_q, tiles.block_k, tiles.threads, tiles.local_mem_bytes,
           med * 1e3, wall * 1e3, t_build, flops / med * 1e-9, flops / t[0] * 1e-9, flops / cpu * 1e-9);
  }
  fa_buffer_destroy(qb), fa_buffer_destroy(kb), fa_buffer_destroy(vb), fa_buffer_destroy(ob);
  free(host);
}

/* The naive CPU loop: float32, one thread, scores of one row in a buffer, then softmax, then P V. */
static void naive(const float *q, const float *k, const float *v, float *o, int b, int s, int h, int d, int causal) {
  float *sc = malloc(sizeof(float) * (size_t)s);
  float scale = 1.0f / sqrtf((float)d);
  for (int bb = 0; bb < b; bb++)
    for (int hh = 0; hh < h; hh++)
      for (int i = 0; i < s; i++) {
        const float *qi = q + (((size_t)bb * s + i) * h + hh) * d;
        int n = causal ? i + 1 : s;
        float m = -INFINITY;
        for (int j = 0; j < n; j++) {
          const float *kj = k + (((size_t)bb * s + j) * h + hh) * d;
          float acc = 0;
          for (int x = 0; x < d; x++) acc += qi[x] * kj[x];
          sc[j] = acc * scale;
          m = fmaxf(m, sc[j]);
        }
        float l = 0;
        for (int j = 0; j < n; j++) l += sc[j] = expf(sc[j] - m);
        float *oi = o + (((size_t)bb * s + i) * h + hh) * d;
        for (int x = 0; x < d; x++) oi[x] = 0;
        for (int j = 0; j < n; j++) {
          const float *vj = v + (((size_t)bb * s + j) * h + hh) * d;
          for (int x = 0; x < d; x++) oi[x] += sc[j] * vj[x];
        }
        for (int x = 0; x < d; x++) oi[x] /= l;
      }
  free(sc);
}

static void bench_naive(int s, int d, int b, int h) {
  size_t n = (size_t)b * s * h * d;
  float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4);
  for (size_t x = 0; x < n; x++) q[x] = (float)urand(), k[x] = (float)urand(), v[x] = (float)urand();
  for (int causal = 0; causal < 2; causal++) {
    double t[3], cpu = cpu_seconds();
    for (int it = 0; it < 3; it++) {
      double t0 = now();
      naive(q, k, v, o, b, s, h, d, causal);
      t[it] = now() - t0;
    }
    cpu = (cpu_seconds() - cpu) / 3;
    qsort(t, 3, sizeof t[0], cmp_double);
    double flops = 4.0 * b * h * (double)s * s * d / (causal ? 2 : 1);
    printf("naive C f32 B%d H%d S%d D%d causal%d: %.1f ms, %.2f GFLOP/s (best %.2f), %.2f GFLOP per CPU-second\n", b, h,
           s, d, causal, t[1] * 1e3, flops / t[1] * 1e-9, flops / t[0] * 1e-9, flops / cpu * 1e-9);
  }
  free(q), free(k), free(v), free(o);
}

/* CLBlast SGEMM on the same device: C[m,n] = A[m,k] B[k,n]^T, `batch` times, timed with profiling events. */
static void bench_sgemm(size_t m, size_t nn, size_t kk, size_t batch) {
  cl_int err;
  size_t na = m * kk * batch, nb = nn * kk * batch, nc = m * nn * batch;
  float *host = malloc(sizeof(float) * (na > nb ? (na > nc ? na : nc) : (nb > nc ? nb : nc)));
  for (size_t x = 0; x < na || x < nb || x < nc; x++) host[x] = (float)urand();
  cl_mem a = clCreateBuffer(g_clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, na * 4, host, &err);
  CHECK_CL(err);
  cl_mem bm = clCreateBuffer(g_clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nb * 4, host, &err);
  CHECK_CL(err);
  cl_mem c = clCreateBuffer(g_clctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, nc * 4, host, &err);
  CHECK_CL(err);
  double t[7], w[7], cpu = 0;
  for (int it = -2; it < 7; it++) {
    if (it == 0) cpu = cpu_seconds();
    cl_event ev;
    CHECK_CL(clFinish(g_queue));
    double w0 = now();
    CLBlastStatusCode st = CLBlastSgemmStridedBatched(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, m, nn, kk, 1.0f,
                                                      a, 0, kk, m * kk, bm, 0, kk, nn * kk, 0.0f, c, 0, nn, m * nn, batch,
                                                      &g_queue, &ev);
    if (st != CLBlastSuccess) {
      fprintf(stderr, "CLBlastSgemmStridedBatched: %d\n", (int)st);
      exit(1);
    }
    CHECK_CL(clFinish(g_queue));
    if (it >= 0) w[it] = now() - w0;
    cl_ulong t0, t1;
    CHECK_CL(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL));
    CHECK_CL(clGetEventProfilingInfo(ev, CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL));
    clReleaseEvent(ev);
    if (it >= 0) t[it] = (double)(t1 - t0) * 1e-9;
  }
  cpu = (cpu_seconds() - cpu) / 7;
  qsort(t, 7, sizeof t[0], cmp_double);
  qsort(w, 7, sizeof w[0], cmp_double);
  /* CLBlast may enqueue helper kernels (pad, transpose) besides the GEMM; its event covers only the last,
   * so the wall clock around the call (queue drained before and after) is the figure to compare. */
  printf("CLBlast SGEMM m%zu n%zu k%zu batch%zu: wall %.2f ms, %.2f GFLOP/s (best %.2f), %.2f GFLOP per "
         "CPU-second; event %.2f ms\n", m, nn, kk, batch, w[3] * 1e3, 2.0 * m * nn * kk * batch / w[3] * 1e-9,
         2.0 * m * nn * kk * batch / w[0] * 1e-9, 2.0 * m * nn * kk * batch / cpu * 1e-9, t[3] * 1e3);
  clReleaseMemObject(a), clReleaseMemObject(bm), clReleaseMemObject(c);
  free(host);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "check";
  int s = argc > 2 ? atoi(argv[2]) : 1024, d = argc > 3 ? atoi(argv[3]) : 64;
  int b = argc > 4 ? atoi(argv[4]) : 1, h = argc > 5 ? atoi(argv[5]) : 8;
  fa_dtype dt = argc > 6 ? (fa_dtype)atoi(argv[6]) : FA_F32;
  if (strcmp(mode, "naive") == 0) {
    bench_naive(s, d, b, h);
    return 0;
  }
  open_context();
  int rc = 0;
  if (strcmp(mode, "check") == 0) rc = check_all();
  else if (strcmp(mode, "bench") == 0) bench(s, d, b, h, dt);
  else if (strcmp(mode, "tiles") == 0) {
    for (int hd = 16; hd <= 256; hd += 16) {
      fa_tiles t;
      fa_status st = fa_context_tiles(g_ctx, hd, FA_F32, &t);
      if (st == FA_SUCCESS)
        printf("D%-3d Br %-3d Bc %-4d threads %-4d local %zu\n", hd, t.block_q, t.block_k, t.threads, t.local_mem_bytes);
      else
        printf("D%-3d %s: %s\n", hd, fa_status_string(st), fa_context_last_error(g_ctx));
    }
  }
  else if (strcmp(mode, "sgemm") == 0) {
    bench_sgemm(1024, 1024, 64, 8); /* the Q K^T of the benchmark's shape */
    bench_sgemm(1024, 64, 1024, 8); /* the P V */
    bench_sgemm(1024, 1024, 1024, 1);
  } else {
    fprintf(stderr, "usage: %s check | bench [S D B H dtype] | naive [S D B H] | sgemm\n", argv[0]);
    rc = 2;
  }
  fa_context_destroy(g_ctx);
  clReleaseCommandQueue(g_queue);
  clReleaseContext(g_clctx);
  return rc;
}
