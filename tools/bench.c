/* flashattn-bench: times fa_forward / fa_backward over a grid of shapes and prints CSV with the columns
 * ../shared/device/sdpa_anchor.py prints for PyTorch, so that both can be joined on the shape columns.
 * Uses the public API only. See usage() for the options and for how the timing is taken. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flashattn.h"
#include "reference.h" /* the conversions to f16 and bf16 bits, written once (tests/reference.c) */

#define MAX_LIST 64

typedef struct int_list {
  int n;
  long v[MAX_LIST];
} int_list;

typedef enum mode { MODE_FWD = 0, MODE_BWD, MODE_FWDBWD } mode;
static const char *const mode_names[] = {"fwd", "bwd", "fwdbwd"};
/* FLOPs relative to the forward, as in the FlashAttention papers: backward 2.5x, forward+backward 3.5x. */
static const double mode_flops[] = {1.0, 2.5, 3.5};

typedef struct double_list {
  int n;
  double v[MAX_LIST];
} double_list;

/* The block masks a case can run with: none, random blocks at a density, or a fixed pattern. */
typedef enum mask_kind { MASK_DENSE = 0, MASK_RANDOM, MASK_BUTTERFLY, MASK_LOCAL_GLOBAL } mask_kind;
static const char *const mask_names[] = {"dense", "random", "butterfly", "local-global"};

typedef struct mask_spec {
  mask_kind kind;
  double density; /* MASK_RANDOM: probability of each block */
} mask_spec;

typedef struct options {
  fa_backend backend;
  int device;
  int_list algos, modes, dtypes, head_dims, seqlens, causal;
  double_list densities, dropouts;
  int_list patterns; /* indices into mask_names: butterfly, local-global */
  int_list windows;  /* --sliding-window: window_left values, -1 for none */
  int_list varlens;  /* --varlen: 0 padded batch, 1 the same sequences packed with cu_seqlens */
  int varlen_random; /* --varlen-lengths random: packed sequences of lengths seqlen / 8 .. seqlen */
  long block_size, window, global;
  long batch, heads, heads_kv; /* 0: derived from total_tokens and model_dim */
  long total_tokens, model_dim;
  int iters, warmup;
  int deterministic; /* desc.deterministic for every call */
  int trust_indices; /* --trust-indices: varlen's offsets not read back (max_seqlen_q given), as FA2's callers */
  const char *plot;
} options;

/* One row of the CSV, kept for --plot. */
typedef struct result {
  int algo, mode, dtype, head_dim, causal;
  mask_spec mask;
  double dropout;
  long window;
  int varlen;
  long batch, heads_q, heads_kv, seqlen;
  double ms, tflops;
  size_t peak_bytes;
} result;

static void usage(FILE *f) {
  fprintf(f, "usage: flashattn-bench [options]\n"
             "Times flashattn's forward and backward passes and prints CSV on stdout:\n"
             "  backend,algo,dtype,batch,heads_q,heads_kv,seqlen_q,seqlen_k,head_dim,causal,mode,ms,tflops,peak_bytes,\n"
             "  mask,density,dropout\n"
             "\n"
             "  --backend cuda|opencl|auto   backend (default auto: FLASHATTN_BACKEND, else CUDA, else OpenCL)\n"
             "  --device N                   device index within the backend (default: FLASHATTN_DEVICE, else 0)\n"
             "  --algos LIST                 flash,standard (default both)\n"
             "  --modes LIST                 fwd,bwd,fwdbwd (default fwd,fwdbwd)\n"
             "  --dtypes LIST                f32,f16,bf16 (default f16,bf16)\n"
             "  --head-dims LIST             default 64,128\n"
             "  --seqlens LIST               seqlen_q = seqlen_k (default 512,1024,2048,4096,8192,16384)\n"
             "  --causal LIST                0,1 (default 0,1)\n"
             "  --batch N --heads N          fixed batch and query heads, or:\n"
             "  --total-tokens N             batch = max(1, N / seqlen)    (default 16384)\n"
             "  --model-dim N                heads = max(1, N / head_dim)  (default 2048)\n"
             "  --heads-kv N                 key/value heads (GQA; must divide the query heads; default = heads)\n"
             "  --block-density LIST         block-sparse: random block masks of these densities, 1 = dense\n"
             "                               (default 1; e.g. 1,0.5,0.25,0.125)\n"
             "  --pattern LIST               block-sparse with fixed patterns too: butterfly,local-global\n"
             "  --block-size N               rows and keys per mask block (default 128)\n"
             "  --window N --global N        local-global: band half-width and global blocks (default 1, 1)\n"
             "  --dropout LIST               dropout probabilities (default 0; e.g. 0,0.1)\n"
             "  --deterministic 0|1          desc.deterministic: the backward's fixed-order dQ (default 0)\n"
             "  --trust-indices 0|1          varlen: desc.trust_indices with max_seqlen_q, _k given, so that no call reads\n"
             "                               the offsets back (FA2's varlen functions take max_seqlen too; default 0)\n"
             "  --sliding-window LIST        sliding windows of window_left keys (window_right 0 when causal, else the\n"
             "                               same); -1 is none (default -1; e.g. -1,256,1024)\n"
             "  --varlen LIST                0: a padded batch; 1: the batch's sequences packed along one token axis\n"
             "                               with cu_seqlens (default 0; e.g. 0,1 compares the two)\n"
             "  --varlen-lengths fixed|random  packed sequences of seqlen each (default), or of random lengths in\n"
             "                               seqlen / 8 .. seqlen (fixed seed; the padded batch still pads to seqlen)\n"
             "  --iters N                    timed iterations, median reported (default 20)\n"
             "  --warmup N                   untimed iterations first (default 3; the first compiles kernels)\n"
             "  --plot FILE.png              also draw runtime and peak memory against seqlen with gnuplot, titled\n"
             "                               with the device, dtypes, head dims and batch/heads\n"
             "  --help                       this text\n"
             "\n"
             "Timing: each iteration is timed with device events recorded before and after the call(s)\n"
             "(fa_event_record: CUDA events, OpenCL profiling), from an idle queue; ms is the median over --iters.\n"
             "A queue without profiling times with the host clock (the library's events fall back, and a line on\n"
             "stderr says so); where the events fail, the host clock around the call(s) and fa_synchronize().\n"
             "Progress goes to stderr: a line rewritten per case on a terminal, else a line every 30 s; both with\n"
             "an estimate of the time left from the cost (FLOPs) of the cases done and to do.\n"
             "mode bwd times fa_backward alone (after one untimed forward for o and lse); fwdbwd times both.\n"
             "TFLOP/s: forward 4*B*H*Sq*Sk*D, halved when causal; bwd 2.5x, fwdbwd 3.5x that. With a block mask,\n"
             "only the scores the mask (and causal) leave visible count: the work a block-sparse kernel must do.\n"
             "density: the fraction of the Sq x Sk scores visible (mask and causal together). Masks are one\n"
             "[1, 1, ceil(S / block), ceil(S / block)] uint8 tensor shared by all batches and heads (seed fixed).\n"
             "peak_bytes: the context's peak device memory over the case (fa_context_memory): the case's own\n"
             "buffers (q, k, v, o, lse; dout, dq, dk, dv for the backward) plus the library's workspace. Each case\n"
             "runs in a fresh context, so no workspace carries over from the case before.\n"
             "A case that runs out of memory prints ms and tflops as nan and peak_bytes as the bytes it tried to\n"
             "hold: its buffers plus the allocation the library refused (the size its error sentence names).\n"
             "An unsupported case prints nan too, with the bytes it held. Both say why on stderr.\n"
             "The exit status is 1 when some case failed for another reason.\n"
             "Inputs are random normal numbers (seed fixed), never zeros.\n");
}

