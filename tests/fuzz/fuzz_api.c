/* A fuzzer over the whole public API (issue 14). Each input is a short program: a list of calls, each
 * decoded from the bytes as a valid call with a few fields made hostile (shapes, strides, offsets, dtypes,
 * buffers, aliasing, descriptors and their struct_size and tails, environment values). What it checks:
 *   - no crash, hang or sanitizer report (ASan + UBSan in the builds that run it);
 *   - after every call that returns an error, every device buffer the call was given reads back exactly as
 *     before (outputs are poisoned), and host memory the call could write is untouched;
 *   - growable structs are read or written only within struct_size: each sits at the very end of an
 *     allocation of that size, so ASan sees a byte past it;
 *   - the error has a message, and a status that is one of the enum's.
 * It keeps what the caller must guarantee (the header's "Caller guarantees"): host pointers hold the bytes
 * passed, struct_size bytes are addressable, live handles only, no native queue. libFuzzer drives it where
 * clang has it (LLVMFuzzerTestOneInput); elsewhere tests/fuzz/standalone.c does. */
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flashattn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define POOL_BYTES ((size_t)96 << 10) /* each pool buffer: B=2, S=32, H=4, D=32 in f32 is 32 KiB; room for hostile offsets */
#define HOST_BYTES ((size_t)128 << 10)
enum { N_POOL = 12, N_IN = 6 }; /* pool[0..5] hold inputs, pool[6..11] start as poisoned outputs */

static void die(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_api: %s: %s\n", what, detail);
  abort();
}

/* ---- the input as a stream of choices ---- */

typedef struct reader {
  const uint8_t *p;
  size_t n;
} reader;

static unsigned byte(reader *r) {
  if (!r->n) return 0;
  r->n--;
  return *r->p++;
}

static uint64_t bits(reader *r, int nbytes) {
  uint64_t v = 0;
  for (int i = 0; i < nbytes; i++) v = v << 8 | byte(r);
  return v;
}

static unsigned pick(reader *r, unsigned n) { return byte(r) % n; }

/* 1 about once in n. An exhausted input reads zeros, and zeros must decode to the valid call (else every
 * short input ends in a NULL context and never reaches the checks), so the rare choice is n - 1, not 0. */
static int rare(reader *r, unsigned n) { return pick(r, n) == n - 1; }

/* Integers that break arithmetic: edges of int32/int64/size_t, powers of two, small values, or raw bits. */
static int64_t hostile_int(reader *r) {
  static const int64_t edge[] = {0,
                                 1,
                                 -1,
                                 2,
                                 3,
                                 7,
                                 8,
                                 9,
                                 16,
                                 17,
                                 64,
                                 255,
                                 256,
                                 257,
                                 4096,
                                 INT32_MAX,
                                 (int64_t)INT32_MAX + 1,
                                 INT32_MIN,
                                 UINT32_MAX,
                                 (int64_t)1 << 32,
                                 ((int64_t)1 << 32) + 1,
                                 (int64_t)1 << 40,
                                 (int64_t)1 << 62,
                                 INT64_MAX,
                                 INT64_MIN,
                                 INT64_MAX / 2,
                                 -((int64_t)1 << 31),
                                 -((int64_t)1 << 40)};
  const unsigned k = byte(r);
  if (k < 160) return edge[k % (sizeof edge / sizeof edge[0])];
  if (k < 224) return (int64_t)(k - 192); /* -32 .. 31 */
  return (int64_t)bits(r, 8);
}

