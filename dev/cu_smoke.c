/* cu_smoke: the CUDA forward on a real device, through the public API only.
 *   1. correctness: one forward per dtype and shape (GQA, causal with Sq < Sk and Sq > Sk, Sq = 1, head dims
 *      40..256, a BHSD-strided tensor at an odd element offset, which takes the kernels' unaligned path)
 *      against a float64 loop; o by ||o - ref|| / ||ref|| (f32 1e-5, f16 2e-3, bf16 1e-2), lse by its
 *      largest absolute error (<= 1e-3 max(1, |lse|)), fully masked rows exactly o = 0 and lse = -inf;
 *   2. timing (unless --no-timing): D = 128, S = 8192, B = 2, H = 16 f16, non-causal and causal (and a few
 *      more shapes), CUDA events around each call on our own stream (handed to the library as native_queue),
 *      median of 20 after 3 warm-ups; TFLOP/s = 4 B H Sq Sk D, halved when causal.
 * The stream and events come from the driver API, opened with dlopen like the library does.
 * Usage: cu_smoke [--no-timing] [--sweep]. --sweep also times D = 64 and 128 f16 with the tensor-core kernel
 * compiled for 1, 2 and 3-4 blocks per SM (FLASHATTN_CUDA_DEFINES=-DMIN_BLOCKS=n: registers per thread).
 * Exit status 1 when a check fails; 0 with a note when no CUDA device. */
#include <cuda.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flashattn.h"

/* ---- the few driver calls this program makes itself ---- */
static struct {
  CUresult (*Init)(unsigned);
  CUresult (*DeviceGet)(CUdevice *, int);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*CtxPushCurrent)(CUcontext);
  CUresult (*StreamCreate)(CUstream *, unsigned);
  CUresult (*EventCreate)(CUevent *, unsigned);
  CUresult (*EventRecord)(CUevent, CUstream);
  CUresult (*EventSynchronize)(CUevent);
  CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
} cu;