/* ---- option parsing ---- */

static int parse_long(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

/* The comma-separated items of an option's value, each NUL-terminated; returns their count, or -1 (said on
 * stderr) for an empty item, one too long, more than MAX_LIST, or none. */
typedef char list_items[MAX_LIST][64];
static int split_list(const char *opt, const char *s, list_items items) {
  int n = 0;
  for (const char *p = s; *p;) {
    size_t len = strcspn(p, ",");
    if (len == 0 || len >= sizeof items[0] || n == MAX_LIST) {
      fprintf(stderr, "flashattn-bench: %s: bad list '%s'\n", opt, s);
      return -1;
    }
    memcpy(items[n], p, len);
    items[n++][len] = 0;
    p += len;
    if (*p == ',') p++;
  }
  if (n == 0) fprintf(stderr, "flashattn-bench: %s: empty list\n", opt);
  return n > 0 ? n : -1;
}

static int parse_ints(const char *opt, const char *s, int_list *out, long min) {
  list_items items;
  if ((out->n = split_list(opt, s, items)) < 0) return -1;
  for (int i = 0; i < out->n; i++)
    if (parse_long(items[i], &out->v[i]) || out->v[i] < min) {
      fprintf(stderr, "flashattn-bench: %s: '%s' is not an integer >= %ld\n", opt, items[i], min);
      return -1;
    }
  return 0;
}

/* A list of 0 and/or 1 (--causal, --varlen). */
static int parse_flags(const char *opt, const char *s, int_list *out) {
  if (parse_ints(opt, s, out, 0)) return -1;
  for (int j = 0; j < out->n; j++)
    if (out->v[j] > 1) {
      fprintf(stderr, "flashattn-bench: %s takes 0 and/or 1\n", opt);
      return -1;
    }
  return 0;
}

/* Numbers in [lo, hi], or (lo, hi] with lo_open. */
static int parse_doubles(const char *opt, const char *s, double_list *out, double lo, double hi, int lo_open) {
  list_items items;
  if ((out->n = split_list(opt, s, items)) < 0) return -1;
  for (int i = 0; i < out->n; i++) {
    char *end;
    errno = 0;
    const double v = out->v[i] = strtod(items[i], &end);
    if (errno || *end || !(lo_open ? v > lo : v >= lo) || !(v <= hi)) {
      fprintf(stderr, "flashattn-bench: %s: '%s' is not a number in %s%g, %g]\n", opt, items[i], lo_open ? "(" : "[",
              lo, hi);
      return -1;
    }
  }
  return 0;
}

/* A list of names, each mapped to its index in `names`. */
static int parse_names(const char *opt, const char *s, const char *const *names, int count, int_list *out) {
  list_items items;
  if ((out->n = split_list(opt, s, items)) < 0) return -1;
  for (int i = 0; i < out->n; i++) {
    out->v[i] = -1;
    for (int j = 0; j < count; j++)
      if (strcmp(names[j], items[i]) == 0) out->v[i] = j;
    if (out->v[i] < 0) {
      fprintf(stderr, "flashattn-bench: %s: unknown value '%s' in '%s' (expected", opt, items[i], s);
      for (int j = 0; j < count; j++)
        fprintf(stderr, "%s%s", j ? "," : " ", names[j]);
      fprintf(stderr, ")\n");
      return -1;
    }
  }
  return 0;
}

static const char *const algo_names[] = {"flash", "standard"};   /* FA_ALGO_FLASH, FA_ALGO_STANDARD */
static const char *const dtype_names[] = {"f32", "f16", "bf16"}; /* FA_F32, FA_F16, FA_BF16 */
static const char *const backend_names[] = {"auto", "cuda", "opencl"};

/* Returns 0 to run, 1 after --help, -1 on a bad option. */
static int parse_options(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  o->backend = FA_BACKEND_AUTO;
  o->device = -1;
  o->total_tokens = 16384;
  o->model_dim = 2048;
  o->iters = 20;
  o->warmup = 3;
  parse_names("--algos", "flash,standard", algo_names, 2, &o->algos);
  parse_names("--modes", "fwd,fwdbwd", mode_names, 3, &o->modes);
  parse_names("--dtypes", "f16,bf16", dtype_names, 3, &o->dtypes);
  parse_ints("--head-dims", "64,128", &o->head_dims, 1);
  parse_ints("--seqlens", "512,1024,2048,4096,8192,16384", &o->seqlens, 1);
  parse_ints("--causal", "0,1", &o->causal, 0);
  parse_doubles("--block-density", "1", &o->densities, 0, 1, 1);
  parse_doubles("--dropout", "0", &o->dropouts, 0, 0.999, 0);
  parse_ints("--sliding-window", "-1", &o->windows, -1);
  parse_ints("--varlen", "0", &o->varlens, 0);
  o->block_size = 128;
  o->window = 1;
  o->global = 1;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *val = NULL;
    char name[64];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "flashattn-bench: unexpected argument '%s' (see --help)\n", arg);
      return -1;
    }
    /* --name=value or --name value */
    const char *eq = strchr(arg, '=');
    size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
    if (nlen >= sizeof name) {
      fprintf(stderr, "flashattn-bench: unknown option '%s' (see --help)\n", arg);
      return -1;
    }
    memcpy(name, arg, nlen);
    name[nlen] = 0;
    if (eq)
      val = eq + 1;
    else if (i + 1 < argc)
      val = argv[++i];
    else {
      fprintf(stderr, "flashattn-bench: %s needs a value (see --help)\n", name);
      return -1;
    }

    long n = 0;
    int rc = 0;
    if (strcmp(name, "--backend") == 0) {
      int_list l;
      rc = parse_names(name, val, backend_names, 3, &l);
      if (!rc && l.n != 1) {
        fprintf(stderr, "flashattn-bench: --backend takes one value\n");
        rc = -1;
      }
      if (!rc) o->backend = l.v[0] == 1 ? FA_BACKEND_CUDA : l.v[0] == 2 ? FA_BACKEND_OPENCL : FA_BACKEND_AUTO;
    } else if (strcmp(name, "--algos") == 0) {
      rc = parse_names(name, val, algo_names, 2, &o->algos);
    } else if (strcmp(name, "--modes") == 0) {
      rc = parse_names(name, val, mode_names, 3, &o->modes);
    } else if (strcmp(name, "--dtypes") == 0) {
      rc = parse_names(name, val, dtype_names, 3, &o->dtypes);
    } else if (strcmp(name, "--head-dims") == 0) {
      rc = parse_ints(name, val, &o->head_dims, 1);
    } else if (strcmp(name, "--seqlens") == 0) {
      rc = parse_ints(name, val, &o->seqlens, 1);
    } else if (strcmp(name, "--causal") == 0) {
      rc = parse_flags(name, val, &o->causal);
    } else if (strcmp(name, "--block-density") == 0) {
      rc = parse_doubles(name, val, &o->densities, 0, 1, 1);
    } else if (strcmp(name, "--dropout") == 0) {
      rc = parse_doubles(name, val, &o->dropouts, 0, 0.999, 0);
    } else if (strcmp(name, "--pattern") == 0) {
      rc = parse_names(name, val, mask_names + MASK_BUTTERFLY, 2, &o->patterns);
      for (int j = 0; !rc && j < o->patterns.n; j++) o->patterns.v[j] += MASK_BUTTERFLY;
    } else if (strcmp(name, "--sliding-window") == 0) {
      rc = parse_ints(name, val, &o->windows, -1);
    } else if (strcmp(name, "--varlen") == 0) {
      rc = parse_flags(name, val, &o->varlens);
    } else if (strcmp(name, "--varlen-lengths") == 0) {
      o->varlen_random = strcmp(val, "random") == 0;
      if (!o->varlen_random && strcmp(val, "fixed") != 0) {
        fprintf(stderr, "flashattn-bench: --varlen-lengths takes fixed or random\n");
        rc = -1;
      }
    } else if (strcmp(name, "--plot") == 0) {
      o->plot = val;
    } else {
      /* the single-integer options */
      struct {
        const char *name;
        long min;
        long *dst_l;
        int *dst_i;
      } ints[] = {
          {"--batch", 1, &o->batch, NULL},         {"--heads", 1, &o->heads, NULL},
          {"--heads-kv", 1, &o->heads_kv, NULL},   {"--total-tokens", 1, &o->total_tokens, NULL},
          {"--model-dim", 1, &o->model_dim, NULL}, {"--iters", 1, NULL, &o->iters},
          {"--warmup", 0, NULL, &o->warmup},       {"--device", 0, NULL, &o->device},
          {"--block-size", 1, &o->block_size, NULL}, {"--window", 0, &o->window, NULL},
          {"--global", 0, &o->global, NULL},     {"--deterministic", 0, NULL, &o->deterministic},
          {"--trust-indices", 0, NULL, &o->trust_indices},
      };
      int k = -1;
      for (int j = 0; j < (int)(sizeof ints / sizeof ints[0]); j++)
        if (strcmp(name, ints[j].name) == 0) k = j;
      if (k < 0) {
        fprintf(stderr, "flashattn-bench: unknown option '%s' (see --help)\n", name);
        return -1;
      }
      if (parse_long(val, &n) || n < ints[k].min || n > INT32_MAX) {
        fprintf(stderr, "flashattn-bench: %s: '%s' is not an integer >= %ld\n", name, val, ints[k].min);
        return -1;
      }
      if (ints[k].dst_l)
        *ints[k].dst_l = n;
      else
        *ints[k].dst_i = (int)n;
    }
    if (rc) return -1;
  }
  if ((o->batch > 0) != (o->heads > 0)) {
    fprintf(stderr, "flashattn-bench: give --batch and --heads together (or neither, to use "
                    "--total-tokens and --model-dim)\n");
    return -1;
  }
  return 0;
}