static float hostile_float(reader *r) {
  static const float edge[] = {0.0f,    -0.0f,    1.0f,      -1.0f,   0.125f, 1e-45f, FLT_MIN, 1e20f, 1e26f,
                               3.4e27f, 1e28f,    1e38f,     FLT_MAX, NAN,    -NAN,   INFINITY, -INFINITY,
                               0.5f,    0.99999f, 1.00001f,  0.25f};
  const unsigned k = byte(r);
  if (k < 200) return edge[k % (sizeof edge / sizeof edge[0])];
  uint32_t u = (uint32_t)bits(r, 4);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ---- the world: one context, a second one (for foreign buffers), a pool of buffers with host images ---- */

typedef struct world {
  fa_context *ctx, *other;
  fa_buffer *pool[N_POOL], *tiny, *foreign;
  unsigned char *image[N_POOL]; /* what each pool buffer holds */
  unsigned char *host, *host_copy; /* a host array for reads and writes, and its expected contents */
  size_t desc_base, options_base, info_base;
  char sandbox[512]; /* FUZZ_SANDBOX: a folder of hostile cache directories (tests/fuzz/run.sh makes it) */
} world;

static world W;

static long api_calls, inputs;

static void report(void) { fprintf(stderr, "fuzz_api: %ld inputs, %ld API calls checked\n", inputs, api_calls); }

static void upload(int i) {
  if (fa_buffer_write(W.ctx, W.pool[i], 0, W.image[i], POOL_BYTES) != FA_SUCCESS)
    die("upload", fa_context_last_error(W.ctx));
}

static void setup(void) {
  if (W.ctx) return;
  fa_context_options opt;
  fa_context_options_default(&opt);
  if (fa_context_create(&opt, &W.ctx) != FA_SUCCESS || fa_context_create(&opt, &W.other) != FA_SUCCESS)
    die("fa_context_create", fa_last_create_error());
  for (int i = 0; i < N_POOL; i++) {
    if (fa_buffer_create(W.ctx, POOL_BYTES, &W.pool[i]) != FA_SUCCESS) die("pool", fa_context_last_error(W.ctx));
    W.image[i] = malloc(POOL_BYTES);
    if (!W.image[i]) die("pool", "out of host memory");
    /* Inputs: 0x3c bytes are small finite values in f32, f16 and bf16; outputs: 0xff is NaN in all. */
    memset(W.image[i], i < N_IN ? 0x3c : 0xff, POOL_BYTES);
    upload(i);
  }
  if (fa_buffer_create(W.ctx, 1, &W.tiny) != FA_SUCCESS || fa_buffer_create(W.other, POOL_BYTES, &W.foreign) != FA_SUCCESS)
    die("buffers", fa_context_last_error(W.ctx));
  W.host = malloc(HOST_BYTES);
  W.host_copy = malloc(HOST_BYTES);
  if (!W.host || !W.host_copy) die("host", "out of host memory");
  /* What struct_size 0 stands for: the structs of 0.2.0, every field today (src/api.c's *_BASE). */
  W.desc_base = offsetof(fa_attention_desc, max_seqlen_q) + sizeof(int64_t);
  W.options_base = offsetof(fa_context_options, native_queue) + sizeof(void *);
  W.info_base = offsetof(fa_device_info, events_host_clock) + sizeof(int);
  const char *sandbox = getenv("FUZZ_SANDBOX");
  if (!sandbox || !*sandbox) die("FUZZ_SANDBOX", "not set (a folder for hostile cache directories)");
  snprintf(W.sandbox, sizeof W.sandbox, "%s", sandbox);
  atexit(report);
}

static int pool_index(const fa_buffer *b) {
  for (int i = 0; i < N_POOL; i++)
    if (W.pool[i] == b) return i;
  return -1;
}

/* After an error: each pool buffer in `used` must read back as its image. */
static void check_unchanged(const int used[N_POOL], const char *call) {
  static unsigned char got[POOL_BYTES];
  if (fa_synchronize(W.ctx) != FA_SUCCESS) die("fa_synchronize", fa_context_last_error(W.ctx));
  for (int i = 0; i < N_POOL; i++) {
    if (!used[i]) continue;
    if (fa_buffer_read(W.ctx, W.pool[i], 0, got, POOL_BYTES) != FA_SUCCESS) die("read back", fa_context_last_error(W.ctx));
    if (memcmp(got, W.image[i], POOL_BYTES) != 0) {
      char what[128];
      snprintf(what, sizeof what, "pool buffer %d was written by a %s that failed", i, call);
      die(what, fa_context_last_error(W.ctx));
    }
  }
}

/* After a success: outputs hold results; put every buffer back as its image for the next call. */
static void restore(const int used[N_POOL]) {
  for (int i = 0; i < N_POOL; i++)
    if (used[i]) upload(i);
}

static char stale_text[1024];

/* Leave a known message on the context, so that a call failing without writing its own is caught. */
static void stale(void) {
  fa_tiles tiles;
  fa_context_tiles(W.ctx, 64, (fa_dtype)0x7fff1234, &tiles); /* a dtype no input of this fuzzer makes */
  snprintf(stale_text, sizeof stale_text, "%s", fa_context_last_error(W.ctx));
}

/* A status from the enum; an error on a context carries a new message (stale() ran before the call). */
static void check_status(fa_status st, const char *call, const fa_context *ctx) {
  api_calls++;
  if ((int)st < (int)FA_SUCCESS || (int)st > (int)FA_ERROR_KERNEL_BUILD) die(call, "status outside the enum");
  if (st != FA_SUCCESS && ctx && strcmp(fa_context_last_error(ctx), stale_text) == 0)
    die(call, "an error without a message of its own");
}

/* ---- tensors and descriptors: a valid call, then hostile fields ---- */

typedef struct shape {
  int64_t b, sq, sk, hq, hkv, d;
  fa_dtype dtype;
} shape;

static void random_shape(reader *r, shape *s) {
  /* Two head dims: every (dtype, dim, causal, mask, dropout, pass) is a kernel the first successful call
   * compiles (seconds on PoCL), and the checks do not depend on the dim; hostile dims come from mutations. */
  static const int64_t dims[] = {16, 32};
  static const int64_t heads[][2] = {{1, 1}, {2, 1}, {2, 2}, {4, 2}, {4, 1}, {4, 4}};
  s->b = 1 + pick(r, 2), s->sq = 1 + pick(r, 32), s->sk = 1 + pick(r, 32);
  const unsigned h = pick(r, 6);
  s->hq = heads[h][0], s->hkv = heads[h][1];
  s->d = dims[pick(r, 2)];
  s->dtype = (fa_dtype)pick(r, 3);
}

/* A view of logical shape [d0, d1, d2, d3] in pool buffer `buf`: packed, or with the middle dimensions
 * swapped (BHSD memory order), at a small element offset; falls back to packed at 0 when that would not fit. */
static void view(reader *r, fa_tensor *t, int buf, fa_dtype dtype, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
  const size_t es = fa_dtype_size(dtype), elems = (size_t)(d0 * d1 * d2 * d3);
  size_t offset = (size_t)pick(r, 4) * 64 * es;
  if (offset + elems * es > POOL_BYTES) offset = 0;
  fa_tensor_packed(t, W.pool[buf], offset, dtype, d0, d1, d2, d3);
  if (pick(r, 4) == 0) { /* memory ordered d0, d2, d1, d3 */
    t->stride[2] = d1 * d3, t->stride[1] = d3;
  }
}

/* One hostile change to tensor t (the buffer choices include other operands' buffers: aliasing). */
static void break_tensor(reader *r, fa_tensor *t, const fa_tensor *others, int n_others) {
  const int i = (int)pick(r, 4);
  switch (pick(r, 9)) {
  case 0: t->shape[i] = hostile_int(r); break;
  case 1: t->stride[i] = hostile_int(r); break;
  case 2: t->offset = (size_t)hostile_int(r); break;
  case 3: t->dtype = (fa_dtype)hostile_int(r); break;
  case 4: {
    const unsigned k = pick(r, 4);
    t->buf = k == 0 ? NULL : k == 1 ? W.tiny : k == 2 ? W.foreign : W.pool[pick(r, N_POOL)];
    break;
  }
  case 5: *t = others[pick(r, (unsigned)n_others)]; break; /* the very same view as another operand */
  case 6: t->buf = others[pick(r, (unsigned)n_others)].buf, t->offset += (size_t)pick(r, 64) * 4; break;
  case 7: t->stride[i] = t->stride[i] / 2; break;
  case 8: fa_tensor_packed(t, t->buf, t->offset, t->dtype, hostile_int(r), hostile_int(r), hostile_int(r), hostile_int(r)); break;
  }
}

/* The caller's descriptor in an allocation of exactly the bytes its struct_size promises (the base fields for
 * 0, struct_size itself otherwise, never less than the struct_size field), so ASan sees a read past them.
 * A size above ours may carry a nonzero tail, which must be refused. Returns the allocation (caller frees). */
static fa_attention_desc *make_desc(reader *r, const fa_attention_desc *fields) {
  size_t size = sizeof *fields;
  switch (pick(r, 8)) {
  case 0: size = 0; break;
  case 1: size = W.desc_base; break;
  case 2: size = sizeof *fields + 8 * (1 + pick(r, 4)); break;
  case 3: size = (size_t)hostile_int(r) % 4097; break;
  default: break;
  }
  const size_t given = size == 0 ? W.desc_base : size, alloc = given < sizeof(size_t) ? sizeof(size_t) : given;
  unsigned char *mem = calloc(1, alloc);
  if (!mem) die("desc", "out of host memory");
  fa_attention_desc d = *fields;
  d.struct_size = size;
  memcpy(mem, &d, alloc < sizeof d ? alloc : sizeof d);
  if (alloc > sizeof d && pick(r, 3) == 0) mem[sizeof d + pick(r, (unsigned)(alloc - sizeof d))] = (unsigned char)(1 + pick(r, 255));
  return (fa_attention_desc *)mem;
}

static void random_desc(reader *r, fa_attention_desc *d, const shape *s, fa_tensor *mask) {
  memset(mask, 0, sizeof *mask);
  fa_attention_desc_init(d);
  d->causal = (int)pick(r, 2);
  d->deterministic = (int)pick(r, 2);
  if (rare(r, 4)) d->dropout_p = 0.25f, d->dropout_seed = bits(r, 8), d->dropout_offset = (uint32_t)bits(r, 4);
  if (rare(r, 4)) d->algo = FA_ALGO_STANDARD;
  if (rare(r, 4)) {
    d->block_q = 1 + pick(r, 16), d->block_k = 1 + pick(r, 16);
    const int64_t rows = (s->sq - 1) / d->block_q + 1, cols = (s->sk - 1) / d->block_k + 1;
    view(r, mask, 5, FA_U8, pick(r, 2) ? s->b : 1, pick(r, 2) ? s->hq : 1, rows, cols);
    d->block_mask = mask;
  }
  for (unsigned m = pick(r, 3); m > 0; m--) {
    switch (pick(r, 9)) {
    case 0: d->softmax_scale = hostile_float(r); break;
    case 1: d->dropout_p = hostile_float(r); break;
    case 2: d->algo = (fa_algo)hostile_int(r); break;
    case 3: d->block_q = hostile_int(r); break;
    case 4: d->block_k = hostile_int(r); break;
    case 5: d->causal = (int)hostile_int(r); break;
    case 6: if (d->block_mask) break_tensor(r, mask, mask, 1); break;
    case 7: d->block_mask = pick(r, 2) ? mask : NULL; break;
    case 8: d->dropout_seed = bits(r, 8), d->dropout_offset = (uint32_t)hostile_int(r); break;
    }
  }
}

/* ---- the calls ---- */

enum { Q, K, V, O, LSE, DOUT, DQ, DK, DV, N_T };

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* FUZZ_TRACE=1: each call's operands on stderr, to read what a crashing input did. */
static void trace_tensor(const char *name, const fa_tensor *t) {
  if (!getenv("FUZZ_TRACE")) return;
  if (!t) {
    fprintf(stderr, "  %s: NULL\n", name);
    return;
  }
  fprintf(stderr, "  %s: buf %d (%p) offset %zu dtype %d shape [%lld %lld %lld %lld] stride [%lld %lld %lld %lld]\n",
          name, pool_index(t->buf), (void *)t->buf, t->offset, (int)t->dtype, (long long)t->shape[0],
          (long long)t->shape[1], (long long)t->shape[2], (long long)t->shape[3], (long long)t->stride[0],
          (long long)t->stride[1], (long long)t->stride[2], (long long)t->stride[3]);
}

static void trace_desc(const char *call, const fa_attention_desc *d) {
  if (!getenv("FUZZ_TRACE")) return;
  fprintf(stderr, "%s\n", call);
  if (d)
    fprintf(stderr, "  desc: size %zu algo %d scale %g causal %d det %d mask %p bq %lld bk %lld p %g\n",
            d->struct_size, (int)d->algo, (double)d->softmax_scale, d->causal, d->deterministic,
            (const void *)d->block_mask, (long long)d->block_q, (long long)d->block_k, (double)d->dropout_p);
}

static void mark(int used[N_POOL], const fa_tensor *t) {
  const int i = t ? pool_index(t->buf) : -1;
  if (i >= 0) used[i] = 1;
}

/* fa_forward or fa_backward: a valid call for a random shape, then up to three hostile changes. */
static void call_attention(reader *r, int backward) {
  shape s;
  random_shape(r, &s);
  fa_tensor t[N_T], mask;
  memset(&mask, 0, sizeof mask);
  const int64_t dims[N_T][4] = {{s.b, s.sq, s.hq, s.d},  {s.b, s.sk, s.hkv, s.d}, {s.b, s.sk, s.hkv, s.d},
                                {s.b, s.sq, s.hq, s.d},  {s.b, s.hq, s.sq, 1},    {s.b, s.sq, s.hq, s.d},
                                {s.b, s.sq, s.hq, s.d},  {s.b, s.sk, s.hkv, s.d}, {s.b, s.sk, s.hkv, s.d}};
  /* q k v in pool 0-2, dout in 3, o lse dq dk dv in the output buffers 6-10 */
  static const int home[N_T] = {0, 1, 2, 6, 7, 3, 8, 9, 10};
  for (int i = 0; i < N_T; i++)
    view(r, &t[i], home[i], i == LSE ? FA_F32 : s.dtype, dims[i][0], dims[i][1], dims[i][2], dims[i][3]);
  fa_attention_desc fields;
  random_desc(r, &fields, &s, &mask);
  const fa_tensor *p[N_T];
  for (int i = 0; i < N_T; i++) p[i] = &t[i];
  if (!backward && pick(r, 2)) p[LSE] = NULL;
  for (unsigned m = pick(r, 4); m > 0; m--) {
    const int i = (int)pick(r, backward ? N_T : LSE + 1);
    if (rare(r, 16)) p[i] = NULL;
    else break_tensor(r, &t[i], t, backward ? N_T : LSE + 1);
  }
  fa_attention_desc *desc = rare(r, 32) ? NULL : make_desc(r, &fields);
  fa_context *ctx = rare(r, 64) ? NULL : W.ctx;
  int used[N_POOL] = {0};
  for (int i = 0; i < N_T; i++) mark(used, p[i]);
  mark(used, &mask);
  static const char *const names[N_T] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};
  trace_desc(backward ? "fa_backward" : "fa_forward", desc);
  for (int i = 0; i < (backward ? N_T : LSE + 1); i++) trace_tensor(names[i], p[i]);
  if (fields.block_mask) trace_tensor("block_mask", &mask);
  stale();
  const double t0 = now_ms();
  const fa_status st = backward ? fa_backward(ctx, desc, p[Q], p[K], p[V], p[O], p[LSE], p[DOUT], p[DQ], p[DK], p[DV])
                                : fa_forward(ctx, desc, p[Q], p[K], p[V], p[O], p[LSE]);
  const char *name = backward ? "fa_backward" : "fa_forward";
  check_status(st, name, ctx);
  const double t1 = now_ms();
  if (st != FA_SUCCESS) check_unchanged(used, name);
  else restore(used);
  if (getenv("FUZZ_TRACE"))
    fprintf(stderr, "  -> %s (%.1f ms; %.1f ms to check) %s\n", fa_status_string(st), t1 - t0, now_ms() - t1,
            st != FA_SUCCESS && ctx ? fa_context_last_error(ctx) : "");
  free(desc);
}

