/* cu_bwd_check: the CUDA flash backward, through the public API, against tests/reference.c's float64
 * ref_backward; then its speed. Also compiles every backward kernel variant with NVRTC (no GPU needed).
 *
 *   cu_bwd_check [--no-timing]        on CUDA device 0:
 *     1. correctness: for each configuration (the device's shared-memory budget, the same with
 *        FLASHATTN_CUDA_BWD=simt for f16/bf16, FLASHATTN_LOCAL_MEM_BYTES=49152 and 8192 with fewer cases),
 *        dtype (f32, f16, bf16), shape (GQA, MQA, causal with Sq > Sk and Sq < Sk, Sq = 1, odd lengths, head
 *        dims 16..256, BHSD strides at an odd element offset) and dQ scheme (atomic, deterministic): o and
 *        lse from fa_forward, then fa_backward on NaN-poisoned dq, dk, dv; each gradient's
 *        ||g - ref|| / ||ref|| against f32 1e-5, f16 2e-3, bf16 1e-2; elements outside the views untouched;
 *        deterministic mode run twice and compared bit for bit.
 *     2. timing (unless --no-timing): fwd + bwd, D = 128, S = 8192, B = 2, H = 16, f16, causal 0 and 1, with
 *        fa_event_*, median of 5 after 1 warm-up; TFLOP/s = 3.5 x 4 B H S^2 D (halved when causal); also the
 *        backward alone (2.5 x) and the deterministic scheme; then the same with FLASHATTN_CUDA_BWD=simt.
 *   cu_bwd_check --timing-only     step 2's tensor-core timings alone (for sweeps of FLASHATTN_CUDA_BWD_DEFINES,
 *     which the timing lines print).
 *   cu_bwd_check --nvrtc [-a] [sm_XY ...]  compile the variants the library can ask for (budgets: the opt-in
 *     size of the arch, 49152, 8192; head dims 16 40 64 96 128 160 256, -a: 8..256; every dtype at the first
 *     budget, f16 at the others; both schemes) and print ptxas's registers and spills; exit 1 on a failure
 *     or a spill above 64 bytes. Archs default to sm_80 sm_90.
 * Exit status 1 when a check fails; 0 with a note when there is no CUDA device. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flashattn.h"
#include "reference.h"

#include "cu_internal.h"
#define FA_BWD_PARAMS_ONLY
#include "kernels/flash_bwd.cu"

/* ---- NVRTC: every variant ---- */

static int report(const char *log, const char *what) {
  int spills = 0;
  const char *p = strstr(log, "bytes spill stores");
  if (p) {
    const char *q = p;
    while (q > log && q[-1] != ',' && q[-1] != '\n') q--;
    spills = atoi(q);
  }
  printf("%s\n", what);
  for (const char *line = log; *line;) {
    const char *end = strchr(line, '\n');
    size_t n = end ? (size_t)(end - line) : strlen(line);
    if (memmem(line, n, "Used", 4) || memmem(line, n, "spill", 5)) printf("    %.*s\n", (int)n, line);
    line += n + (end ? 1 : 0);
  }
  return spills;
}

/* Whether arch + defines was compiled before (budgets often give the same tiles). */
static int already(const char *arch, const char *defines) {
  static char seen[1024][192];
  static int nseen;
  char key[192];
  if (snprintf(key, sizeof key, "%s %s", arch, defines) >= (int)sizeof key) return 0;
  for (int i = 0; i < nseen; i++)
    if (strcmp(seen[i], key) == 0) return 1;
  if (nseen < 1024) strcpy(seen[nseen++], key);
  return 0;
}

