/* Test plumbing: see harness.h. */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- backends ---- */

typedef struct th_backend {
  fa_backend kind;
  fa_context *ctx;
  int announced;
} th_backend;

static th_backend backends[2];
static int n_backends;
static void (*cleanup)(void);

void th_set_cleanup(void (*fn)(void)) {
  cleanup = fn;
}

int th_backend_count(void) {
  return n_backends;
}

fa_backend th_backend_kind(int i) {
  return backends[i].kind;
}

const char *th_backend_label(int i) {
  return fa_backend_name(backends[i].kind);
}

fa_context *th_context(int i) {
  th_backend *b = &backends[i];
  if (!b->ctx) {
    fa_context_options opt;
    fa_context_options_default(&opt);
    opt.backend = b->kind;
    fa_status st = fa_context_create(&opt, &b->ctx);
    ck_assert_msg(st == FA_SUCCESS, "%s: fa_context_create: %s: %s", fa_backend_name(b->kind),
                  fa_status_string(st), fa_last_create_error());
  }
  if (!b->announced) {
    fa_device_info info;
    fa_device_info_init(&info);
    if (fa_context_info(b->ctx, &info) == FA_SUCCESS)
      th_diag("%s: running on \"%s\" (%s), on-chip budget %zu of %zu bytes", fa_backend_name(b->kind),
              info.name, info.platform, info.local_mem_bytes, info.device_local_mem_bytes);
    b->announced = 1;
  }
  return b->ctx;
}

void th_diag(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("# ", stdout);
  vprintf(fmt, ap);
  fputc('\n', stdout);
  fflush(stdout);
  va_end(ap);
}

/* mkdir -p for the cache directories the tests' environment names, so a fresh build dir works. */
static void make_dirs(const char *path) {
  char buf[4096];
  if (!path || !*path || strlen(path) >= sizeof buf || strcmp(path, "off") == 0) return;
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(buf, 0777);
      *p = '/';
    }
  mkdir(buf, 0777);
}

static void probe_backends(void) {
  static const fa_backend kinds[2] = {FA_BACKEND_CUDA, FA_BACKEND_OPENCL};
  const char *only = getenv("FLASHATTN_TEST_BACKEND");
  for (int i = 0; i < 2; i++) {
    const char *name = fa_backend_name(kinds[i]);
    if (only && *only && strcmp(only, name) != 0) {
      th_diag("backend %s: skipped (FLASHATTN_TEST_BACKEND=%s)", name, only);
      continue;
    }
    int count = 0;
    fa_status st = fa_device_count(kinds[i], &count);
    if (st != FA_SUCCESS || count == 0) {
      th_diag("backend %s: skipped (%s, %d device(s)%s)", name, fa_status_string(st), count,
              fa_backend_built(kinds[i]) ? "" : ", not built in");
      continue;
    }
    th_diag("backend %s: runs (%d device(s))", name, count);
    backends[n_backends++] = (th_backend){kinds[i], NULL, 0};
  }
}

int th_main(Suite *s, int needs_backend) {
  make_dirs(getenv("POCL_CACHE_DIR"));
  make_dirs(getenv("FLASHATTN_CACHE_DIR"));
  th_diag("flashattn %s, seed %llu (FLASHATTN_TEST_SEED=%llu repeats this run)", fa_version_string(),
          (unsigned long long)th_base_seed(), (unsigned long long)th_base_seed());
  if (needs_backend) {
    probe_backends();
    if (n_backends == 0) {
      printf("1..0 # SKIP no backend\n");
      srunner_free(srunner_create(s)); /* Check frees a suite only through its runner */
      return 0;
    }
  }
  SRunner *sr = srunner_create(s);
  srunner_set_fork_status(sr, CK_NOFORK); /* see harness.h: device contexts do not survive fork() */
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr); /* frees s too */
  if (cleanup) cleanup();
  for (int i = 0; i < n_backends; i++) {
    fa_context_destroy(backends[i].ctx);
    backends[i].ctx = NULL;
  }
  return failed ? 1 : 0;
}