static void call_dropout_mask(reader *r) {
  shape s;
  random_shape(r, &s);
  fa_tensor m, mask;
  view(r, &m, 6 + (int)pick(r, 6), FA_U8, s.b, s.hq, s.sq, s.sk);
  fa_attention_desc fields;
  random_desc(r, &fields, &s, &mask);
  for (unsigned k = pick(r, 3); k > 0; k--) break_tensor(r, &m, &m, 1);
  fa_attention_desc *desc = make_desc(r, &fields);
  int used[N_POOL] = {0};
  mark(used, &m);
  stale();
  const fa_status st = fa_dropout_mask(W.ctx, desc, rare(r, 32) ? NULL : &m);
  check_status(st, "fa_dropout_mask", W.ctx);
  if (st != FA_SUCCESS) check_unchanged(used, "fa_dropout_mask");
  else restore(used);
  free(desc);
}

/* fa_buffer_write / fa_buffer_read at hostile offsets and sizes; the host side always holds `bytes`. */
static void call_buffer_io(reader *r) {
  const int i = (int)pick(r, N_POOL);
  size_t offset = (size_t)hostile_int(r), bytes = (size_t)hostile_int(r) % (HOST_BYTES + 1);
  if (pick(r, 2)) offset %= POOL_BYTES + 64;
  fa_buffer *b = !rare(r, 16) ? W.pool[i] : pick(r, 2) ? W.foreign : NULL;
  int used[N_POOL] = {0};
  used[i] = 1;
  memset(W.host, 0x5a, HOST_BYTES);
  stale();
  if (pick(r, 2)) {
    const fa_status st = fa_buffer_write(W.ctx, b, offset, rare(r, 32) ? NULL : W.host, bytes);
    check_status(st, "fa_buffer_write", W.ctx);
    if (st != FA_SUCCESS) check_unchanged(used, "fa_buffer_write");
    else if (b == W.pool[i] && bytes) memcpy(W.image[i] + offset, W.host, bytes);
  } else {
    const fa_status st = fa_buffer_read(W.ctx, b, offset, rare(r, 32) ? NULL : W.host, bytes);
    check_status(st, "fa_buffer_read", W.ctx);
    memset(W.host_copy, 0x5a, HOST_BYTES);
    if (st != FA_SUCCESS && memcmp(W.host, W.host_copy, HOST_BYTES) != 0) die("fa_buffer_read", "host memory written by a read that failed");
    if (st == FA_SUCCESS && b == W.pool[i] && bytes && memcmp(W.host, W.image[i] + offset, bytes) != 0)
      die("fa_buffer_read", "read back other bytes than the buffer holds");
  }
}