static int load_driver(void) {
  void *lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (!lib) return 0;
  void *s;
#define SYM(field, name)                        \
  if (!(s = dlsym(lib, name))) return 0;        \
  memcpy(&cu.field, &s, sizeof s);
  SYM(Init, "cuInit")
  SYM(DeviceGet, "cuDeviceGet")
  SYM(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")
  SYM(CtxPushCurrent, "cuCtxPushCurrent_v2")
  SYM(StreamCreate, "cuStreamCreate")
  SYM(EventCreate, "cuEventCreate")
  SYM(EventRecord, "cuEventRecord")
  SYM(EventSynchronize, "cuEventSynchronize")
  SYM(EventElapsedTime, "cuEventElapsedTime_v2")
#undef SYM
  return 1;
}

/* ---- host-side storage types ---- */
static uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
  int e = (int)exp - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return (uint16_t)sign;
    man |= 0x800000u;
    int shift = 14 - e;
    uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, x;
  if (exp == 0) {
    if (!man) x = sign;
    else {
      int e = -1;
      do { man <<= 1; e++; } while (!(man & 0x400u));
      x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (man << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

/* Store v as dtype at element i of buf; return the value actually stored (after rounding). */
static double put(void *buf, fa_dtype dt, size_t i, float v) {
  if (dt == FA_F32) return ((float *)buf)[i] = v;
  uint16_t h = dt == FA_F16 ? f32_to_f16(v) : f32_to_bf16(v);
  ((uint16_t *)buf)[i] = h;
  return dt == FA_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

static double get(const void *buf, fa_dtype dt, size_t i) {
  if (dt == FA_F32) return ((const float *)buf)[i];
  uint16_t h = ((const uint16_t *)buf)[i];
  return dt == FA_F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- one correctness case ---- */
typedef struct shape {
  int b, hq, hkv, sq, sk, d, causal;
  float scale; /* 0: default */
  int bhsd;    /* 1: q, k, v, o strided as [B, H, S, D] in memory */
  int offset;  /* element offset of every tensor in its buffer */
} shape;

typedef struct host_tensor {
  fa_tensor t;
  size_t elems; /* of the whole buffer */
  void *host;
} host_tensor;

static int make_tensor(fa_context *ctx, host_tensor *ht, fa_dtype dt, int b, int s, int h, int d, int bhsd,
                       int offset) {
  memset(ht, 0, sizeof *ht);
  size_t es = fa_dtype_size(dt);
  ht->elems = (size_t)offset + (size_t)b * s * h * d;
  ht->host = malloc(ht->elems * es);
  fa_buffer *buf;
  if (!ht->host || fa_buffer_create(ctx, ht->elems * es, &buf) != FA_SUCCESS) return 0;
  fa_tensor_packed(&ht->t, buf, (size_t)offset * es, dt, b, s, h, d);
  if (bhsd) { /* memory order [B, H, S, D] */
    ht->t.stride[3] = 1;
    ht->t.stride[1] = d;
    ht->t.stride[2] = (int64_t)s * d;
    ht->t.stride[0] = (int64_t)h * s * d;
  }
  return 1;
}

static size_t at(const fa_tensor *t, int b, int s, int h, int d) {
  return t->offset / fa_dtype_size(t->dtype) + (size_t)(b * t->stride[0] + s * t->stride[1] + h * t->stride[2] + d);
}

static int run_case(fa_context *ctx, fa_dtype dt, shape sh) {
  const char *dn = fa_dtype_name(dt);
  size_t es = fa_dtype_size(dt);
  host_tensor q, k, v, o;
  int ok = make_tensor(ctx, &q, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &k, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &v, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &o, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset);
  size_t nl = (size_t)sh.b * sh.hq * sh.sq;
  float *lse = malloc(nl * sizeof(float));
  fa_buffer *lbuf = NULL;
  if (!ok || !lse || fa_buffer_create(ctx, nl * sizeof(float), &lbuf) != FA_SUCCESS) {
    printf("not ok - %s: allocation failed: %s\n", dn, fa_context_last_error(ctx));
    return 0;
  }
  fa_tensor lt;
  fa_tensor_packed(&lt, lbuf, 0, FA_F32, sh.b, sh.hq, sh.sq, 1);
  /* Inputs: every element of the buffers random (also what no view covers); outputs poisoned with NaN. */
  host_tensor *in[3] = {&q, &k, &v};
  for (int i = 0; i < 3; i++) {
    for (size_t e = 0; e < in[i]->elems; e++) put(in[i]->host, dt, e, 2.f * urand());
    fa_buffer_write(ctx, in[i]->t.buf, 0, in[i]->host, in[i]->elems * es);
  }
  memset(o.host, 0xff, o.elems * es);
  fa_buffer_write(ctx, o.t.buf, 0, o.host, o.elems * es);
  memset(lse, 0xff, nl * sizeof(float));
  fa_buffer_write(ctx, lbuf, 0, lse, nl * sizeof(float));

  fa_attention_desc desc = {0};
  desc.causal = sh.causal;
  desc.softmax_scale = sh.scale;
  fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lt);
  if (st == FA_SUCCESS) st = fa_synchronize(ctx);
  char label[200];
  snprintf(label, sizeof label, "%s B=%d Hq=%d Hkv=%d Sq=%d Sk=%d D=%d causal=%d scale=%g%s%s", dn, sh.b, sh.hq,
           sh.hkv, sh.sq, sh.sk, sh.d, sh.causal, sh.scale, sh.bhsd ? " bhsd" : "", sh.offset ? " offset" : "");
  if (st != FA_SUCCESS) {
    printf("not ok - %s: %s: %s\n", label, fa_status_string(st), fa_context_last_error(ctx));
    return 0;
  }
  fa_buffer_read(ctx, o.t.buf, 0, o.host, o.elems * es);
  fa_buffer_read(ctx, lbuf, 0, lse, nl * sizeof(float));

  double scale = sh.scale > 0 ? sh.scale : 1.0 / sqrt((double)sh.d);
  double err2 = 0, ref2 = 0, lse_err = 0;
  int masked_bad = 0, masked_rows = 0;
  double *s = malloc((size_t)sh.sk * sizeof(double)), *acc = malloc((size_t)sh.d * sizeof(double));
  for (int b = 0; b < sh.b; b++)
    for (int h = 0; h < sh.hq; h++) {
      int hk = h / (sh.hq / sh.hkv);
      for (int i = 0; i < sh.sq; i++) {
        double mx = -INFINITY;
        for (int j = 0; j < sh.sk; j++) {
          int masked = sh.causal && j > i + sh.sk - sh.sq;
          double dot = 0;
          for (int x = 0; x < sh.d; x++)
            dot += get(q.host, dt, at(&q.t, b, i, h, x)) * get(k.host, dt, at(&k.t, b, j, hk, x));
          s[j] = masked ? -INFINITY : dot * scale;
          if (s[j] > mx) mx = s[j];
        }
        float got_lse = lse[((size_t)b * sh.hq + h) * sh.sq + i];
        if (mx == -INFINITY) { /* every key masked: o = 0 and lse = -inf exactly */
          masked_rows++;
          for (int x = 0; x < sh.d; x++) masked_bad |= get(o.host, dt, at(&o.t, b, i, h, x)) != 0.0;
          masked_bad |= !(isinf(got_lse) && got_lse < 0);
          continue;
        }
        double sum = 0;
        for (int x = 0; x < sh.d; x++) acc[x] = 0;
        for (int j = 0; j < sh.sk; j++) {
          double pj = exp(s[j] - mx);
          sum += pj;
          for (int x = 0; x < sh.d; x++) acc[x] += pj * get(v.host, dt, at(&v.t, b, j, hk, x));
        }
        for (int x = 0; x < sh.d; x++) {
          double ref = acc[x] / sum, got = get(o.host, dt, at(&o.t, b, i, h, x));
          err2 += (got - ref) * (got - ref);
          ref2 += ref * ref;
        }
        double ref_lse = mx + log(sum), e = fabs(got_lse - ref_lse) / fmax(1.0, fabs(ref_lse));
        if (!(e <= lse_err)) lse_err = e; /* NaN sticks */
      }
    }
  /* Elements of o's buffer outside the view must be untouched (still the NaN poison). */
  int outside_bad = 0;
  if (sh.offset)
    for (int e = 0; e < sh.offset; e++) outside_bad |= !isnan(get(o.host, dt, (size_t)e));
  double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
  double tol = dt == FA_F32 ? 1e-5 : dt == FA_F16 ? 2e-3 : 1e-2;
  int pass = rel <= tol && lse_err <= 1e-3 && !masked_bad && !outside_bad;
  printf("%s - %s: rel %.2e (tol %.0e), lse %.2e, %d masked rows%s%s\n", pass ? "ok" : "not ok", label, rel, tol,
         lse_err, masked_rows, masked_bad ? " WRONG" : "", outside_bad ? ", wrote outside the view" : "");
  free(s);
  free(acc);
  host_tensor *all[4] = {&q, &k, &v, &o};
  for (int i = 0; i < 4; i++) {
    fa_buffer_destroy(all[i]->t.buf);
    free(all[i]->host);
  }
  fa_buffer_destroy(lbuf);
  free(lse);
  return pass;
}

/* ---- timing ---- */
static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

static void time_case(fa_context *ctx, CUstream stream, fa_dtype dt, int b, int h, int s, int d, int causal) {
  size_t es = fa_dtype_size(dt), n = (size_t)b * s * h * d;
  fa_buffer *buf[4];
  fa_tensor t[4];
  void *host = malloc(n * es);
  for (size_t i = 0; i < n; i++) put(host, dt, i, urand());
  for (int i = 0; i < 4; i++) {
    if (fa_buffer_create(ctx, n * es, &buf[i]) != FA_SUCCESS) {
      printf("timing %s: %s\n", fa_dtype_name(dt), fa_context_last_error(ctx));
      return;
    }
    fa_buffer_write(ctx, buf[i], 0, host, n * es);
    fa_tensor_packed(&t[i], buf[i], 0, dt, b, s, h, d);
  }
  fa_attention_desc desc = {0};
  desc.causal = causal;
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  struct timespec c0, c1;
  clock_gettime(CLOCK_MONOTONIC, &c0);
  fa_status st = fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], NULL);
  fa_synchronize(ctx);
  clock_gettime(CLOCK_MONOTONIC, &c1);
  double first_ms = 1e3 * (double)(c1.tv_sec - c0.tv_sec) + 1e-6 * (double)(c1.tv_nsec - c0.tv_nsec);
  if (st != FA_SUCCESS) {
    printf("timing %s: %s\n", fa_dtype_name(dt), fa_context_last_error(ctx));
    return;
  }
  for (int i = 0; i < 2; i++) fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], NULL);
  float ms[20];
  for (int i = 0; i < 20; i++) {
    cu.EventRecord(e0, stream);
    fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &t[3], NULL);
    cu.EventRecord(e1, stream);
    cu.EventSynchronize(e1);
    cu.EventElapsedTime(&ms[i], e0, e1);
  }
  qsort(ms, 20, sizeof ms[0], cmp_float);
  double med = 0.5 * (ms[9] + ms[10]);
  double flops = 4.0 * b * h * (double)s * s * d / (causal ? 2 : 1);
  fa_tiles tiles;
  fa_context_tiles(ctx, d, dt, &tiles);
  const char *extra = getenv("FLASHATTN_CUDA_DEFINES");
  printf("time %s B=%d H=%d S=%d D=%d causal=%d%s%s: %.3f ms, %.1f TFLOP/s (tiles %dx%d, %d threads, %zu B shared; "
         "first call with compile %.0f ms)\n",
         fa_dtype_name(dt), b, h, s, d, causal, extra && *extra ? " " : "", extra ? extra : "", med,
         flops / med / 1e9, tiles.block_q, tiles.block_k, tiles.threads, tiles.local_mem_bytes, first_ms);
  for (int i = 0; i < 4; i++) fa_buffer_destroy(buf[i]);
  free(host);
}