/* ---- naming and skipping cases ----
 * Check has no "skipped" result, and its TAP line for a passing test is
 * "ok N - <file of the last mark_point>:<tcase>:<test>: Passed". So the case's description goes in as that
 * file name through _mark_point() (check.h's mark_point() with our own text), and a case that no backend
 * could run gets "<description> # SKIP <why>", which TAP (and meson) read as a skip. */

static char case_desc[512];
static char skip_why[512];
static int case_ran;

void th_case_begin(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(case_desc, sizeof case_desc, fmt, ap);
  va_end(ap);
  for (char *p = case_desc; *p; p++)
    if (*p == '#') *p = '_'; /* a '#' would start a TAP directive */
  skip_why[0] = 0;
  case_ran = 0;
}

const char *th_case(void) {
  return case_desc;
}

void th_ran(int i) {
  (void)i;
  case_ran = 1;
}

void th_unsupported(int i, const char *why) {
  th_diag("%s: %s: unsupported: %s", case_desc, th_backend_label(i), why);
  if (!skip_why[0]) snprintf(skip_why, sizeof skip_why, "%s: %s", th_backend_label(i), why);
}

void th_finish_case(void) {
  static char loc[1100];
  if (case_ran || !skip_why[0]) {
    snprintf(loc, sizeof loc, "%s", case_desc);
  } else {
    char why[512];
    snprintf(why, sizeof why, "%s", skip_why);
    for (char *p = why; *p; p++)
      if (*p == '\n' || *p == '#') *p = ' ';
    snprintf(loc, sizeof loc, "%s # SKIP %s", case_desc, why);
  }
  _mark_point(loc, 0);
}

/* ---- random numbers: splitmix64, small and good enough for test inputs ---- */

uint64_t th_base_seed(void) {
  static uint64_t seed;
  static int have;
  if (!have) {
    const char *env = getenv("FLASHATTN_TEST_SEED");
    if (env && *env)
      seed = strtoull(env, NULL, 0);
    else
      seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    have = 1;
  }
  return seed;
}

void th_rng_init(th_rng *r, uint64_t seed) {
  r->state = seed;
}