/* fa_buffer_create: sizes from 0 to SIZE_MAX; what is granted is at most 1 MiB (kept small on purpose) and
 * freed at once; a request above the device's memory must be refused. */
static void call_buffer_create(reader *r) {
  fa_device_info info;
  fa_device_info_init(&info);
  fa_context_info(W.ctx, &info);
  size_t bytes = (size_t)hostile_int(r);
  if (pick(r, 2)) bytes = info.global_mem_bytes + (size_t)pick(r, 3) * ((size_t)1 << 30) + 1;
  if (bytes > ((size_t)1 << 20) && bytes <= info.global_mem_bytes) bytes %= (size_t)1 << 20;
  fa_buffer *b = (fa_buffer *)&b;
  fa_context *ctx = rare(r, 32) ? NULL : W.ctx;
  stale();
  const fa_status st = fa_buffer_create(ctx, bytes, rare(r, 32) ? NULL : &b);
  check_status(st, "fa_buffer_create", ctx);
  if (st == FA_SUCCESS) {
    if (bytes > info.global_mem_bytes) die("fa_buffer_create", "granted more than the device's memory");
    fa_buffer_destroy(b);
  }
}

/* fa_context_info into a struct of exactly struct_size bytes (or the base for 0); bytes past it untouched. */
static void call_info(reader *r) {
  size_t size = rare(r, 2) ? (size_t)hostile_int(r) % 4096 : sizeof(fa_device_info);
  if (pick(r, 4) == 0) size = W.info_base;
  const size_t alloc = size == 0 ? W.info_base : size < sizeof(size_t) ? sizeof(size_t) : size;
  unsigned char *mem = malloc(alloc);
  if (!mem) die("info", "out of host memory");
  memset(mem, 0xab, alloc);
  memcpy(mem, &size, sizeof size);
  const fa_status st = fa_context_info(rare(r, 32) ? NULL : W.ctx, (fa_device_info *)mem);
  check_status(st, "fa_context_info", NULL);
  if (st != FA_SUCCESS)
    for (size_t i = sizeof size; i < alloc; i++)
      if (mem[i] != 0xab) die("fa_context_info", "wrote into a struct it refused");
  free(mem);
}

