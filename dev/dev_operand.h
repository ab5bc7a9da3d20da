/* Device operands of dev/std_check.c and cl_bwd_bench.c: a [B, S, H, D] tensor in one of three layouts,
 * its float64 values, host bytes and device buffer. */
#ifndef FA_DEV_OPERAND_H
#define FA_DEV_OPERAND_H

#include <math.h>
#include <string.h>

#include "dev_util.h"

typedef struct shape {
  int b, sq, sk, hq, hkv, d, causal;
  fa_dtype dt;
  int layout; /* 0 packed BSHD, 1 BHSD-ordered strides, 2 padded rows and an offset */
  float scale;
} shape;

/* Strides (elements) of a [B, S, H, D] tensor in a layout, its element offset and the elements it spans. */
static inline void layout_of(int layout, int b, int s, int h, int d, int64_t st[4], size_t *off, size_t *span) {
  if (layout == 1) {
    st[3] = 1, st[1] = d, st[2] = (int64_t)s * d, st[0] = (int64_t)h * s * d;
    *off = 0;
  } else if (layout == 2) {
    st[3] = 1, st[2] = d, st[1] = (int64_t)h * d + 24, st[0] = st[1] * s + 8;
    *off = 40;
  } else {
    st[3] = 1, st[2] = d, st[1] = (int64_t)h * d, st[0] = (int64_t)s * h * d;
    *off = 0;
  }
  *span = *off + (size_t)st[0] * b;
}

/* One operand: its packed float64 values, host bytes in the device layout, device buffer and tensor. */
typedef struct operand {
  double *val; /* packed [B, S, H, D] */
  unsigned char *raw;
  size_t span, n;
  fa_buffer *buf;
  fa_tensor t;
} operand;

static inline void make(operand *o, const shape *c, int s, int h, double amp, int fill) {
  int64_t st[4];
  size_t off;
  layout_of(c->layout, c->b, s, h, c->d, st, &off, &o->span);
  size_t es = dsize(c->dt);
  o->n = (size_t)c->b * s * h * c->d;
  o->val = calloc(o->n, sizeof(double));
  o->raw = malloc(o->span * es);
  if (!o->val || !o->raw) {
    fprintf(stderr, "out of host memory\n");
    exit(1);
  }
  memset(o->raw, 0xff, o->span * es); /* NaN in every dtype: unwritten elements show */
  if (fill)
    for (int bb = 0; bb < c->b; bb++)
      for (int ss = 0; ss < s; ss++)
        for (int hh = 0; hh < h; hh++)
          for (int x = 0; x < c->d; x++)
            o->val[(((size_t)bb * s + ss) * h + hh) * c->d + x] =
                put(o->raw, off + bb * st[0] + ss * st[1] + hh * st[2] + x, c->dt, amp * urand());
  CHECK_FA(fa_buffer_create(g_ctx, o->span * es, &o->buf));
  CHECK_FA(fa_buffer_write(g_ctx, o->buf, 0, o->raw, o->span * es));
  o->t = (fa_tensor){o->buf, off * es, c->dt, {c->b, s, h, c->d}, {st[0], st[1], st[2], st[3]}};
}

/* Read back into val (packed); returns how many bytes outside the view changed from 0xff. */
static inline int fetch(operand *o, const shape *c) {
  size_t es = dsize(c->dt);
  CHECK_FA(fa_buffer_read(g_ctx, o->buf, 0, o->raw, o->span * es));
  const int64_t *st = o->t.stride;
  size_t off = o->t.offset / es;
  unsigned char *mark = calloc(o->span, 1);
  int s = (int)o->t.shape[1], h = (int)o->t.shape[2];
  for (int bb = 0; bb < c->b; bb++)
    for (int ss = 0; ss < s; ss++)
      for (int hh = 0; hh < h; hh++)
        for (int x = 0; x < c->d; x++) {
          size_t at = off + bb * st[0] + ss * st[1] + hh * st[2] + x;
          o->val[(((size_t)bb * s + ss) * h + hh) * c->d + x] = get(o->raw, at, c->dt);
          mark[at] = 1;
        }
  int touched = 0;
  for (size_t e = 0; e < o->span; e++)
    if (!mark[e])
      for (size_t x = 0; x < es; x++) touched += o->raw[e * es + x] != 0xff;
  free(mark);
  return touched;
}

static inline void drop(operand *o) {
  fa_buffer_destroy(o->buf);
  free(o->val);
  free(o->raw);
}

static inline double rel_err(const double *a, const double *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (isnan(a[i])) return INFINITY;
  return ref_rel_error(a, b, n);
}

#endif
