/* flashattn-decode-bench: decode-shaped attention (few query rows against a long KV cache) timed with device
 * events, median of --iters after warm-up, in the CSV of the GPU machine's decode_anchor.py:
 *   backend,batch,heads_q,heads_kv,seqlen_q,seqlen_k,head_dim,dtype,ms,GBps
 * GBps counts the K and V bytes of the cache read once (what decode is limited by). backend is
 * "flashattn-<cuda|opencl>", with "-paged<N>" when --page-size N stores the cache as shuffled pages,
 * "-window<W>" with --window W (causal, W keys back: GBps then counts the window's bytes).
 * Every query sees the whole cache (no mask), as in decode_anchor.py.
 *
 *   flashattn-decode-bench [--batch 1,8,64] [--seqlens-k 1024,8192,32768,131072] [--seqlens-q 1,4]
 *       [--heads-q 32] [--heads-kv 8] [--head-dim 128] [--dtype f16|bf16|f32] [--iters 20] [--page-size N]
 *       [--window W] [--splits N] */
#include <flashattn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 16
#define CHECK(call)                                                                                       \
  do {                                                                                                    \
    fa_status st_ = (call);                                                                               \
    if (st_ != FA_SUCCESS) {                                                                              \
      fprintf(stderr, "%s: %s: %s\n", #call, fa_status_string(st_), fa_context_last_error(ctx));          \
      exit(1);                                                                                            \
    }                                                                                                     \
  } while (0)

static int parse_list(const char *s, long *out) {
  int n = 0;
  char *end;
  while (*s && n < MAX_LIST) {
    out[n++] = strtol(s, &end, 10);
    if (end == s || out[n - 1] <= 0) return -1;
    s = *end == ',' ? end + 1 : end;
  }
  return n;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Uniform noise in [-1, 1) as 16-bit or 32-bit values: the timing does not depend on them. */
static void fill(fa_context *ctx, fa_buffer *buf, size_t bytes) {
  enum { CHUNK = 1 << 24 };
  unsigned short *h = malloc(CHUNK);
  uint32_t x = 12345;
  for (size_t i = 0; i < CHUNK / 2; i++) {
    x = x * 1664525u + 1013904223u;
    h[i] = (unsigned short)(0x3000 | (x >> 20)); /* small normal f16 / bf16 values, finite as f32 halves */
  }
  for (size_t off = 0; off < bytes; off += CHUNK) {
    const size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;
    CHECK(fa_buffer_write(ctx, buf, off, h, n));
  }
  free(h);
}

int main(int argc, char **argv) {
  long batch[MAX_LIST] = {1, 8, 64}, sks[MAX_LIST] = {1024, 8192, 32768, 131072}, sqs[MAX_LIST] = {1, 4};
  int nb = 3, nk = 4, nq = 2;
  long hq = 32, hkv = 8, d = 128, iters = 20, page = 0, window = 0, splits = 0;
  fa_dtype dt = FA_F16;
  fa_context *ctx = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--batch")) nb = parse_list(v, batch);
    else if (!strcmp(k, "--seqlens-k")) nk = parse_list(v, sks);
    else if (!strcmp(k, "--seqlens-q")) nq = parse_list(v, sqs);
    else if (!strcmp(k, "--heads-q")) hq = atol(v);
    else if (!strcmp(k, "--heads-kv")) hkv = atol(v);
    else if (!strcmp(k, "--head-dim")) d = atol(v);
    else if (!strcmp(k, "--iters")) iters = atol(v);
    else if (!strcmp(k, "--page-size")) page = atol(v);
    else if (!strcmp(k, "--window")) window = atol(v);
    else if (!strcmp(k, "--splits")) splits = atol(v);
    else if (!strcmp(k, "--dtype")) dt = !strcmp(v, "f32") ? FA_F32 : !strcmp(v, "bf16") ? FA_BF16 : FA_F16;
    else {
      fprintf(stderr, "unknown option %s (see the comment at the top of tools/decode_bench.c)\n", k);
      return 2;
    }
  }
  if (nb < 1 || nk < 1 || nq < 1 || hq < 1 || hkv < 1 || hq % hkv || d < 8 || iters < 1 || page < 0 || window < 0) {
    fprintf(stderr, "bad option value\n");
    return 2;
  }
  CHECK(fa_context_create(NULL, &ctx));
  fa_device_info info;
  fa_device_info_init(&info);
  CHECK(fa_context_info(ctx, &info));
  const size_t es = fa_dtype_size(dt);
  printf("backend,batch,heads_q,heads_kv,seqlen_q,seqlen_k,head_dim,dtype,ms,GBps\n");
  for (int bi = 0; bi < nb; bi++)
    for (int ki = 0; ki < nk; ki++) {
      const long B = batch[bi], sk = page ? (sks[ki] + page - 1) / page * page : sks[ki];
      const size_t kv_bytes = (size_t)B * sk * hkv * d * es;
      if (2 * kv_bytes > 40e9 || 2 * kv_bytes > info.global_mem_bytes * 0.8) continue;
      fa_buffer *kb, *vb, *qb, *ob, *tb = NULL;
      CHECK(fa_buffer_create(ctx, kv_bytes, &kb));
      CHECK(fa_buffer_create(ctx, kv_bytes, &vb));
      fill(ctx, kb, kv_bytes);
      fill(ctx, vb, kv_bytes);
      fa_tensor k, v, table;
      const long pages_per_seq = page ? sk / page : 0;
      if (page) { /* pages in a fixed shuffled order: sequence b's page p is page (p * B + b) */
        fa_tensor_packed(&k, kb, 0, dt, B * pages_per_seq, page, hkv, d);
        int32_t *t = malloc(sizeof(int32_t) * (size_t)(B * pages_per_seq));
        for (long b = 0; b < B; b++)
          for (long p = 0; p < pages_per_seq; p++) t[b * pages_per_seq + p] = (int32_t)(p * B + b);
        CHECK(fa_buffer_create(ctx, sizeof(int32_t) * (size_t)(B * pages_per_seq), &tb));
        CHECK(fa_buffer_write(ctx, tb, 0, t, sizeof(int32_t) * (size_t)(B * pages_per_seq)));
        free(t);
        fa_tensor_packed(&table, tb, 0, FA_I32, B, pages_per_seq, 1, 1);
      } else {
        fa_tensor_packed(&k, kb, 0, dt, B, sk, hkv, d);
      }
      v = k;
      v.buf = vb;
      for (int qi = 0; qi < nq; qi++) {
        const long sq = sqs[qi];
        const size_t q_bytes = (size_t)B * sq * hq * d * es;
        CHECK(fa_buffer_create(ctx, q_bytes, &qb));
        CHECK(fa_buffer_create(ctx, q_bytes, &ob));
        fill(ctx, qb, q_bytes);
        fa_tensor q, o;
        fa_tensor_packed(&q, qb, 0, dt, B, sq, hq, d);
        fa_tensor_packed(&o, ob, 0, dt, B, sq, hq, d);
        fa_attention_desc desc;
        fa_attention_desc_init(&desc);
        desc.num_splits = (int)splits;
        if (page) desc.block_table = &table, desc.trust_indices = 1;
        if (window) desc.causal = 1, desc.window = 1, desc.window_left = window, desc.window_right = 0;
        double *ms = malloc(sizeof(double) * (size_t)iters);
        for (int w = 0; w < 3; w++) CHECK(fa_forward(ctx, &desc, &q, &k, &v, &o, NULL));
        for (long it = 0; it < iters; it++) {
          fa_event *e0, *e1;
          CHECK(fa_event_record(ctx, &e0));
          CHECK(fa_forward(ctx, &desc, &q, &k, &v, &o, NULL));
          CHECK(fa_event_record(ctx, &e1));
          CHECK(fa_event_elapsed_ms(ctx, e0, e1, &ms[it]));
          fa_event_destroy(e0);
          fa_event_destroy(e1);
        }
        qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
        const double med = ms[iters / 2];
        const long read_keys = window && window + sq < sk ? window + sq : sk;
        const double bytes = 2.0 * (double)B * read_keys * hkv * d * es;
        char name[64];
        int n = snprintf(name, sizeof name, "flashattn-%s", fa_backend_name(info.backend));
        if (page) n += snprintf(name + n, sizeof name - (size_t)n, "-paged%ld", page);
        if (window) snprintf(name + n, sizeof name - (size_t)n, "-window%ld", window);
        printf("%s,%ld,%ld,%ld,%ld,%ld,%ld,%s,%.4f,%.1f\n", name, B, hq, hkv, sq, sk, d, fa_dtype_name(dt), med,
               bytes / (med * 1e6));
        fflush(stdout);
        free(ms);
        fa_buffer_destroy(qb);
        fa_buffer_destroy(ob);
      }
      fa_buffer_destroy(kb);
      fa_buffer_destroy(vb);
      fa_buffer_destroy(tb);
    }
  fa_context_destroy(ctx);
  return 0;
}