/* fa_context_create with hostile options (exactly struct_size bytes) and hostile environment values. */
static void call_create(reader *r) {
  static const char *const names[] = {"FLASHATTN_BACKEND", "FLASHATTN_DEVICE", "FLASHATTN_LOCAL_MEM_BYTES",
                                      "FLASHATTN_CACHE_DIR"};
  static const char *const values[] = {"", "auto", "cuda", "opencl", "0", "-1", "1", "99999999999999999999",
                                       "0x10", "12abc", "off", "8", " 1", "4096", "2147483648", "18446744073709551616"};
  /* Cache directories only inside the sandbox: a file, a FIFO, a world-writable directory, a link, a path
   * under a file, a fresh one, and the normal one. */
  static const char *const dirs[] = {"file", "fifo", "shared", "link", "file/below", "fresh", "ok"};
  const int e = (int)pick(r, 4);
  char *saved = getenv(names[e]) ? strdup(getenv(names[e])) : NULL;
  char value[600];
  if (e == 3) {
    snprintf(value, sizeof value, "%s/%s", W.sandbox, dirs[pick(r, sizeof dirs / sizeof dirs[0])]);
  } else if (pick(r, 2)) {
    snprintf(value, sizeof value, "%s", values[pick(r, sizeof values / sizeof values[0])]);
  } else {
    size_t n = pick(r, 40);
    for (size_t i = 0; i < n; i++) value[i] = (char)(1 + pick(r, 255));
    value[n] = '\0';
  }
  /* setenv() races with getenv() in other threads (POSIX): PoCL's workers read options while they run
   * commands, so let every queue drain first (found by this fuzzer: a SIGSEGV in getenv on a PoCL thread). */
  fa_synchronize(W.ctx);
  fa_synchronize(W.other);
  setenv(names[e], value, 1);
  fa_context_options o;
  fa_context_options_default(&o);
  if (pick(r, 2)) o.backend = (fa_backend)hostile_int(r);
  if (pick(r, 2)) o.device = (int)hostile_int(r);
  size_t size = sizeof o;
  switch (pick(r, 5)) {
  case 0: size = 0; break;
  case 1: size = (size_t)hostile_int(r) % 512; break;
  case 2: size = sizeof o + 8; break;
  default: break;
  }
  const size_t alloc = size == 0 ? W.options_base : size < sizeof(size_t) ? sizeof(size_t) : size;
  unsigned char *mem = calloc(1, alloc);
  if (!mem) die("create", "out of host memory");
  o.struct_size = size;
  memcpy(mem, &o, alloc < sizeof o ? alloc : sizeof o);
  if (alloc > sizeof o && pick(r, 2)) mem[alloc - 1] = 1;
  fa_context *ctx = (fa_context *)&ctx;
  const fa_status st = fa_context_create(rare(r, 16) ? NULL : (fa_context_options *)mem, &ctx);
  check_status(st, "fa_context_create", NULL);
  if (st != FA_SUCCESS && (ctx || !fa_last_create_error()[0])) die("fa_context_create", "error without NULL and a message");
  if (st == FA_SUCCESS) fa_context_destroy(ctx);
  free(mem);
  if (saved) setenv(names[e], saved, 1);
  else unsetenv(names[e]);
  free(saved);
}