/* ---- host data ---- */

/* splitmix64: a small, fixed-seed generator so runs are repeatable. */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Standard normal by Box-Muller, like torch.randn in the anchor. */
static float rng_normal(uint64_t *s) {
  double u1 = ((rng_next(s) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] so log() is finite */
  double u2 = (rng_next(s) >> 11) * 0x1.0p-53;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* A pool of 2^24 standard normals drawn once: tensors are windows into it at seed-dependent offsets, so a
 * grid of large shapes does not spend seconds per case in Box-Muller (2^24 floats cover 64 MiB of a
 * tensor before a value repeats; the inputs stay random normal numbers, never zeros). */
#define POOL_BITS 24
static float *normal_pool(void) {
  static float *pool;
  if (!pool && (pool = malloc(sizeof(float) << POOL_BITS)) != NULL) {
    uint64_t s = 0x5eedu;
    for (size_t i = 0; i < ((size_t)1 << POOL_BITS); i++) pool[i] = rng_normal(&s);
  }
  return pool;
}

/* n random normal elements in dtype dt, malloc'd. */
static void *random_tensor(size_t n, fa_dtype dt, uint64_t seed) {
  size_t es = fa_dtype_size(dt);
  const float *pool = normal_pool();
  unsigned char *p = pool ? malloc(n * es) : NULL;
  if (!p) return NULL;
  const size_t mask = ((size_t)1 << POOL_BITS) - 1, start = (size_t)(seed * 0x9e3779b97f4a7c15ull >> 40);
  for (size_t i = 0; i < n; i++) {
    float f = pool[(start + i) & mask];
    if (dt == FA_F32) {
      memcpy(p + 4 * i, &f, 4);
    } else {
      uint16_t h = dt == FA_F16 ? ref_f32_to_f16(f) : ref_f32_to_bf16(f);
      memcpy(p + 2 * i, &h, 2);
    }
  }
  return p;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The largest "<number> bytes" in an error sentence (e.g. "workspace: 34764488704 bytes is above ..."), or 0. */
static size_t bytes_in_message(const char *msg) {
  size_t best = 0;
  for (const char *p = strstr(msg, " bytes"); p; p = strstr(p + 1, " bytes")) {
    const char *q = p;
    while (q > msg && q[-1] >= '0' && q[-1] <= '9')
      q--;
    if (q == p) continue;
    unsigned long long v = strtoull(q, NULL, 10);
    if (v > best && v <= SIZE_MAX) best = (size_t)v;
  }
  return best;
}

/* ---- one case ---- */

typedef struct shape {
  fa_dtype dtype;
  long batch, heads_q, heads_kv, seqlen, head_dim;
  int causal;
  mask_spec mask;
  double dropout;
  long window; /* window_left, -1: none */
  int varlen;
} shape;

/* The nb x nb block mask of a case (malloc'd), or NULL when out of memory. */
static uint8_t *build_mask(const options *o, const mask_spec *m, long nb) {
  uint8_t *mask = malloc((size_t)nb * (size_t)nb);
  if (!mask) return NULL;
  if (m->kind == MASK_BUTTERFLY) {
    fa_block_mask_butterfly(mask, nb, nb);
  } else if (m->kind == MASK_LOCAL_GLOBAL) {
    fa_block_mask_local_global(mask, nb, nb, o->window, o->global);
  } else {
    uint64_t s = 0xb10c5eedu;
    for (long i = 0; i < nb * nb; i++) mask[i] = (rng_next(&s) >> 11) * 0x1.0p-53 < m->density;
  }
  return mask;
}

/* Fraction of the S x S scores that a block mask (NULL: none) and the causal mask leave visible. */
static double visible_fraction(const uint8_t *mask, long nb, long bs, long S, int causal) {
  double visible = 0;
  for (long bi = 0; bi < nb; bi++)
    for (long bj = 0; bj < nb; bj++) {
      if (mask && !mask[bi * nb + bj]) continue;
      const long r0 = bi * bs, r1 = r0 + bs < S ? r0 + bs : S, c0 = bj * bs, c1 = c0 + bs < S ? c0 + bs : S;
      if (!causal) {
        visible += (double)(r1 - r0) * (double)(c1 - c0);
        continue;
      }
      for (long i = r0; i < r1; i++) { /* keys j <= i */
        long n = (i + 1 < c1 ? i + 1 : c1) - c0;
        if (n > 0) visible += (double)n;
      }
    }
  return visible / ((double)S * (double)S);
}

/* Keys row i of a sequence of n (queries = keys) sees under causal and a window of w keys to the left (-1:
 * none; not causal: w to each side). */
static long row_keys(long i, long n, int causal, long w) {
  long lo = w >= 0 && i - w > 0 ? i - w : 0, hi = causal ? i + 1 : w >= 0 && i + w + 1 < n ? i + w + 1 : n;
  return hi > lo ? hi - lo : 0;
}

/* The packed sequences' lengths of a varlen case (each seqlen, or random in seqlen / 8 .. seqlen), and the
 * fraction of the B x S x S scores they leave visible, causal and window included. */
static double varlen_lengths(const options *o, const shape *sh, int32_t *cu) {
  uint64_t s = 0x1e9e7u + (uint64_t)sh->seqlen;
  double visible = 0;
  cu[0] = 0;
  for (long b = 0; b < sh->batch; b++) {
    long n = sh->seqlen;
    if (o->varlen_random) n = sh->seqlen / 8 + (long)((rng_next(&s) >> 11) * 0x1.0p-53 * (double)(sh->seqlen - sh->seqlen / 8 + 1));
    if (n > sh->seqlen) n = sh->seqlen;
    cu[b + 1] = cu[b] + (int32_t)n;
    for (long i = 0; i < n; i++) visible += (double)row_keys(i, n, sh->causal, sh->window);
  }
  return visible / ((double)sh->batch * (double)sh->seqlen * (double)sh->seqlen);
}

/* Host inputs of one shape, shared by its cases: q, k, v and dout. */
typedef struct host_inputs {
  void *q, *kv[2], *dout;
  size_t q_bytes, kv_bytes;
} host_inputs;

typedef struct case_result {
  fa_status status;
  double ms;
  size_t peak_bytes;
  double density; /* fraction of the scores visible */
} case_result;

enum { T_Q, T_K, T_V, T_O, T_LSE, T_DOUT, T_DQ, T_DK, T_DV, T_COUNT };

/* Run one (shape, algo, mode) case in a fresh context. Returns the status of the first failing call. */
static case_result run_case(const options *o, const shape *sh, const host_inputs *in, fa_algo algo, mode md, char *why,
                            size_t why_len) {
  case_result r = {FA_SUCCESS, NAN, 0, sh->causal ? 0.5 : 1.0};
  fa_context_options copt;
  fa_context *ctx = NULL;
  fa_buffer *buf[T_COUNT] = {0}, *mask_buf = NULL, *cu_buf = NULL;
  fa_tensor t[T_COUNT], mask_t, cu_t;
  int32_t *cu = NULL;
  uint8_t *mask = NULL;
  size_t attempted = 0;
  int buffers_failed = 0;
  double *times = NULL;
  why[0] = 0;

  fa_context_options_default(&copt);
  copt.backend = o->backend;
  copt.device = o->device;
  r.status = fa_context_create(&copt, &ctx);
  if (r.status != FA_SUCCESS) {
    snprintf(why, why_len, "fa_context_create: %s", fa_last_create_error());
    return r;
  }
  fa_context_reset_peak_memory(ctx);

  const int backward = md != MODE_FWD;
  const long B = sh->batch, S = sh->seqlen, Hq = sh->heads_q, Hkv = sh->heads_kv, D = sh->head_dim;
  for (int i = 0; i < T_COUNT; i++) {
    int is_kv = i == T_K || i == T_V || i == T_DK || i == T_DV;
    if (!backward && i >= T_DOUT) break;
    fa_dtype dt = i == T_LSE ? FA_F32 : sh->dtype;
    size_t bytes = i == T_LSE ? (size_t)(B * Hq * S) * 4 : is_kv ? in->kv_bytes : in->q_bytes;
    attempted += bytes;
    r.status = fa_buffer_create(ctx, bytes, &buf[i]);
    if (r.status != FA_SUCCESS) {
      snprintf(why, why_len, "fa_buffer_create(%zu bytes): %s", bytes, fa_context_last_error(ctx));
      buffers_failed = 1; /* `attempted` has this buffer already */
      goto done;
    }
    /* Varlen: the same B x S rows as one token axis of batch 1. */
    const long tb = sh->varlen ? 1 : B, ts = sh->varlen ? B * S : S;
    if (i == T_LSE)
      fa_tensor_packed(&t[i], buf[i], 0, FA_F32, tb, Hq, ts, 1);
    else
      fa_tensor_packed(&t[i], buf[i], 0, dt, tb, ts, is_kv ? Hkv : Hq, D);
    const void *src = i == T_Q ? in->q : i == T_K ? in->kv[0] : i == T_V ? in->kv[1] : i == T_DOUT ? in->dout : NULL;
    if (src) {
      r.status = fa_buffer_write(ctx, buf[i], 0, src, bytes);
      if (r.status != FA_SUCCESS) {
        snprintf(why, why_len, "fa_buffer_write: %s", fa_context_last_error(ctx));
        goto done;
      }
    }
  }

  fa_attention_desc desc;
  fa_attention_desc_init(&desc); /* struct_size set: a zeroed one (size 0) would leave window and varlen unread */
  desc.algo = algo;
  desc.causal = sh->causal;
  desc.deterministic = o->deterministic;
  desc.dropout_p = (float)sh->dropout;
  desc.dropout_seed = 0x5eedu;
  if (sh->window >= 0) {
    desc.window = 1;
    desc.window_left = sh->window;
    desc.window_right = sh->causal ? 0 : sh->window;
    double visible = 0; /* of one padded sequence */
    for (long i = 0; i < S; i++) visible += (double)row_keys(i, S, sh->causal, sh->window);
    r.density = visible / ((double)S * (double)S);
  }
  if (sh->varlen) {
    cu = malloc(sizeof *cu * (size_t)(B + 1));
    if (!cu) {
      r.status = FA_ERROR_OUT_OF_MEMORY;
      snprintf(why, why_len, "host memory for %ld offsets", B + 1);
      goto done;
    }
    r.density = varlen_lengths(o, sh, cu);
    r.status = fa_buffer_create(ctx, sizeof *cu * (size_t)(B + 1), &cu_buf);
    if (r.status == FA_SUCCESS) r.status = fa_buffer_write(ctx, cu_buf, 0, cu, sizeof *cu * (size_t)(B + 1));
    if (r.status != FA_SUCCESS) {
      snprintf(why, why_len, "cu_seqlens buffer: %s", fa_context_last_error(ctx));
      goto done;
    }
    fa_tensor_packed(&cu_t, cu_buf, 0, FA_I32, B + 1, 1, 1, 1);
    desc.cu_seqlens_q = desc.cu_seqlens_k = &cu_t;
    if (o->trust_indices) {
      desc.trust_indices = 1;
      for (long b = 0; b < B; b++)
        if (cu[b + 1] - cu[b] > desc.max_seqlen_q) desc.max_seqlen_q = desc.max_seqlen_k = cu[b + 1] - cu[b];
    }
  }
  if (sh->mask.kind != MASK_DENSE) {
    const long nb = (S + o->block_size - 1) / o->block_size;
    mask = build_mask(o, &sh->mask, nb);
    if (!mask) {
      r.status = FA_ERROR_OUT_OF_MEMORY;
      snprintf(why, why_len, "host memory for a %ld x %ld block mask", nb, nb);
      goto done;
    }
    r.density = visible_fraction(mask, nb, o->block_size, S, sh->causal);
    r.status = fa_buffer_create(ctx, (size_t)(nb * nb), &mask_buf);
    if (r.status == FA_SUCCESS) r.status = fa_buffer_write(ctx, mask_buf, 0, mask, (size_t)(nb * nb));
    if (r.status != FA_SUCCESS) {
      snprintf(why, why_len, "block mask buffer: %s", fa_context_last_error(ctx));
      goto done;
    }
    fa_tensor_packed(&mask_t, mask_buf, 0, FA_U8, 1, 1, nb, nb);
    desc.block_mask = &mask_t;
    desc.block_q = desc.block_k = o->block_size;
  }

  /* The backward needs the forward's o and lse: compute them once, untimed. */
  if (md == MODE_BWD) {
    r.status = fa_forward(ctx, &desc, &t[T_Q], &t[T_K], &t[T_V], &t[T_O], &t[T_LSE]);
    if (r.status == FA_SUCCESS) r.status = fa_synchronize(ctx);
    if (r.status != FA_SUCCESS) {
      snprintf(why, why_len, "fa_forward: %s", fa_context_last_error(ctx));
      goto done;
    }
  }

  times = malloc(sizeof *times * (size_t)o->iters);
  if (!times) {
    r.status = FA_ERROR_OUT_OF_MEMORY;
    snprintf(why, why_len, "host memory for %d timings", o->iters);
    goto done;
  }
  for (int it = 0; it < o->warmup + o->iters; it++) {
    /* Device events around the call(s); the host clock only where the queue cannot time. */
    fa_event *e0 = NULL, *e1 = NULL;
    if (fa_event_record(ctx, &e0) != FA_SUCCESS) e0 = NULL;
    double t0 = now_ms();
    const char *call = "fa_forward";
    if (md != MODE_BWD) r.status = fa_forward(ctx, &desc, &t[T_Q], &t[T_K], &t[T_V], &t[T_O], &t[T_LSE]);
    if (r.status == FA_SUCCESS && md != MODE_FWD) {
      call = "fa_backward";
      r.status = fa_backward(ctx, &desc, &t[T_Q], &t[T_K], &t[T_V], &t[T_O], &t[T_LSE], &t[T_DOUT], &t[T_DQ], &t[T_DK],
                             &t[T_DV]);
    }
    if (r.status == FA_SUCCESS && e0 && fa_event_record(ctx, &e1) != FA_SUCCESS) e1 = NULL;
    if (r.status == FA_SUCCESS) {
      call = "fa_synchronize";
      r.status = fa_synchronize(ctx);
    }
    double host_ms = now_ms() - t0, dev_ms = -1;
    if (r.status == FA_SUCCESS && e1 && fa_event_elapsed_ms(ctx, e0, e1, &dev_ms) != FA_SUCCESS) dev_ms = -1;
    fa_event_destroy(e0);
    fa_event_destroy(e1);
    if (r.status != FA_SUCCESS) {
      snprintf(why, why_len, "%s: %s", call, fa_context_last_error(ctx));
      goto done;
    }
    if (it >= o->warmup) times[it - o->warmup] = dev_ms >= 0 ? dev_ms : host_ms;
  }
  qsort(times, (size_t)o->iters, sizeof *times, cmp_double);
  r.ms = times[o->iters / 2]; /* the same element as the anchor's median */

done:;
  size_t cur = 0, peak = 0;
  fa_context_memory(ctx, &cur, &peak);
  r.peak_bytes = peak;
  if (r.status == FA_ERROR_OUT_OF_MEMORY && !buffers_failed) {
    /* What the case tried to hold: the buffers it asked for, plus the request the library refused, which
     * fa_context_memory() cannot count since it never existed; the library's sentence names its size. */
    size_t refused = bytes_in_message(why);
    if (attempted < cur) attempted = cur;
    if (refused <= SIZE_MAX - attempted) attempted += refused;
  }
  if (r.status != FA_SUCCESS && attempted > r.peak_bytes) r.peak_bytes = attempted;
  free(times);
  free(mask);
  free(cu);
  fa_buffer_destroy(mask_buf);
  fa_buffer_destroy(cu_buf);
  for (int i = 0; i < T_COUNT; i++)
    fa_buffer_destroy(buf[i]);
  fa_context_destroy(ctx);
  return r;
}

/* ---- plot ---- */

static int list_has_many(const int_list *l) { return l->n > 1; }

/* A series is every field but seqlen (and what seqlen drags along: batch under --total-tokens). */
static int same_series(const result *a, const result *b) {
  return a->algo == b->algo && a->mode == b->mode && a->dtype == b->dtype && a->head_dim == b->head_dim &&
         a->causal == b->causal && a->mask.kind == b->mask.kind && a->mask.density == b->mask.density &&
         a->dropout == b->dropout && a->window == b->window && a->varlen == b->varlen;
}

/* s as a gnuplot double-quoted string: backslash and double quote escaped (device names are free text),
 * newlines as \n. */
static void gp_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '\n') {
      fputs("\\n", f);
      continue;
    }
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* "v1, v2" of a list, by name (names != NULL) or number, into buf. */
static void list_text(const int_list *l, const char *const *names, char *buf, size_t len) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; i < l->n && n < len; i++)
    n += (size_t)(names ? snprintf(buf + n, len - n, "%s%s", i ? ", " : "", names[l->v[i]])
                        : snprintf(buf + n, len - n, "%s%ld", i ? ", " : "", l->v[i]));
}