uint64_t th_rng_next(th_rng *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t th_case_seed(int case_number) {
  th_rng r;
  th_rng_init(&r, th_base_seed() ^ ((uint64_t)(case_number + 1) * 0xd1b54a32d192ed03ull));
  return th_rng_next(&r);
}

double th_rng_uniform(th_rng *r) {
  return (double)(th_rng_next(r) >> 11) * 0x1.0p-53;
}

double th_rng_normal(th_rng *r) {
  double u1 = th_rng_uniform(r), u2 = th_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- dtypes and poison ---- */

double th_round_to(fa_dtype dtype, double x) {
  if (dtype == FA_U8) return (double)(uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x); /* masks: small integers */
  float f = (float)x;
  if (dtype == FA_F16) return ref_f16_to_f32(ref_f32_to_f16(f));
  if (dtype == FA_BF16) return ref_bf16_to_f32(ref_f32_to_bf16(f));
  return f;
}

double th_tolerance(fa_dtype dtype) {
  return dtype == FA_F32 ? 1e-5 : dtype == FA_F16 ? 2e-3 : 1e-2;
}

void th_small_create(th_small *s, fa_context *ctx, fa_dtype dt, const void *vals, int64_t d0, int64_t d1) {
  const size_t n = (size_t)(d0 * d1);
  ck_assert_int_eq(fa_buffer_create(ctx, (n + 3) * 4, &s->buf), FA_SUCCESS);
  const int32_t junk[3] = {-12345, 999999, -7};
  ck_assert_int_eq(fa_buffer_write(ctx, s->buf, 0, junk, sizeof junk), FA_SUCCESS);
  ck_assert_int_eq(fa_buffer_write(ctx, s->buf, 12, vals, n * 4), FA_SUCCESS);
  fa_tensor_packed(&s->t, s->buf, 12, dt, d0, d1, 1, 1);
}

size_t th_count_nan(const double *a, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++) c += isnan(a[i]) != 0;
  return c;
}

/* Quiet NaNs with a payload, so that "still poison" means "never written", not "wrote a NaN". Masks (u8)
 * get 0xa5: neither 0 nor 1, the values a mask is written with. */
static const uint32_t POISON_F32 = 0x7fc0dead;
static const uint16_t POISON_F16 = 0x7e5a, POISON_BF16 = 0x7fda;
static const uint8_t POISON_U8 = 0xa5;

static void put_poison(fa_dtype dtype, void *p) {
  if (dtype == FA_U8)
    memcpy(p, &POISON_U8, 1);
  else if (dtype == FA_F32)
    memcpy(p, &POISON_F32, 4);
  else
    memcpy(p, dtype == FA_F16 ? &POISON_F16 : &POISON_BF16, 2);
}

int th_is_poison(fa_dtype dtype, const void *p) {
  if (dtype == FA_U8) return memcmp(p, &POISON_U8, 1) == 0;
  if (dtype == FA_F32) return memcmp(p, &POISON_F32, 4) == 0;
  return memcmp(p, dtype == FA_F16 ? &POISON_F16 : &POISON_BF16, 2) == 0;
}

static void put_value(fa_dtype dtype, void *p, double x) {
  float f = (float)x;
  if (dtype == FA_U8) {
    *(uint8_t *)p = (uint8_t)x; /* already th_round_to'ed */
  } else if (dtype == FA_F32) {
    memcpy(p, &f, 4);
  } else {
    uint16_t h = dtype == FA_F16 ? ref_f32_to_f16(f) : ref_f32_to_bf16(f);
    memcpy(p, &h, 2);
  }
}

static double get_value(fa_dtype dtype, const void *p) {
  if (dtype == FA_U8) return *(const uint8_t *)p;
  if (dtype == FA_F32) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  memcpy(&h, p, 2);
  return dtype == FA_F16 ? ref_f16_to_f32(h) : ref_bf16_to_f32(h);
}

/* ---- tensors ---- */

/* Memory order of the logical dims, outermost first, and the gap after each dim's extent. */
static void layout_of(th_layout layout, int order[4], int64_t pad[4]) {
  static const int bshd[4] = {0, 1, 2, 3}, bhsd[4] = {0, 2, 1, 3};
  int padded = layout == TH_PADDED || layout == TH_BHSD_PADDED;
  memcpy(order, (layout == TH_BHSD || layout == TH_BHSD_PADDED) ? bhsd : bshd, sizeof bshd);
  /* Gaps of different sizes per dim so that a wrong stride lands somewhere poisoned. The outermost gap
   * leaves poison after the last element, which catches writes past the end. */
  pad[0] = padded ? 1 : 0;
  pad[1] = padded ? 3 : 0;
  pad[2] = padded ? 1 : 0;
  pad[3] = padded ? 8 : 0;
}

/* Buffer element index of logical element e (packed logical index). */
static size_t elem_at(const th_tensor *t, size_t e) {
  int64_t idx[4], rest = (int64_t)e;
  for (int d = 3; d >= 0; d--) {
    idx[d] = rest % t->t.shape[d];
    rest /= t->t.shape[d];
  }
  int64_t at = (int64_t)(t->t.offset / fa_dtype_size(t->t.dtype));
  for (int d = 0; d < 4; d++) at += idx[d] * t->t.stride[d];
  return (size_t)at;
}

fa_status th_tensor_create(th_tensor *t, fa_context *ctx, fa_dtype dtype, const int64_t shape[4],
                           th_layout layout, int64_t offset) {
  int order[4];
  int64_t pad[4];
  memset(t, 0, sizeof *t);
  t->ctx = ctx;
  layout_of(layout, order, pad);
  int64_t stride = 1, elems = 1;
  for (int k = 3; k >= 0; k--) {
    int d = order[k];
    t->t.stride[d] = stride;
    stride *= shape[d] + pad[d];
    elems *= shape[d];
  }
  for (int d = 0; d < 4; d++) t->t.shape[d] = shape[d];
  t->t.dtype = dtype;
  t->t.offset = (size_t)offset * fa_dtype_size(dtype);
  t->elems = (size_t)elems;
  t->buf_elems = (size_t)(offset + stride);
  t->host = calloc(t->elems, sizeof(double));
  t->image = malloc(t->buf_elems * fa_dtype_size(dtype));
  if (!t->host || !t->image) return FA_ERROR_OUT_OF_MEMORY;
  fa_status st = fa_buffer_create(ctx, t->buf_elems * fa_dtype_size(dtype), &t->buf);
  if (st != FA_SUCCESS) return st;
  t->t.buf = t->buf;
  return th_tensor_poison(t);
}

void th_tensor_destroy(th_tensor *t) {
  fa_buffer_destroy(t->buf);
  free(t->host);
  free(t->image);
  memset(t, 0, sizeof *t);
}

static fa_status write_image(th_tensor *t) {
  return fa_buffer_write(t->ctx, t->buf, 0, t->image, t->buf_elems * fa_dtype_size(t->t.dtype));
}

fa_status th_tensor_poison(th_tensor *t) {
  size_t es = fa_dtype_size(t->t.dtype);
  for (size_t i = 0; i < t->buf_elems; i++) put_poison(t->t.dtype, t->image + i * es);
  return write_image(t);
}

fa_status th_tensor_upload(th_tensor *t) {
  size_t es = fa_dtype_size(t->t.dtype);
  for (size_t i = 0; i < t->buf_elems; i++) put_poison(t->t.dtype, t->image + i * es);
  for (size_t e = 0; e < t->elems; e++) {
    t->host[e] = th_round_to(t->t.dtype, t->host[e]);
    put_value(t->t.dtype, t->image + elem_at(t, e) * es, t->host[e]);
  }
  return write_image(t);
}

fa_status th_tensor_fill_random(th_tensor *t, th_rng *r, double scale) {
  for (size_t e = 0; e < t->elems; e++) t->host[e] = scale * th_rng_normal(r);
  return th_tensor_upload(t);
}

static unsigned char *read_all(th_tensor *t, fa_status *st) {
  size_t bytes = t->buf_elems * fa_dtype_size(t->t.dtype);
  unsigned char *got = malloc(bytes);
  if (!got) {
    *st = FA_ERROR_OUT_OF_MEMORY;
    return NULL;
  }
  *st = fa_buffer_read(t->ctx, t->buf, 0, got, bytes);
  if (*st != FA_SUCCESS) {
    free(got);
    return NULL;
  }
  return got;
}

fa_status th_tensor_download(th_tensor *t, int *outside_ok) {
  fa_status st;
  unsigned char *got = read_all(t, &st);
  if (!got) return st;
  size_t es = fa_dtype_size(t->t.dtype);
  unsigned char *inside = calloc(t->buf_elems, 1);
  if (!inside) {
    free(got);
    return FA_ERROR_OUT_OF_MEMORY;
  }
  for (size_t e = 0; e < t->elems; e++) {
    size_t at = elem_at(t, e);
    t->host[e] = get_value(t->t.dtype, got + at * es);
    inside[at] = 1;
  }
  if (outside_ok) {
    *outside_ok = 1;
    for (size_t i = 0; i < t->buf_elems; i++)
      if (!inside[i] && memcmp(got + i * es, t->image + i * es, es) != 0) *outside_ok = 0;
  }
  free(inside);
  free(got);
  return FA_SUCCESS;
}

int th_tensor_unchanged(th_tensor *t) {
  fa_status st;
  unsigned char *got = read_all(t, &st);
  if (!got) return -1;
  int same = memcmp(got, t->image, t->buf_elems * fa_dtype_size(t->t.dtype)) == 0;
  free(got);
  return same;
}