static void call_small(reader *r) {
  switch (pick(r, 6)) {
  case 0: {
    fa_tiles tiles;
    stale();
    const fa_status st = fa_context_tiles(W.ctx, (int)hostile_int(r), (fa_dtype)hostile_int(r), rare(r, 16) ? NULL : &tiles);
    check_status(st, "fa_context_tiles", W.ctx);
    break;
  }
  case 1: {
    const int64_t rows = hostile_int(r) % 300, cols = hostile_int(r) % 300;
    uint8_t *mask = rare(r, 16) ? NULL : W.host;
    memset(W.host, 0x77, HOST_BYTES);
    const fa_status st = pick(r, 2) ? fa_block_mask_butterfly(mask, rows, cols)
                                    : fa_block_mask_local_global(mask, rows, cols, hostile_int(r), hostile_int(r));
    check_status(st, "fa_block_mask_*", NULL);
    if (st != FA_SUCCESS && W.host[0] != 0x77) die("fa_block_mask_*", "wrote a mask it refused");
    break;
  }
  case 2: {
    fa_tensor t;
    const int64_t d1 = hostile_int(r), d2 = hostile_int(r), d3 = hostile_int(r);
    fa_tensor_packed(&t, W.pool[0], 0, FA_F32, hostile_int(r), d1, d2, d3);
    fa_tensor_packed(NULL, W.pool[0], 0, FA_F32, 1, 1, 1, 1);
    if (t.stride[3] != 1 || t.stride[2] != d3) die("fa_tensor_packed", "inner strides");
    break;
  }
  case 3: {
    fa_event *a = NULL, *b = NULL;
    double ms;
    stale();
    fa_status st = fa_event_record(W.ctx, &a);
    check_status(st, "fa_event_record", W.ctx);
    if (st == FA_SUCCESS && fa_event_record(rare(r, 2) ? W.other : W.ctx, &b) == FA_SUCCESS) {
      const fa_event *x = rare(r, 8) ? NULL : a, *y = rare(r, 8) ? a : b;
      st = fa_event_elapsed_ms(rare(r, 16) ? NULL : W.ctx, x, y, rare(r, 16) ? NULL : &ms);
      check_status(st, "fa_event_elapsed_ms", NULL);
    }
    fa_event_destroy(a);
    fa_event_destroy(b);
    break;
  }
  case 4: {
    size_t cur, peak;
    check_status(fa_context_memory(rare(r, 16) ? NULL : W.ctx, rare(r, 2) ? NULL : &cur, &peak), "fa_context_memory", NULL);
    check_status(fa_context_reset_peak_memory(rare(r, 16) ? NULL : W.ctx), "fa_context_reset_peak_memory", NULL);
    int n;
    check_status(fa_device_count((fa_backend)hostile_int(r), rare(r, 16) ? NULL : &n), "fa_device_count", NULL);
    break;
  }
  case 5: {
    const int64_t v = hostile_int(r);
    if (!fa_status_string((fa_status)v) || !fa_backend_name((fa_backend)v) || !fa_dtype_name((fa_dtype)v))
      die("names", "NULL name");
    fa_backend_built((fa_backend)v);
    fa_dtype_size((fa_dtype)v);
    if (fa_version() <= 0 || !fa_version_string()[0]) die("version", "empty");
    /* fa_buffer_wrap: only what the caller may pass without a native object of its own (NULL, sizes). */
    fa_buffer *b = (fa_buffer *)&b;
    stale();
    const fa_status st = fa_buffer_wrap(rare(r, 16) ? NULL : W.ctx, NULL, (size_t)hostile_int(r), rare(r, 4) ? NULL : &b);
    check_status(st, "fa_buffer_wrap", NULL);
    if (st == FA_SUCCESS) die("fa_buffer_wrap", "accepted a NULL native object");
    break;
  }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  inputs++;
  reader r = {data, size};
  for (int calls = 0; r.n && calls < 8; calls++) {
    const unsigned kind = pick(&r, 16);
    const double t0 = now_ms();
    switch (kind) {
    case 0: case 1: case 2: case 3: case 4: call_attention(&r, 0); break;
    case 5: case 6: case 7: case 8: call_attention(&r, 1); break;
    case 9: call_dropout_mask(&r); break;
    case 10: call_buffer_io(&r); break;
    case 11: call_buffer_create(&r); break;
    case 12: call_info(&r); break;
    case 13: call_create(&r); break;
    default: call_small(&r); break;
    }
    if (getenv("FUZZ_TRACE")) fprintf(stderr, "call kind %u: %.1f ms\n", kind, now_ms() - t0);
  }
  return 0;
}