/* The figure's title: device, dtypes, head dims, causal, and how batch and heads were chosen. */
static void plot_title(const options *o, const char *backend, const char *device, char *buf, size_t len) {
  char dtypes[128], dims[128], causal[32], shape_text[160];
  list_text(&o->dtypes, dtype_names, dtypes, sizeof dtypes);
  list_text(&o->head_dims, NULL, dims, sizeof dims);
  snprintf(causal, sizeof causal, "%s", o->causal.n > 1 ? "causal and not" : o->causal.v[0] ? "causal" : "not causal");
  if (o->batch)
    snprintf(shape_text, sizeof shape_text, "batch %ld, heads %ld/%ld (q/kv)", o->batch,
             o->heads ? o->heads : o->model_dim / o->head_dims.v[0], o->heads_kv ? o->heads_kv : o->heads);
  else
    snprintf(shape_text, sizeof shape_text, "batch x seqlen = %ld tokens, heads x D = %ld", o->total_tokens,
             o->model_dim);
  snprintf(buf, len, "flashattn-bench: %s (%s)\n%s, D = %s, %s; %s; median of %d runs", device, backend, dtypes, dims,
           causal, shape_text, o->iters);
}

/* Data and a gnuplot script in a temporary folder: runtime and peak memory against seqlen, one line per
 * series, like Figure 3 of the FlashAttention paper, with one legend to the right of both panels. Failed
 * cases are left out. Returns 0 when the PNG was written. */