int main(int argc, char **argv) {
  int timing = 1, sweep = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--no-timing") == 0) timing = 0;
    else if (strcmp(argv[i], "--sweep") == 0) sweep = 1;
  }
  CUdevice dev;
  CUcontext pctx;
  CUstream stream;
  if (!load_driver() || cu.Init(0) != CUDA_SUCCESS || cu.DeviceGet(&dev, 0) != CUDA_SUCCESS) {
    printf("cu_smoke: no CUDA device, nothing to do\n");
    return 0;
  }
  if (cu.DevicePrimaryCtxRetain(&pctx, dev) != CUDA_SUCCESS || cu.CtxPushCurrent(pctx) != CUDA_SUCCESS ||
      cu.StreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
    printf("cu_smoke: cannot make a stream on device 0\n");
    return 1;
  }
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = FA_BACKEND_CUDA;
  opt.native_queue = stream;
  fa_context *ctx;
  if (fa_context_create(&opt, &ctx) != FA_SUCCESS) {
    printf("cu_smoke: fa_context_create: %s\n", fa_last_create_error());
    return 1;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  fa_context_info(ctx, &info);
  printf("device: %s, %s, %s, %d SMs, %zu B shared per block (budget %zu), tensor cores %d\n", info.name,
         info.platform, info.api_version, info.compute_units, info.device_local_mem_bytes, info.local_mem_bytes,
         info.tensor_cores);

  static const shape shapes[] = {
      {2, 4, 2, 100, 257, 64, 0, 0, 0, 0},   /* GQA, lengths off every tile */
      {1, 3, 1, 130, 70, 128, 1, 0, 0, 0},   /* MQA, causal with Sq > Sk: fully masked rows */
      {1, 2, 2, 77, 200, 256, 1, 0, 0, 0},   /* causal with Sq < Sk, largest head dim */
      {3, 2, 1, 1, 33, 80, 0, 0.3f, 0, 0},   /* Sq = 1, custom scale */
      {1, 2, 2, 65, 129, 96, 1, 0, 1, 1},    /* BHSD strides at an odd offset: unaligned rows */
      {1, 2, 2, 50, 50, 40, 1, 0, 0, 0},     /* head dim not a multiple of 16 */
      {2, 2, 2, 192, 192, 160, 0, 0, 1, 0},  /* BHSD, aligned */
      {1, 1, 1, 64, 64, 16, 1, 0, 0, 0},     /* smallest head dim, one block */
  };
  int failed = 0, total = 0;
  for (int dt = 0; dt < 3; dt++)
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
      total++;
      failed += !run_case(ctx, (fa_dtype)dt, shapes[i]);
    }
  printf("%d of %d checks passed\n", total - failed, total);

  if (timing) {
    time_case(ctx, stream, FA_F16, 2, 16, 8192, 128, 0);
    time_case(ctx, stream, FA_F16, 2, 16, 8192, 128, 1);
    time_case(ctx, stream, FA_BF16, 2, 16, 8192, 128, 0);
    time_case(ctx, stream, FA_F16, 2, 32, 8192, 64, 0);
    time_case(ctx, stream, FA_F16, 2, 8, 8192, 256, 0);
    time_case(ctx, stream, FA_F16, 8, 16, 2048, 128, 0);
    time_case(ctx, stream, FA_F32, 2, 16, 4096, 128, 0);
  }
  if (sweep) {
    static const char *variants[] = {"-DMIN_BLOCKS=1", "-DMIN_BLOCKS=2", "-DMIN_BLOCKS=3", "-DMIN_BLOCKS=4"};
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
      setenv("FLASHATTN_CUDA_DEFINES", variants[i], 1);
      if (i < 3) time_case(ctx, stream, FA_F16, 2, 16, 8192, 128, 0);
      if (i < 3) time_case(ctx, stream, FA_F16, 2, 16, 8192, 128, 1);
      if (i > 0) time_case(ctx, stream, FA_F16, 2, 32, 8192, 64, 0);
    }
    unsetenv("FLASHATTN_CUDA_DEFINES");
  }
  fa_context_destroy(ctx);
  return failed ? 1 : 0;
}