static int nvrtc_all(int narch, const char **archs, int all) {
  static const int some[] = {16, 40, 64, 96, 128, 136, 160, 192, 224, 256};
  int dims[32], ndims = 0;
  if (all)
    for (int d = 8; d <= 256; d += 8) dims[ndims++] = d;
  else
    for (size_t i = 0; i < sizeof some / sizeof some[0]; i++) dims[ndims++] = some[i];
  const fa_cu_nvrtc *nv;
  int version;
  char msg[2048];
  if (fa_cu_load_nvrtc(&nv, &version, msg, sizeof msg) != FA_SUCCESS) {
    fprintf(stderr, "cu_bwd_check: %s\n", msg);
    return 1;
  }
  printf("NVRTC %d.%d\n", version / 1000, version % 1000 / 10);
  int compiled = 0, failed = 0, big_spills = 0;
  for (int ai = 0; ai < narch; ai++) {
    const int cc_major = atoi(archs[ai] + 3) / 10;
    const size_t optin = cc_major >= 9 ? 232448 : cc_major == 8 ? 166912 : 49152;
    const size_t budgets[] = {optin, 49152, 8192};
    for (size_t bi = 0; bi < 3; bi++) {
      fa_tile_limits lim = {budgets[bi], 1024, 32};
      for (int di = 0; di < ndims; di++) {
        const int d = dims[di];
        fa_tiles t;
        if (fa_tiles_cuda_backward(&lim, d, FA_F32, &t) != FA_SUCCESS) {
          printf("%s budget %zu D %d: no tile fits\n", archs[ai], budgets[bi], d);
          failed++;
          continue;
        }
        for (int dt = 0; dt < 3; dt++) {
          /* The big budgets compile every dtype; the small ones f16 only (the layout is dtype-free). */
          if (bi > 0 && dt != 1) continue;
          /* The tensor-core variant where the library would take it (16-bit, sm_80+, tiles that fit). */
          fa_tiles tt;
          const int tc = dt != 0 && cc_major >= 8 && fa_tiles_cuda_backward_tc(&lim, d, &tt) == FA_SUCCESS;
          const int pipe = tc && fa_tiles_cuda_backward_tc_bytes(d, tt.block_q, tt.block_k, tt.threads / 32, 2) <=
                                     lim.local_mem_bytes;
          /* CUDA cores: atomic and separate dQ; tensor cores: separate (dq not computed), atomic, ordered. */
          for (int v = 0; v < (tc ? 5 : 2); v++) {
            const int atomic = v == 0 || v >= 3, is_tc = v >= 2;
            char defines[192];
            if (is_tc)
              snprintf(defines, sizeof defines, FA_BWD_TC_DEFINES_FMT, fa_cu_dtype_define((fa_dtype)dt), d,
                       tt.block_q, tt.block_k, atomic, tt.threads / 32, v == 4, pipe);
            else
              snprintf(defines, sizeof defines, FA_BWD_DEFINES_FMT, fa_cu_dtype_define((fa_dtype)dt), d, t.block_q,
                       t.block_k, atomic);
            if (already(archs[ai], defines)) continue;
            void *image = NULL;
            size_t size = 0;
            char *log = NULL;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            fa_status st = fa_cu_compile(nv, "flash_bwd.cu", defines, archs[ai], 1, &image, &size, &log, msg,
                                         sizeof msg);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            compiled++;
            char what[512];
            snprintf(what, sizeof what, "%s budget %zu %s: %zu shared bytes, %.1f s", archs[ai], budgets[bi],
                     defines, is_tc ? tt.local_mem_bytes : t.local_mem_bytes,
                     (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            if (st != FA_SUCCESS) {
              failed++;
              printf("FAIL %s\n  %s\n", what, msg);
            } else if (report(log ? log : "", what) > 64) {
              big_spills++;
            }
            free(image);
            free(log);
          }
        }
      }
    }
  }
  printf("%d variants compiled, %d failed, %d spill more than 64 bytes\n", compiled, failed, big_spills);
  return failed || big_spills ? 1 : 0;
}

/* ---- host-side storage types ---- */

static double put(void *buf, fa_dtype dt, size_t i, float v) {
  if (dt == FA_F32) return ((float *)buf)[i] = v;
  uint16_t h = dt == FA_F16 ? ref_f32_to_f16(v) : ref_f32_to_bf16(v);
  ((uint16_t *)buf)[i] = h;
  return dt == FA_F16 ? ref_f16_to_f32(h) : ref_bf16_to_f32(h);
}

static double get(const void *buf, fa_dtype dt, size_t i) {
  if (dt == FA_F32) return ((const float *)buf)[i];
  uint16_t h = ((const uint16_t *)buf)[i];
  return dt == FA_F16 ? ref_f16_to_f32(h) : ref_bf16_to_f32(h);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- one correctness case ---- */

typedef struct shape {
  int b, hq, hkv, sq, sk, d, causal;
  int bhsd;   /* 1: memory order [B, H, S, D] */
  int offset; /* element offset of every tensor in its buffer */
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
  if (bhsd) {
    ht->t.stride[1] = d;
    ht->t.stride[2] = (int64_t)s * d;
    ht->t.stride[0] = (int64_t)h * s * d;
  }
  return 1;
}

static void free_tensor(host_tensor *ht) {
  fa_buffer_destroy(ht->t.buf);
  free(ht->host);
}

static size_t at(const fa_tensor *t, int b, int s, int h, int d) {
  return t->offset / fa_dtype_size(t->dtype) +
         (size_t)(b * t->stride[0] + (int64_t)s * t->stride[1] + (int64_t)h * t->stride[2] + d);
}

/* The view's elements as a packed double array [B, S, H, D]. */
static double *gather(const host_tensor *ht) {
  const fa_tensor *t = &ht->t;
  const int B = (int)t->shape[0], S = (int)t->shape[1], H = (int)t->shape[2], D = (int)t->shape[3];
  double *out = malloc((size_t)B * S * H * D * sizeof(double));
  size_t n = 0;
  for (int b = 0; b < B; b++)
    for (int s = 0; s < S; s++)
      for (int h = 0; h < H; h++)
        for (int d = 0; d < D; d++) out[n++] = get(ht->host, t->dtype, at(t, b, s, h, d));
  return out;
}

static int run_case(fa_context *ctx, fa_dtype dt, shape sh, int deterministic, const char *budget) {
  const size_t es = fa_dtype_size(dt);
  host_tensor q, k, v, o, g, dq, dk, dv;
  int ok = make_tensor(ctx, &q, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &k, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &v, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &o, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &g, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &dq, dt, sh.b, sh.sq, sh.hq, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &dk, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset) &&
           make_tensor(ctx, &dv, dt, sh.b, sh.sk, sh.hkv, sh.d, sh.bhsd, sh.offset);
  const size_t nl = (size_t)sh.b * sh.hq * sh.sq;
  fa_buffer *lbuf = NULL;
  if (!ok || fa_buffer_create(ctx, nl * sizeof(float), &lbuf) != FA_SUCCESS) {
    printf("not ok - allocation failed: %s\n", fa_context_last_error(ctx));
    return 0;
  }
  fa_tensor lt;
  fa_tensor_packed(&lt, lbuf, 0, FA_F32, sh.b, sh.hq, sh.sq, 1);

  host_tensor *in[4] = {&q, &k, &v, &g};
  for (int i = 0; i < 4; i++) {
    for (size_t e = 0; e < in[i]->elems; e++) put(in[i]->host, dt, e, (i == 3 ? 1.f : 2.f) * urand());
    fa_buffer_write(ctx, in[i]->t.buf, 0, in[i]->host, in[i]->elems * es);
  }
  host_tensor *outs[3] = {&dq, &dk, &dv};
  for (int i = 0; i < 3; i++) {
    memset(outs[i]->host, 0xff, outs[i]->elems * es); /* NaN in every dtype */
    fa_buffer_write(ctx, outs[i]->t.buf, 0, outs[i]->host, outs[i]->elems * es);
  }

  fa_attention_desc desc = {0};
  desc.causal = sh.causal;
  desc.deterministic = deterministic;
  char label[256];
  snprintf(label, sizeof label, "%s %s B=%d Hq=%d Hkv=%d Sq=%d Sk=%d D=%d causal=%d%s%s %s", budget,
           fa_dtype_name(dt), sh.b, sh.hq, sh.hkv, sh.sq, sh.sk, sh.d, sh.causal, sh.bhsd ? " bhsd" : "",
           sh.offset ? " offset" : "", deterministic ? "deterministic" : "atomic");
  fa_status st = fa_forward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lt);
  if (st == FA_SUCCESS) st = fa_backward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lt, &g.t, &dq.t, &dk.t, &dv.t);
  if (st == FA_SUCCESS) st = fa_synchronize(ctx);
  int pass = st == FA_SUCCESS;
  if (!pass) printf("not ok - %s: %s: %s\n", label, fa_status_string(st), fa_context_last_error(ctx));
  for (int i = 0; pass && i < 3; i++) fa_buffer_read(ctx, outs[i]->t.buf, 0, outs[i]->host, outs[i]->elems * es);

  int same = 1;
  if (pass && deterministic) { /* a second run must give the same bits */
    void *first[3];
    for (int i = 0; i < 3; i++) {
      first[i] = malloc(outs[i]->elems * es);
      memcpy(first[i], outs[i]->host, outs[i]->elems * es);
    }
    st = fa_backward(ctx, &desc, &q.t, &k.t, &v.t, &o.t, &lt, &g.t, &dq.t, &dk.t, &dv.t);
    if (st == FA_SUCCESS) st = fa_synchronize(ctx);
    for (int i = 0; i < 3; i++) {
      fa_buffer_read(ctx, outs[i]->t.buf, 0, outs[i]->host, outs[i]->elems * es);
      same &= memcmp(first[i], outs[i]->host, outs[i]->elems * es) == 0;
      free(first[i]);
    }
    if (st != FA_SUCCESS) pass = 0;
  }

  if (pass) {
    ref_problem rp = {.batch = sh.b, .seqlen_q = sh.sq, .seqlen_k = sh.sk, .heads_q = sh.hq, .heads_kv = sh.hkv,
                      .head_dim = sh.d, .scale = 1.0 / sqrt((double)sh.d), .causal = sh.causal};
    double *hq_ = gather(&q), *hk_ = gather(&k), *hv_ = gather(&v), *hg_ = gather(&g);
    double *rq = malloc(ref_q_elems(&rp) * sizeof(double)), *rk = malloc(ref_kv_elems(&rp) * sizeof(double)),
           *rv = malloc(ref_kv_elems(&rp) * sizeof(double));
    ref_backward(&rp, hq_, hk_, hv_, hg_, rq, rk, rv);
    double *ref[3] = {rq, rk, rv}, err[3];
    const double tol = dt == FA_F32 ? 1e-5 : dt == FA_F16 ? 2e-3 : 1e-2;
    int outside_bad = 0;
    for (int i = 0; i < 3; i++) {
      double *got = gather(outs[i]);
      err[i] = ref_rel_error(got, ref[i], i == 0 ? ref_q_elems(&rp) : ref_kv_elems(&rp));
      pass &= err[i] <= tol;
      free(got);
      for (int e = 0; e < sh.offset; e++) outside_bad |= !isnan(get(outs[i]->host, dt, (size_t)e));
    }
    pass &= !outside_bad && same;
    printf("%s - %s: dq %.2e dk %.2e dv %.2e (tol %.0e)%s%s\n", pass ? "ok" : "not ok", label, err[0], err[1],
           err[2], tol, outside_bad ? ", wrote outside the view" : "", same ? "" : ", runs differ");
    free(hq_), free(hk_), free(hv_), free(hg_), free(rq), free(rk), free(rv);
  }
  host_tensor *all[8] = {&q, &k, &v, &o, &g, &dq, &dk, &dv};
  for (int i = 0; i < 8; i++) free_tensor(all[i]);
  fa_buffer_destroy(lbuf);
  return pass;
}

/* ---- timing ---- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median ms of `reps` runs of fwd + bwd (bwd_only: the backward alone), after one warm-up. */
static double time_runs(fa_context *ctx, const fa_attention_desc *desc, fa_tensor *t, fa_tensor *lt, int bwd_only,
                        int reps) {
  double ms[16];
  for (int r = -1; r < reps; r++) {
    fa_event *e0 = NULL, *e1 = NULL;
    fa_status st = FA_SUCCESS;
    if (bwd_only) st = fa_forward(ctx, desc, &t[0], &t[1], &t[2], &t[3], lt);
    if (st == FA_SUCCESS) st = fa_event_record(ctx, &e0);
    if (st == FA_SUCCESS && !bwd_only) st = fa_forward(ctx, desc, &t[0], &t[1], &t[2], &t[3], lt);
    if (st == FA_SUCCESS) st = fa_backward(ctx, desc, &t[0], &t[1], &t[2], &t[3], lt, &t[4], &t[5], &t[6], &t[7]);
    if (st == FA_SUCCESS) st = fa_event_record(ctx, &e1);
    double x = NAN;
    if (st == FA_SUCCESS) st = fa_event_elapsed_ms(ctx, e0, e1, &x);
    fa_event_destroy(e0);
    fa_event_destroy(e1);
    if (st != FA_SUCCESS) {
      printf("timing: %s: %s\n", fa_status_string(st), fa_context_last_error(ctx));
      return NAN;
    }
    if (r >= 0) ms[r] = x;
  }
  qsort(ms, (size_t)reps, sizeof ms[0], cmp_double);
  return ms[reps / 2];
}

static void time_case(fa_context *ctx, fa_dtype dt, int b, int h, int s, int d, int causal) {
  const size_t es = fa_dtype_size(dt), n = (size_t)b * s * h * d;
  fa_buffer *buf[8] = {0}, *lbuf = NULL;
  fa_tensor t[8], lt;
  void *host = malloc(n * es);
  for (size_t i = 0; i < n; i++) put(host, dt, i, urand());
  int ok = fa_buffer_create(ctx, (size_t)b * h * s * sizeof(float), &lbuf) == FA_SUCCESS;
  for (int i = 0; ok && i < 8; i++) {
    ok = fa_buffer_create(ctx, n * es, &buf[i]) == FA_SUCCESS &&
         fa_buffer_write(ctx, buf[i], 0, host, n * es) == FA_SUCCESS;
    if (ok) fa_tensor_packed(&t[i], buf[i], 0, dt, b, s, h, d);
  }
  if (ok) {
    fa_tensor_packed(&lt, lbuf, 0, FA_F32, b, h, s, 1);
    fa_attention_desc desc = {0};
    desc.causal = causal;
    const double fwd_flops = 4.0 * b * h * (double)s * s * d / (causal ? 2 : 1);
    const double both = time_runs(ctx, &desc, t, &lt, 0, 5);
    const double bwd = time_runs(ctx, &desc, t, &lt, 1, 5);
    desc.deterministic = 1;
    const double det = time_runs(ctx, &desc, t, &lt, 1, 3);
    const char *knob = getenv("FLASHATTN_CUDA_BWD"), *defs = getenv("FLASHATTN_CUDA_BWD_DEFINES");
    printf("time %s B=%d H=%d S=%d D=%d causal=%d%s%s%s%s: fwd+bwd %.2f ms %.1f TFLOP/s; bwd %.2f ms %.1f TFLOP/s; "
           "bwd deterministic %.2f ms %.1f TFLOP/s\n",
           fa_dtype_name(dt), b, h, s, d, causal, knob ? " FLASHATTN_CUDA_BWD=" : "", knob ? knob : "",
           defs ? " FLASHATTN_CUDA_BWD_DEFINES=" : "", defs ? defs : "", both,
           3.5 * fwd_flops / both / 1e9, bwd, 2.5 * fwd_flops / bwd / 1e9, det, 2.5 * fwd_flops / det / 1e9);
  } else {
    printf("timing %s: %s\n", fa_dtype_name(dt), fa_context_last_error(ctx));
  }
  for (int i = 0; i < 8; i++) fa_buffer_destroy(buf[i]);
  fa_buffer_destroy(lbuf);
  free(host);
}

static void restore_bwd_env(const char *value) {
  if (value) setenv("FLASHATTN_CUDA_BWD", value, 1);
  else unsetenv("FLASHATTN_CUDA_BWD");
}

int main(int argc, char **argv) {
  int timing = 1, checks = 1;
  if (argc > 1 && strcmp(argv[1], "--nvrtc") == 0) {
    const char *archs[16] = {"sm_80", "sm_90"};
    int narch = 0, all = 0;
    for (int i = 2; i < argc; i++) {
      if (strcmp(argv[i], "-a") == 0) all = 1;
      else if (narch < 16) archs[narch++] = argv[i];
    }
    return nvrtc_all(narch ? narch : 2, archs, all);
  }
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--no-timing") == 0) timing = 0;
    else if (strcmp(argv[i], "--timing-only") == 0) checks = 0;

  /* The caller's FLASHATTN_CUDA_BWD (sm80 keeps a Hopper GPU on the sm_80 kernels) is put back after the
   * simt steps. */
  const char *env = getenv("FLASHATTN_CUDA_BWD");
  char *bwd_env = env ? strdup(env) : NULL;
  int count = 0;
  if (fa_device_count(FA_BACKEND_CUDA, &count) != FA_SUCCESS || count == 0) {
    printf("cu_bwd_check: no CUDA device, nothing to do\n");
    return 0;
  }
  static const shape shapes[] = {
      {2, 4, 2, 100, 257, 64, 0, 0, 0},  /* GQA, lengths off every tile */
      {1, 3, 1, 130, 70, 128, 1, 0, 0},  /* MQA, causal with Sq > Sk: fully masked rows */
      {1, 2, 2, 77, 200, 256, 1, 0, 0},  /* causal with Sq < Sk, largest head dim */
      {3, 2, 1, 1, 33, 80, 0, 0, 0},     /* Sq = 1 */
      {1, 2, 2, 65, 129, 96, 1, 1, 1},   /* BHSD strides at an odd offset */
      {1, 2, 2, 50, 50, 40, 1, 0, 0},    /* head dim not a multiple of 16 */
      {1, 1, 1, 64, 64, 16, 1, 0, 0},    /* smallest head dim tested, one block */
      {2, 8, 1, 300, 300, 128, 0, 0, 0}, /* MQA group of 8, several blocks */
      {1, 4, 2, 200, 333, 160, 0, 0, 0}, /* D > 128: two warps per key group */
      {2, 2, 1, 257, 190, 192, 1, 0, 0}, /* ... causal with Sq > Sk, GQA */
      {1, 2, 2, 300, 300, 256, 1, 1, 1}, /* ... largest head dim, BHSD strides at an odd offset */
  };
  /* Configurations: the device's budget (tensor cores for f16/bf16 where they serve), the same with
   * FLASHATTN_CUDA_BWD=simt (16-bit types on CUDA cores), then the small budgets. */
  static const char *budgets[] = {NULL, NULL, "49152", "8192"};
  int failed = 0, total = 0;
  for (int bi = 0; bi < (checks ? 4 : 0); bi++) {
    if (budgets[bi]) setenv("FLASHATTN_LOCAL_MEM_BYTES", budgets[bi], 1);
    else unsetenv("FLASHATTN_LOCAL_MEM_BYTES");
    if (bi == 1) setenv("FLASHATTN_CUDA_BWD", "simt", 1);
    else restore_bwd_env(bwd_env);
    fa_context_options opt;
    fa_context_options_default(&opt);
    opt.backend = FA_BACKEND_CUDA;
    fa_context *ctx;
    if (fa_context_create(&opt, &ctx) != FA_SUCCESS) {
      printf("cu_bwd_check: fa_context_create: %s\n", fa_last_create_error());
      return 1;
    }
    if (bi == 0) {
      fa_device_info info;
      fa_device_info_init(&info);
      fa_context_info(ctx, &info);
      printf("device: %s, %s, %zu B shared per block\n", info.name, info.api_version, info.local_mem_bytes);
    }
    char budget[48];
    snprintf(budget, sizeof budget, "budget=%s%s", budgets[bi] ? budgets[bi] : "device", bi == 1 ? " simt" : "");
    for (int dt = bi == 1 ? 1 : 0; dt < 3; dt++)
      for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int det = 0; det < 2; det++) {
          if (bi > 1 && (det || i >= 4)) continue; /* small budgets: fewer cases, atomic only, except below */
          total++;
          failed += !run_case(ctx, (fa_dtype)dt, shapes[i], det, budget);
        }
    if (bi == 3) { /* the tiny budget, deterministic too */
      total++;
      failed += !run_case(ctx, FA_F16, shapes[1], 1, budget);
    }
    fa_context_destroy(ctx);
  }
  restore_bwd_env(bwd_env);
  unsetenv("FLASHATTN_LOCAL_MEM_BYTES");
  if (checks) printf("%d of %d checks passed\n", total - failed, total);

  if (timing) {
    fa_context_options opt;
    fa_context_options_default(&opt);
    opt.backend = FA_BACKEND_CUDA;
    fa_context *ctx;
    if (fa_context_create(&opt, &ctx) != FA_SUCCESS) return 1;
    for (int d = 64; d <= 256; d *= 2)
      for (int causal = 0; causal < 2; causal++) time_case(ctx, FA_F16, 2, 16, 8192, d, causal);
    setenv("FLASHATTN_CUDA_BWD", "simt", 1); /* read at each call: the CUDA-core kernels for comparison */
    if (checks) time_case(ctx, FA_F16, 2, 16, 8192, 128, 0);
    if (checks) time_case(ctx, FA_F16, 2, 16, 8192, 128, 1);
    restore_bwd_env(bwd_env);
    fa_context_destroy(ctx);
  }
  return failed ? 1 : 0;
}