static int plot(const options *o, const char *backend, const char *device, const result *res, int nres) {
  char dir[] = "/tmp/flashattn-bench-XXXXXX", data[64], script[64];
  int rc = -1, *series = NULL, nseries = 0;
  FILE *fd = NULL, *fs = NULL;
  if (system("gnuplot --version >/dev/null 2>&1") != 0) {
    fprintf(stderr, "flashattn-bench: --plot: gnuplot is not installed (or not on PATH); no plot written\n");
    return -1;
  }
  /* the first case of each series that has at least one timing */
  series = malloc(sizeof *series * (size_t)(nres ? nres : 1));
  if (!series) return -1;
  for (int i = 0; i < nres; i++) {
    int known = 0;
    for (int j = 0; j < nseries && !known; j++)
      known = same_series(&res[series[j]], &res[i]);
    if (!known && !isnan(res[i].ms)) series[nseries++] = i;
  }
  if (nseries == 0) {
    fprintf(stderr, "flashattn-bench: --plot: no case ran; no plot written\n");
    free(series);
    return -1;
  }
  if (!mkdtemp(dir)) {
    fprintf(stderr, "flashattn-bench: --plot: mkdtemp %s: %s\n", dir, strerror(errno));
    free(series);
    return -1;
  }
  snprintf(data, sizeof data, "%s/data.txt", dir);
  snprintf(script, sizeof script, "%s/plot.gp", dir);
  fd = fopen(data, "w");
  fs = fopen(script, "w");
  if (!fd || !fs) {
    fprintf(stderr, "flashattn-bench: --plot: cannot write in %s: %s\n", dir, strerror(errno));
    goto out;
  }

  char title[512];
  plot_title(o, backend, device, title, sizeof title);
  /* Panels and legend placed in screen coordinates, so that nothing depends on gnuplot's automatic margins:
   * runtime 0.06-0.38, memory 0.46-0.78, the legend from 0.80; the title above 0.84, tick labels below 0.16. */
  fprintf(fs,
          "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 1600,620 font ',11' } "
          "else { set terminal png size 1600,620 }\n"
          "set termoption noenhanced\n"
          "set output '%s'\n"
          "set datafile missing '?'\n"
          "set multiplot title ",
          o->plot);
  gp_string(fs, title);
  fprintf(fs, " font ',13'\n"
              "set logscale x 2\nset logscale y 10\nset grid\n"
              "set xlabel 'sequence length'\nset tmargin at screen 0.84\nset bmargin at screen 0.14\n");
  /* colours that stay apart on white, then cycle */
  static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                        "#9467bd", "#8c564b", "#e377c2", "#17becf"};
  for (int i = 0; i < 8; i++)
    fprintf(fs, "set linetype %d lc rgb '%s' lw 2 pt %d\n", i + 1, colours[i], i + 1);
  fprintf(fs, "set linetype cycle 8\n");
  for (int pass = 0; pass < 2; pass++) {
    fprintf(fs, "set lmargin at screen %s\nset rmargin at screen %s\n%s\n", pass ? "0.46" : "0.06",
            pass ? "0.78" : "0.38", pass ? "set key at screen 0.80, screen 0.84 left top Left reverse box opaque"
                                          : "unset key");
    fprintf(fs, "set ylabel '%s'\nset title '%s'\nplot ", pass ? "peak device memory (MiB)" : "runtime (ms)",
            pass ? "memory footprint" : "runtime");
    for (int j = 0; j < nseries; j++) {
      const result *a = &res[series[j]];
      char title[160];
      int n = snprintf(title, sizeof title, "%s %s", algo_names[a->algo], mode_names[a->mode]);
      if (list_has_many(&o->dtypes)) n += snprintf(title + n, sizeof title - (size_t)n, " %s", dtype_names[a->dtype]);
      if (list_has_many(&o->head_dims)) n += snprintf(title + n, sizeof title - (size_t)n, " d=%d", a->head_dim);
      if (list_has_many(&o->causal)) n += snprintf(title + n, sizeof title - (size_t)n, "%s", a->causal ? " causal" : "");
      if (a->mask.kind == MASK_RANDOM)
        n += snprintf(title + n, sizeof title - (size_t)n, " density %g", a->mask.density);
      else if (a->mask.kind != MASK_DENSE)
        n += snprintf(title + n, sizeof title - (size_t)n, " %s", mask_names[a->mask.kind]);
      if (a->dropout > 0) snprintf(title + n, sizeof title - (size_t)n, " dropout %g", a->dropout);
      fprintf(fs, "%s'%s' index %d using 1:%d with linespoints linetype %d title '%s'", j ? ", \\\n     " : "", data, j,
              pass ? 3 : 2, j + 1, title);
    }
    fprintf(fs, "\n");
  }
  fprintf(fs, "unset multiplot\n");

  /* one data block per series, separated by two blank lines (gnuplot's 'index') */
  for (int j = 0; j < nseries; j++) {
    const result *a = &res[series[j]];
    fprintf(fd, "# %s %s %s d=%d causal=%d\n# seqlen ms peak_MiB\n", algo_names[a->algo], mode_names[a->mode],
            dtype_names[a->dtype], a->head_dim, a->causal);
    for (int i = 0; i < nres; i++) {
      const result *b = &res[i];
      if (!same_series(a, b)) continue;
      /* a failed case has no runtime, and what it tried to hold is not what it used: a gap in both lines */
      if (isnan(b->ms))
        fprintf(fd, "%ld ? ?\n", b->seqlen);
      else
        fprintf(fd, "%ld %.6g %.6g\n", b->seqlen, b->ms, b->peak_bytes / 1048576.0);
    }
    fprintf(fd, "\n\n");
  }
  int werr = fclose(fd) != 0;
  werr |= fclose(fs) != 0;
  fd = fs = NULL;
  if (werr) {
    fprintf(stderr, "flashattn-bench: --plot: writing %s: %s\n", dir, strerror(errno));
    goto out;
  }

  char cmd[256];
  snprintf(cmd, sizeof cmd, "gnuplot '%s'", script);
  if (system(cmd) != 0) {
    fprintf(stderr, "flashattn-bench: --plot: '%s' failed; no plot written\n", cmd);
    goto out;
  }
  fprintf(stderr, "flashattn-bench: wrote %s\n", o->plot);
  rc = 0;
out:
  if (fd) fclose(fd);
  if (fs) fclose(fs);
  free(series);
  remove(data);
  remove(script);
  rmdir(dir);
  return rc;
}

/* ---- progress ---- */

/* The shape of one grid point: batch and heads fixed, or derived from --total-tokens and --model-dim. */
static shape grid_shape(const options *o, int di, int hi, int ci, int si) {
  shape sh;
  memset(&sh, 0, sizeof sh);
  sh.dtype = (fa_dtype)o->dtypes.v[di];
  sh.head_dim = o->head_dims.v[hi];
  sh.causal = (int)o->causal.v[ci];
  sh.seqlen = o->seqlens.v[si];
  sh.batch = o->batch ? o->batch : (o->total_tokens / sh.seqlen > 0 ? o->total_tokens / sh.seqlen : 1);
  sh.heads_q = o->heads ? o->heads : (o->model_dim / sh.head_dim > 0 ? o->model_dim / sh.head_dim : 1);
  sh.heads_kv = o->heads_kv ? o->heads_kv : sh.heads_q;
  return sh;
}

/* What a case costs, for the time estimate: its FLOPs before the run measures the mask's density (a causal
 * mask keeps about half, a random one its density, a pattern is counted whole). */
static double case_cost(const shape *sh, mode md) {
  double keep = sh->mask.kind == MASK_RANDOM ? sh->mask.density : 1.0;
  if (sh->causal) keep *= 0.5;
  return (double)sh->batch * sh->heads_q * (double)sh->seqlen * sh->seqlen * sh->head_dim * keep * mode_flops[md];
}

/* A progress line on stderr: on a terminal, rewritten before every case; otherwise (a log, CI) one line
 * every PROGRESS_LOG_S seconds. After the first case it carries an estimate of the time left, from the time
 * so far and the cost of the cases done against the cost of those left. */
#define PROGRESS_LOG_S 30.0

typedef struct progress {
  int tty;
  long total;
  double cost_total, cost_done, start_ms, last_log_ms;
} progress;

static void format_duration(double s, char *buf, size_t len) {
  if (s < 60) snprintf(buf, len, "%.0fs", s);
  else if (s < 3600) snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void progress_show(progress *pg, long done, const char *label) {
  const double now = now_ms(), elapsed = (now - pg->start_ms) / 1e3;
  if (!pg->tty && now - pg->last_log_ms < PROGRESS_LOG_S * 1e3) return;
  pg->last_log_ms = now;
  char spent[32], left[64] = "";
  format_duration(elapsed, spent, sizeof spent);
  if (pg->cost_done > 0) {
    char rest[32];
    format_duration(elapsed * (pg->cost_total - pg->cost_done) / pg->cost_done, rest, sizeof rest);
    snprintf(left, sizeof left, ", about %s left", rest);
  }
  if (pg->tty)
    fprintf(stderr, "\r\033[K[%ld/%ld %s%s] %s ...", done, pg->total, spent, left, label);
  else
    fprintf(stderr, "flashattn-bench: case %ld of %ld after %s%s: %s\n", done, pg->total, spent, left, label);
}

/* Before a line of its own on a terminal: clear the progress line. */
static void progress_clear(const progress *pg) {
  if (pg->tty) fprintf(stderr, "\r\033[K");
}

/* ---- main ---- */

int main(int argc, char **argv) {
  options o;
  int prc = parse_options(argc, argv, &o);
  if (prc) return prc > 0 ? 0 : 2;
  if (o.plot && strchr(o.plot, '\'')) {
    fprintf(stderr, "flashattn-bench: --plot: the file name must not contain a quote\n");
    return 2;
  }

  /* The block masks each shape runs with: the densities (1 is dense), then the patterns. */
  mask_spec masks[2 * MAX_LIST];
  int nmasks = 0;
  for (int i = 0; i < o.densities.n; i++)
    masks[nmasks++] = (mask_spec){o.densities.v[i] >= 1 ? MASK_DENSE : MASK_RANDOM, o.densities.v[i]};
  for (int i = 0; i < o.patterns.n; i++) masks[nmasks++] = (mask_spec){(mask_kind)o.patterns.v[i], 0};
  /* The variants of a shape besides algo and mode: mask x dropout x sliding window x varlen. */
  const int nvar = nmasks * o.dropouts.n * o.windows.n * o.varlens.n;
  const long total = (long)o.dtypes.n * o.head_dims.n * o.causal.n * o.seqlens.n * o.algos.n * o.modes.n * nvar;
  result *res = calloc((size_t)total, sizeof *res);
  if (!res) {
    fprintf(stderr, "flashattn-bench: out of host memory\n");
    return 1;
  }
  int nres = 0, failed = 0;
  char backend[32] = "", device[256] = "";

  /* Name the backend once, from a context made like every case's. */
  {
    fa_context_options copt;
    fa_context *ctx;
    fa_device_info info;
    fa_device_info_init(&info);
    fa_context_options_default(&copt);
    copt.backend = o.backend;
    copt.device = o.device;
    fa_status s = fa_context_create(&copt, &ctx);
    if (s != FA_SUCCESS) {
      fprintf(stderr, "flashattn-bench: fa_context_create: %s: %s\n", fa_status_string(s), fa_last_create_error());
      free(res);
      return 1;
    }
    if (fa_context_info(ctx, &info) == FA_SUCCESS) {
      snprintf(backend, sizeof backend, "%s", fa_backend_name(info.backend));
      snprintf(device, sizeof device, "%s", info.name);
      if (info.events_host_clock)
        fprintf(stderr, "flashattn-bench: this queue has no device timer: times are the host clock's\n");
      fprintf(stderr, "flashattn-bench: %s device %d: %s (%s)\n", backend, info.device_index, info.name, info.platform);
    }
    fa_context_destroy(ctx);
  }

  printf("backend,algo,dtype,batch,heads_q,heads_kv,seqlen_q,seqlen_k,head_dim,causal,mode,ms,tflops,peak_bytes,"
         "mask,density,dropout,window,varlen\n");
  fflush(stdout);

  progress pg = {isatty(2), total, 0, 0, now_ms(), -1e300};
  for (int di = 0; di < o.dtypes.n; di++)
    for (int hi = 0; hi < o.head_dims.n; hi++)
      for (int ci = 0; ci < o.causal.n; ci++)
        for (int si = 0; si < o.seqlens.n; si++)
          for (int ki = 0; ki < nmasks; ki++)
            for (int mi = 0; mi < o.modes.n; mi++) {
              shape sh = grid_shape(&o, di, hi, ci, si);
              sh.mask = masks[ki];
              if (sh.heads_q % sh.heads_kv) continue; /* skipped below */
              pg.cost_total += case_cost(&sh, (mode)o.modes.v[mi]) * o.algos.n * o.dropouts.n * o.windows.n * o.varlens.n;
            }

  long done_cases = 0;
  for (int di = 0; di < o.dtypes.n; di++)
    for (int hi = 0; hi < o.head_dims.n; hi++)
      for (int ci = 0; ci < o.causal.n; ci++)
        for (int si = 0; si < o.seqlens.n; si++) {
          shape sh = grid_shape(&o, di, hi, ci, si);
          const long ncases = (long)o.algos.n * o.modes.n * nvar;
          if (sh.heads_q % sh.heads_kv) {
            progress_clear(&pg);
            fprintf(stderr, "flashattn-bench: skipping d=%ld: %ld query heads are not a multiple of %ld kv heads\n",
                    sh.head_dim, sh.heads_q, sh.heads_kv);
            done_cases += ncases;
            failed = 1;
            continue;
          }

          host_inputs in;
          size_t es = fa_dtype_size(sh.dtype);
          size_t nq = (size_t)(sh.batch * sh.seqlen * sh.heads_q * sh.head_dim);
          size_t nkv = (size_t)(sh.batch * sh.seqlen * sh.heads_kv * sh.head_dim);
          in.q_bytes = nq * es;
          in.kv_bytes = nkv * es;
          uint64_t seed = 0x5eed0000u + (uint64_t)si * 977 + (uint64_t)hi * 31 + (uint64_t)di;
          in.q = random_tensor(nq, sh.dtype, seed);
          in.kv[0] = random_tensor(nkv, sh.dtype, seed + 1);
          in.kv[1] = random_tensor(nkv, sh.dtype, seed + 2);
          in.dout = random_tensor(nq, sh.dtype, seed + 3);
          if (!in.q || !in.kv[0] || !in.kv[1] || !in.dout) {
            fprintf(stderr, "flashattn-bench: out of host memory for %zu + 2 x %zu elements\n", nq, nkv);
            free(in.q), free(in.kv[0]), free(in.kv[1]), free(in.dout);
            free(res);
            return 1;
          }

          for (int ki = 0; ki < nvar; ki++)
          for (int ai = 0; ai < o.algos.n; ai++)
            for (int mi = 0; mi < o.modes.n; mi++) {
              fa_algo algo = (fa_algo)o.algos.v[ai];
              mode md = (mode)o.modes.v[mi];
              int kx = ki;
              sh.varlen = (int)o.varlens.v[kx % o.varlens.n], kx /= o.varlens.n;
              sh.window = o.windows.v[kx % o.windows.n], kx /= o.windows.n;
              sh.dropout = o.dropouts.v[kx % o.dropouts.n], kx /= o.dropouts.n;
              sh.mask = masks[kx];
              char label[240], why[1200];
              snprintf(label, sizeof label,
                       "%s %s %s b=%ld h=%ld/%ld s=%ld d=%ld causal=%d mask=%s/%g dropout=%g window=%ld varlen=%d",
                       algo_names[algo], mode_names[md], dtype_names[sh.dtype], sh.batch, sh.heads_q, sh.heads_kv,
                       sh.seqlen, sh.head_dim, sh.causal, mask_names[sh.mask.kind], sh.mask.density, sh.dropout,
                       sh.window, sh.varlen);
              done_cases++;
              progress_show(&pg, done_cases, label);

              case_result r = run_case(&o, &sh, &in, algo, md, why, sizeof why);
              double flops = 4.0 * sh.batch * sh.heads_q * (double)sh.seqlen * sh.seqlen * sh.head_dim * r.density *
                             mode_flops[md];
              double tflops = r.status == FA_SUCCESS ? flops / r.ms / 1e9 : NAN;
              pg.cost_done += case_cost(&sh, md);
              if (r.status != FA_SUCCESS) {
                progress_clear(&pg);
                fprintf(stderr, "flashattn-bench: %s: %s: %s\n", label, fa_status_string(r.status), why);
                if (r.status != FA_ERROR_OUT_OF_MEMORY && r.status != FA_ERROR_UNSUPPORTED) failed = 1;
              }
              printf("%s,%s,%s,%ld,%ld,%ld,%ld,%ld,%ld,%d,%s,", backend, algo_names[algo], dtype_names[sh.dtype],
                     sh.batch, sh.heads_q, sh.heads_kv, sh.seqlen, sh.seqlen, sh.head_dim, sh.causal, mode_names[md]);
              if (r.status == FA_SUCCESS)
                printf("%.4f,%.4g,%zu,", r.ms, tflops, r.peak_bytes);
              else
                printf("nan,nan,%zu,", r.peak_bytes);
              printf("%s,%.4g,%g,%ld,%s\n", sh.mask.kind == MASK_RANDOM ? "random" : mask_names[sh.mask.kind], r.density,
                     sh.dropout, sh.window, sh.varlen ? (o.varlen_random ? "random" : "fixed") : "0");
              fflush(stdout);

              result *x = &res[nres++];
              x->algo = algo;
              x->mode = md;
              x->dtype = sh.dtype;
              x->head_dim = (int)sh.head_dim;
              x->causal = sh.causal;
              x->mask = sh.mask;
              x->dropout = sh.dropout;
              x->window = sh.window;
              x->varlen = sh.varlen;
              x->batch = sh.batch;
              x->heads_q = sh.heads_q;
              x->heads_kv = sh.heads_kv;
              x->seqlen = sh.seqlen;
              x->ms = r.status == FA_SUCCESS ? r.ms : NAN;
              x->tflops = tflops;
              x->peak_bytes = r.peak_bytes;
            }
          free(in.q), free(in.kv[0]), free(in.kv[1]), free(in.dout);
        }
  progress_clear(&pg);
  char spent[32];
  format_duration((now_ms() - pg.start_ms) / 1e3, spent, sizeof spent);
  fprintf(stderr, "flashattn-bench: %ld cases in %s\n", total, spent);

  if (o.plot && plot(&o, backend, device, res, nres) != 0) failed = 1;
  free(res);
  return failed ? 1 : 0;
}
