/* Argument errors: every bad call returns FA_ERROR_INVALID_ARGUMENT (FA_ERROR_UNSUPPORTED where the call is
 * valid but not served), leaves a sentence naming the argument in fa_context_last_error(), and writes
 * nothing: outputs are poisoned before the call and must read back bit-identical after it.
 *
 * Each case starts from a valid call (B=2, Sq=8, Sk=12, Hq=4, Hkv=2, D=16, float32, packed, in buffers
 * big enough for any head dim tried) and breaks one thing. The block-mask and dropout cases start from the
 * valid call with a [B, Hq, 2, 3] block mask of 4 x 5 blocks; fa_dropout_mask's from a [B, Hq, Sq, Sk] mask;
 * the pattern helpers' (no context) name the argument in fa_last_create_error(). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

enum { B = 2, SQ = 8, SK = 12, HQ = 4, HKV = 2, D = 16 };
#define BUF_BYTES ((size_t)1 << 19) /* room for D = 512 in every tensor */

/* The operands of one call; a case mutates a copy, then the call reads through the pointers. */
typedef struct call {
  fa_context *ctx;
  fa_attention_desc desc;
  fa_tensor q, k, v, o, lse, dout, dq, dk, dv;
  fa_tensor mask; /* the block mask, when a case sets desc.block_mask */
  const fa_attention_desc *descp;
  const fa_tensor *qp, *kp, *vp, *op, *lsep, *doutp, *dqp, *dkp, *dvp;
} call;

/* Buffers of one backend, created on first use: inputs hold zeros, outputs poison. */
typedef struct fixture {
  fa_context *ctx, *other; /* other: a second context, for a buffer that belongs elsewhere */
  fa_buffer *buf[9];       /* q k v o lse dout dq dk dv */
  fa_buffer *mask;         /* a block mask of ones (an input) */
  fa_buffer *foreign;
  unsigned char *poison;
} fixture;

static fixture fixtures[2];

static fixture *get_fixture(int bi) {
  fixture *f = &fixtures[bi];
  if (f->ctx) return f;
  f->ctx = th_context(bi);
  f->poison = malloc(BUF_BYTES);
  ck_assert_ptr_nonnull(f->poison);
  memset(f->poison, 0xff, BUF_BYTES); /* 0xffffffff and 0xffff: NaN in every dtype */
  for (int i = 0; i < 9; i++) {
    ck_assert_int_eq(fa_buffer_create(f->ctx, BUF_BYTES, &f->buf[i]), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_write(f->ctx, f->buf[i], 0, f->poison, BUF_BYTES), FA_SUCCESS);
  }
  unsigned char ones[64];
  memset(ones, 1, sizeof ones);
  ck_assert_int_eq(fa_buffer_create(f->ctx, sizeof ones, &f->mask), FA_SUCCESS);
  ck_assert_int_eq(fa_buffer_write(f->ctx, f->mask, 0, ones, sizeof ones), FA_SUCCESS);
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = th_backend_kind(bi);
  ck_assert_int_eq(fa_context_create(&opt, &f->other), FA_SUCCESS);
  ck_assert_int_eq(fa_buffer_create(f->other, BUF_BYTES, &f->foreign), FA_SUCCESS);
  return f;
}

static void free_fixtures(void) {
  for (int i = 0; i < 2; i++) {
    fixture *f = &fixtures[i];
    for (int j = 0; j < 9; j++) fa_buffer_destroy(f->buf[j]);
    fa_buffer_destroy(f->mask);
    fa_buffer_destroy(f->foreign);
    fa_context_destroy(f->other);
    free(f->poison);
    memset(f, 0, sizeof *f);
  }
}

static void valid_call(fixture *f, call *c) {
  memset(c, 0, sizeof *c);
  c->ctx = f->ctx;
  fa_tensor_packed(&c->q, f->buf[0], 0, FA_F32, B, SQ, HQ, D);
  fa_tensor_packed(&c->k, f->buf[1], 0, FA_F32, B, SK, HKV, D);
  fa_tensor_packed(&c->v, f->buf[2], 0, FA_F32, B, SK, HKV, D);
  fa_tensor_packed(&c->o, f->buf[3], 0, FA_F32, B, SQ, HQ, D);
  fa_tensor_packed(&c->lse, f->buf[4], 0, FA_F32, B, HQ, SQ, 1);
  fa_tensor_packed(&c->dout, f->buf[5], 0, FA_F32, B, SQ, HQ, D);
  fa_tensor_packed(&c->dq, f->buf[6], 0, FA_F32, B, SQ, HQ, D);
  fa_tensor_packed(&c->dk, f->buf[7], 0, FA_F32, B, SK, HKV, D);
  fa_tensor_packed(&c->dv, f->buf[8], 0, FA_F32, B, SK, HKV, D);
  fa_tensor_packed(&c->mask, f->mask, 0, FA_U8, B, HQ, 2, 3);
  c->descp = &c->desc;
  c->qp = &c->q, c->kp = &c->k, c->vp = &c->v, c->op = &c->o, c->lsep = &c->lse;
  c->doutp = &c->dout, c->dqp = &c->dq, c->dkp = &c->dk, c->dvp = &c->dv;
}

/* Every tensor of the call gets head dim d (packed strides follow). */
static void set_head_dim(call *c, int64_t d) {
  fa_tensor *ts[] = {&c->q, &c->k, &c->v, &c->o, &c->dout, &c->dq, &c->dk, &c->dv};
  for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
    fa_tensor_packed(ts[i], ts[i]->buf, ts[i]->offset, ts[i]->dtype, ts[i]->shape[0], ts[i]->shape[1],
                     ts[i]->shape[2], d);
}

static void repack(fa_tensor *t) {
  fa_tensor_packed(t, t->buf, t->offset, t->dtype, t->shape[0], t->shape[1], t->shape[2], t->shape[3]);
}

/* One error case: how it breaks the valid call, what it must return, which words the message must hold
 * (alternatives separated by '|', matched as whole words, case-insensitive). NULL ctx: no message. */
typedef struct err_case {
  const char *what;
  fa_status want;
  const char *names;
} err_case;

#define INV FA_ERROR_INVALID_ARGUMENT
#define UNS FA_ERROR_UNSUPPORTED

/* The valid call with a block mask of 4 x 5 blocks ([B, Hq, 2, 3], ones) and dropout. */
static void with_mask_and_dropout(call *c) {
  c->desc.block_mask = &c->mask;
  c->desc.block_q = 4, c->desc.block_k = 5;
  c->desc.dropout_p = 0.25f, c->desc.dropout_seed = 1234, c->desc.dropout_offset = 5;
}

static void reshape_mask(call *c, int64_t b, int64_t h, int64_t rows, int64_t cols) {
  fa_tensor_packed(&c->mask, c->mask.buf, 0, FA_U8, b, h, rows, cols);
}

/* Block-mask and dropout cases (forward and backward): the valid call with both, then one thing broken. */
static err_case break_mask_call(int i, call *c, fixture *f) {
  with_mask_and_dropout(c);
  switch (i) {
  case 0: c->mask.dtype = FA_F32; repack(&c->mask); return (err_case){"block mask in f32, not u8", INV, "block_mask"};
  case 1: reshape_mask(c, 3, HQ, 2, 3); return (err_case){"block mask with batch 3, q with 2", INV, "block_mask"};
  case 2: reshape_mask(c, B, 3, 2, 3); return (err_case){"block mask with 3 heads, q with 4", INV, "block_mask"};
  case 3: reshape_mask(c, B, HKV, 2, 3); return (err_case){"block mask with Hkv (2) heads, not Hq", INV, "block_mask"};
  case 4: reshape_mask(c, B, HQ, 3, 3); return (err_case){"block mask with 3 block rows, ceil(8 / 4) = 2", INV, "block_mask"};
  case 5: reshape_mask(c, B, HQ, 2, 2); return (err_case){"block mask with 2 block cols, ceil(12 / 5) = 3", INV, "block_mask"};
  case 6: reshape_mask(c, B, HQ, 1, 3); return (err_case){"block mask with 1 block row (rows do not broadcast)", INV, "block_mask"};
  case 7: reshape_mask(c, B, HQ, 2, 0); return (err_case){"block mask with 0 block cols", INV, "block_mask"};
  case 8: c->desc.block_q = 0; return (err_case){"block_q 0", INV, "block_q"};
  case 9: c->desc.block_q = -4; return (err_case){"block_q -4", INV, "block_q"};
  case 10: c->desc.block_k = 0; return (err_case){"block_k 0", INV, "block_k"};
  case 11: c->desc.block_k = -5; return (err_case){"block_k -5", INV, "block_k"};
  case 12: c->mask.buf = NULL; return (err_case){"block mask with a NULL buffer", INV, "block_mask"};
  case 13: c->mask.offset = 40; return (err_case){"block mask reaching past the end of its 64-byte buffer", INV, "block_mask"};
  case 14: c->mask.stride[0] = 64; return (err_case){"block mask batch stride past the end", INV, "block_mask"};
  case 15: c->mask.buf = f->foreign; return (err_case){"block mask in a buffer of another context", INV, "block_mask"};
  case 16: c->mask.stride[3] = -1, c->mask.offset = 2; return (err_case){"block mask with a negative stride", INV, "block_mask"};
  case 17: c->desc.dropout_p = -0.1f; return (err_case){"dropout_p -0.1", INV, "dropout_p"};
  case 18: c->desc.dropout_p = 1.0f; return (err_case){"dropout_p 1", INV, "dropout_p"};
  case 19: c->desc.dropout_p = NAN; return (err_case){"dropout_p NaN", INV, "dropout_p"};
  case 20: c->desc.dropout_p = INFINITY; return (err_case){"dropout_p inf", INV, "dropout_p"};
  case 21: c->desc.algo = FA_ALGO_STANDARD, c->desc.dropout_p = 0;
    return (err_case){"the standard algorithm with a block mask", UNS, "algo"};
  case 22: c->desc.algo = FA_ALGO_STANDARD, c->desc.block_mask = NULL;
    return (err_case){"the standard algorithm with dropout", UNS, "algo"};
  }
  return (err_case){NULL, 0, NULL};
}

enum { MASK_CASE0 = 100, N_MASK_CASES = 23 };

/* Outputs that share memory with an operand or with themselves, and scales whose scores overflow: each
 * returned FA_SUCCESS and wrong results before issue 14. An output is aliased by moving the other operand
 * into the output's (poisoned) buffer, so a write shows. */
static err_case break_aliasing(int i, call *c, int backward) {
  if (!backward) switch (i) {
    case 0: c->q = c->o; return (err_case){"o is q (in place)", INV, "o"};
    case 1: c->o.stride[1] = 0; return (err_case){"o with seqlen stride 0: rows overwrite each other", INV, "o"};
    case 2: c->lse.buf = c->o.buf; return (err_case){"lse overlapping o", INV, "lse|o"};
    case 3: c->k.buf = c->o.buf, c->k.offset = 4 * D; return (err_case){"o overlapping k, one row apart", INV, "o"};
    case 4: c->o.stride[2] = D / 2; return (err_case){"o with heads half a row apart", INV, "o"};
    case 5: c->desc.softmax_scale = 1e38f; return (err_case){"softmax_scale 1e38", INV, "softmax_scale"};
    case 6: c->desc.softmax_scale = FLT_MAX; return (err_case){"softmax_scale FLT_MAX", INV, "softmax_scale"};
    case 7: c->desc.softmax_scale = 4e27f; return (err_case){"softmax_scale 4e27 (above the 3.4e27 of D = 16)", INV, "softmax_scale"};
    }
  else switch (i) {
    case 0: c->q = c->dq; return (err_case){"dq is q (in place)", INV, "dq"};
    case 1: c->dv = c->dk; return (err_case){"dv is dk", INV, "dv|dk"};
    case 2: c->dq.stride[1] = 0; return (err_case){"dq with seqlen stride 0", INV, "dq"};
    case 3: c->dout = c->dq; return (err_case){"dq is dout", INV, "dq"};
    case 4: c->dv.buf = c->dk.buf, c->dv.offset = 4; return (err_case){"dv one element after dk", INV, "dv|dk"};
    case 5: c->o = c->dq; return (err_case){"dq is o", INV, "dq"};
    case 6: c->desc.softmax_scale = 1e38f; return (err_case){"backward: softmax_scale 1e38", INV, "softmax_scale"};
    }
  return (err_case){NULL, 0, NULL};
}

/* Batch stride of t (batch 2) such that its last element sits at index INT64_MAX: its extent, one more,
 * overflows int64 (the fuzzer found that addition unchecked). */
static void reach_int64_max(fa_tensor *t) {
  int64_t rest = 0;
  for (int i = 1; i < 4; i++) rest += (t->shape[i] - 1) * t->stride[i];
  t->stride[0] = INT64_MAX - rest;
}

enum { ALIAS_CASE0 = 200, N_ALIAS_FORWARD = 8, N_ALIAS_BACKWARD = 7 };

/* Breaks c for forward/backward case i; returns the case, or a case with what == NULL past the end. */
static err_case break_call(int i, call *c, fixture *f, int backward) {
  const int64_t big = (int64_t)1 << 40;
  if (i >= ALIAS_CASE0) return break_aliasing(i - ALIAS_CASE0, c, backward);
  if (i >= MASK_CASE0) return break_mask_call(i - MASK_CASE0, c, f);
  switch (i) {
  case 0: c->ctx = NULL; return (err_case){"NULL context", INV, NULL};
  case 1: c->descp = NULL; return (err_case){"NULL descriptor", INV, "desc"};
  case 2: c->qp = NULL; return (err_case){"NULL q", INV, "q"};
  case 3: c->kp = NULL; return (err_case){"NULL k", INV, "k"};
  case 4: c->vp = NULL; return (err_case){"NULL v", INV, "v"};
  case 5: c->op = NULL; return (err_case){"NULL o", INV, "o"};
  case 6: c->q.buf = NULL; return (err_case){"q with a NULL buffer", INV, "q"};
  case 7: c->o.buf = NULL; return (err_case){"o with a NULL buffer", INV, "o"};
  case 8: c->lse.buf = NULL; return (err_case){"lse with a NULL buffer", INV, "lse"};
  case 9: c->q.shape[1] = 0; return (err_case){"q with seqlen 0", INV, "q"};
  case 10: c->k.shape[1] = -1; return (err_case){"k with seqlen -1", INV, "k"};
  case 11: c->q.shape[0] = 0, c->k.shape[0] = 0, c->v.shape[0] = 0, c->o.shape[0] = 0;
    return (err_case){"batch 0 everywhere", INV, "q"};
  case 12: c->k.shape[2] = -2; return (err_case){"k with -2 heads", INV, "k"};
  case 13: c->k.shape[0] = 3, c->v.shape[0] = 3; repack(&c->k), repack(&c->v);
    return (err_case){"k and v with batch 3, q with 2", INV, "k"};
  case 14: c->v.shape[0] = 1; repack(&c->v); return (err_case){"v with batch 1, q and k with 2", INV, "v"};
  case 15: c->k.shape[3] = 8, c->v.shape[3] = 8; repack(&c->k), repack(&c->v);
    return (err_case){"k and v head dim 8, q 16", INV, "k"};
  case 16: c->v.shape[3] = 8; repack(&c->v); return (err_case){"v head dim 8, q and k 16", INV, "v"};
  case 17: c->k.shape[2] = 3, c->v.shape[2] = 3; repack(&c->k), repack(&c->v);
    return (err_case){"Hq 4 not a multiple of Hkv 3", INV, "k|heads"};
  case 18: c->k.shape[2] = 8, c->v.shape[2] = 8; repack(&c->k), repack(&c->v);
    return (err_case){"Hkv 8 above Hq 4", INV, "k|heads"};
  case 19: c->v.shape[1] = SK - 1; repack(&c->v); return (err_case){"v seqlen differs from k's", INV, "v"};
  case 20: c->o.shape[1] = SQ - 1; repack(&c->o); return (err_case){"o seqlen differs from q's", INV, "o"};
  case 21: c->o.shape[2] = HQ / 2; repack(&c->o); return (err_case){"o heads differ from q's", INV, "o"};
  case 22: c->o.shape[3] = 8; repack(&c->o); return (err_case){"o head dim differs from q's", INV, "o"};
  case 23: fa_tensor_packed(&c->lse, c->lse.buf, 0, FA_F32, B, SQ, HQ, 1);
    return (err_case){"lse shaped [B, Sq, Hq] instead of [B, Hq, Sq]", INV, "lse"};
  case 24: fa_tensor_packed(&c->lse, c->lse.buf, 0, FA_F32, B, HQ, SQ, 2);
    return (err_case){"lse with last dim 2", INV, "lse"};
  case 25: c->lse.dtype = FA_F16; return (err_case){"lse in f16", INV, "lse"};
  case 26: c->k.dtype = FA_F16; return (err_case){"k in f16, q in f32", INV, "k"};
  case 27: c->o.dtype = FA_BF16; return (err_case){"o in bf16, q in f32", INV, "o"};
  case 28: c->q.dtype = (fa_dtype)9; return (err_case){"q with dtype 9", INV, "q"};
  case 29: c->q.stride[3] = 2; return (err_case){"q last stride 2", INV, "q"};
  case 30: c->o.stride[3] = 0; return (err_case){"o last stride 0", INV, "o"};
  case 31: c->k.stride[1] = -c->k.stride[1], c->k.offset = (size_t)(SK - 1) * HKV * D * 4;
    return (err_case){"k with a negative seqlen stride (in bounds)", INV, "k"};
  case 32: c->o.stride[2] = -D, c->o.offset = (size_t)(HQ - 1) * D * 4;
    return (err_case){"o with a negative head stride (in bounds)", INV, "o"};
  case 33: c->q.offset = BUF_BYTES - 64; return (err_case){"q reaching past the end of its buffer", INV, "q"};
  case 34: c->v.stride[0] = (int64_t)(BUF_BYTES / 4); return (err_case){"v batch stride past the end", INV, "v"};
  case 35: c->o.offset = 2; return (err_case){"o offset not a multiple of the element size", INV, "o"};
  case 36: c->q.shape[1] = big, c->o.shape[1] = big; repack(&c->q), repack(&c->o);
    return (err_case){"q and o with seqlen 2^40 in a 512 KiB buffer", INV, "q"};
  case 37: c->k.shape[1] = INT32_MAX, c->v.shape[1] = INT32_MAX, c->k.stride[1] = big;
    return (err_case){"k seqlen 2^31-1 with stride 2^40: extent overflows", INV, "k"};
  case 38: c->v.stride[0] = INT64_MAX / 2; return (err_case){"v batch stride 2^62: extent overflows", INV, "v"};
  case 39: c->o.offset = SIZE_MAX - 3; return (err_case){"o offset SIZE_MAX - 3", INV, "o"};
  case 40: c->lse.stride[2] = SQ * 100000; return (err_case){"lse reaching past the end of its buffer", INV, "lse"};
  case 41: set_head_dim(c, 0); return (err_case){"head dim 0", INV, "q|head"};
  case 42: set_head_dim(c, 264); return (err_case){"head dim 264 (above 256)", UNS, "q|head"};
  case 43: set_head_dim(c, 512); return (err_case){"head dim 512", UNS, "q|head"};
  case 44: c->desc.softmax_scale = NAN; return (err_case){"softmax_scale NaN", INV, "softmax_scale|scale"};
  case 45: c->desc.softmax_scale = -1; return (err_case){"softmax_scale -1", INV, "softmax_scale|scale"};
  case 46: c->desc.softmax_scale = INFINITY; return (err_case){"softmax_scale inf", INV, "softmax_scale|scale"};
  case 47: c->desc.algo = (fa_algo)7; return (err_case){"algo 7", INV, "algo"};
  case 48: c->q.buf = f->foreign; return (err_case){"q in a buffer of another context", INV, "q"};
  case 49: c->o.buf = f->foreign; return (err_case){"o in a buffer of another context", INV, "o"};
  case 50: reach_int64_max(&c->v); return (err_case){"v whose last element index is INT64_MAX", INV, "v"};
  }
  if (!backward) return (err_case){NULL, 0, NULL};
  switch (i) { /* backward only */
  case 51: c->lsep = NULL; return (err_case){"backward without lse", INV, "lse"};
  case 52: c->doutp = NULL; return (err_case){"NULL dout", INV, "dout"};
  case 53: c->dqp = NULL; return (err_case){"NULL dq", INV, "dq"};
  case 54: c->dkp = NULL; return (err_case){"NULL dk", INV, "dk"};
  case 55: c->dvp = NULL; return (err_case){"NULL dv", INV, "dv"};
  case 56: c->dout.shape[1] = SQ + 1; repack(&c->dout); return (err_case){"dout seqlen differs from o's", INV, "dout"};
  case 57: c->dq.shape[2] = HKV; repack(&c->dq); return (err_case){"dq heads like k, not q", INV, "dq"};
  case 58: c->dk.shape[1] = SQ; repack(&c->dk); return (err_case){"dk seqlen like q, not k", INV, "dk"};
  case 59: c->dv.shape[2] = HQ; repack(&c->dv); return (err_case){"dv heads like q, not v", INV, "dv"};
  case 60: c->dv.shape[3] = 8; repack(&c->dv); return (err_case){"dv head dim 8", INV, "dv"};
  case 61: c->dq.dtype = FA_F16; return (err_case){"dq in f16", INV, "dq"};
  case 62: c->dout.dtype = FA_BF16; return (err_case){"dout in bf16", INV, "dout"};
  case 63: c->dk.stride[3] = 2; return (err_case){"dk last stride 2", INV, "dk"};
  case 64: c->dv.offset = BUF_BYTES - 64; return (err_case){"dv reaching past the end of its buffer", INV, "dv"};
  case 65: c->dq.stride[1] = -c->dq.stride[1], c->dq.offset = BUF_BYTES / 2;
    return (err_case){"dq with a negative stride", INV, "dq"};
  case 66: c->dk.buf = NULL; return (err_case){"dk with a NULL buffer", INV, "dk"};
  case 67: c->dv.buf = f->foreign; return (err_case){"dv in a buffer of another context", INV, "dv"};
  case 68: c->o.shape[2] = HKV; repack(&c->o); return (err_case){"backward: o heads like k", INV, "o"};
  case 69: fa_tensor_packed(&c->lse, c->lse.buf, 0, FA_F32, B, HQ, SK, 1);
    return (err_case){"backward: lse with Sk rows instead of Sq", INV, "lse"};
  case 70: c->lse.dtype = FA_BF16; return (err_case){"backward: lse in bf16", INV, "lse"};
  case 71: c->dout.shape[0] = 0; return (err_case){"dout with batch 0", INV, "dout"};
  }
  return (err_case){NULL, 0, NULL};
}

enum { N_FORWARD_CASES = 51, N_BACKWARD_CASES = 72 };

/* Whether word w (of len n) appears in msg delimited by characters that cannot be part of a name. */
static int has_word(const char *msg, const char *w, size_t n) {
  for (const char *p = msg; *p; p++) {
    if (strncasecmp(p, w, n) != 0) continue;
    int left = p == msg || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') || (p[-1] >= 'A' && p[-1] <= 'Z') ||
                             (p[-1] >= '0' && p[-1] <= '9'));
    char r = p[n];
    int right = !(r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9'));
    if (left && right) return 1;
  }
  return 0;
}

static int names_any(const char *msg, const char *names) {
  const char *p = names;
  while (*p) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (has_word(msg, p, n)) return 1;
    if (!bar) break;
    p = bar + 1;
  }
  return 0;
}

/* Leave an unrelated message behind, so a call that fails without writing its own is caught. */
static void stale_message(fa_context *ctx) {
  fa_buffer *none = NULL;
  fa_buffer_create(ctx, 0, &none);
}

static void check_untouched(fixture *f, const char *what, int backward) {
  static const char *names[9] = {"q", "k", "v", "o", "lse", "dout", "dq", "dk", "dv"};
  unsigned char *got = malloc(BUF_BYTES);
  ck_assert_ptr_nonnull(got);
  ck_assert_int_eq(fa_synchronize(f->ctx), FA_SUCCESS);
  for (int j = 3; j < 9; j++) {
    if (j == 5) continue; /* dout is an input */
    if (!backward && j > 5) continue;
    ck_assert_int_eq(fa_buffer_read(f->ctx, f->buf[j], 0, got, BUF_BYTES), FA_SUCCESS);
    ck_assert_msg(memcmp(got, f->poison, BUF_BYTES) == 0, "%s: %s was written by a call that failed", what, names[j]);
  }
  free(got);
}

static void run_error_case(int i, int backward) {
  err_case e = {NULL, 0, NULL};
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fixture *f = get_fixture(bi);
    call c;
    valid_call(f, &c);
    e = break_call(i, &c, f, backward);
    if (bi == 0) th_case_begin("%s: %s", backward ? "fa_backward" : "fa_forward", e.what);
    stale_message(f->ctx);
    char stale[1024];
    snprintf(stale, sizeof stale, "%s", fa_context_last_error(f->ctx));
    fa_status st = backward ? fa_backward(c.ctx, c.descp, c.qp, c.kp, c.vp, c.op, c.lsep, c.doutp, c.dqp, c.dkp, c.dvp)
                            : fa_forward(c.ctx, c.descp, c.qp, c.kp, c.vp, c.op, c.lsep);
    const char *msg = fa_context_last_error(f->ctx);
    ck_assert_msg(st == e.want, "%s: %s: returned %s, want %s (message: \"%s\")", th_case(), th_backend_label(bi),
                  fa_status_string(st), fa_status_string(e.want), msg);
    if (e.names) {
      ck_assert_msg(msg[0] && strcmp(msg, stale) != 0, "%s: %s: no message for this error (last: \"%s\")", th_case(),
                    th_backend_label(bi), msg);
      ck_assert_msg(names_any(msg, e.names), "%s: %s: message \"%s\" names none of %s", th_case(),
                    th_backend_label(bi), msg, e.names);
    }
    check_untouched(f, th_case(), backward);
    th_ran(bi);
  }
  th_finish_case();
}

START_TEST(t_forward_errors) {
  run_error_case(_i, 0);
}
END_TEST

START_TEST(t_backward_errors) {
  run_error_case(_i, 1);
}
END_TEST

/* The valid call itself must pass the checks (else every case above proves nothing), also with the block
 * mask and dropout of the mask cases (_i & 2). The backward may be unsupported by a backend still being
 * written: that is a skip, not a pass. */
START_TEST(t_valid_call_accepted) {
  th_case_begin("the unbroken call is accepted (forward%s)%s", (_i & 1) ? " and backward" : "",
                (_i & 2) ? " with a block mask and dropout" : "");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fixture *f = get_fixture(bi);
    call c;
    valid_call(f, &c);
    if (_i & 2) with_mask_and_dropout(&c);
    fa_status st = fa_forward(c.ctx, c.descp, c.qp, c.kp, c.vp, c.op, c.lsep);
    ck_assert_msg(st == FA_SUCCESS, "%s: fa_forward: %s: %s", th_backend_label(bi), fa_status_string(st),
                  fa_context_last_error(f->ctx));
    if (_i & 1) {
      st = fa_backward(c.ctx, c.descp, c.qp, c.kp, c.vp, c.op, c.lsep, c.doutp, c.dqp, c.dkp, c.dvp);
      if (st == FA_ERROR_UNSUPPORTED) {
        th_unsupported(bi, fa_context_last_error(f->ctx));
      } else {
        ck_assert_msg(st == FA_SUCCESS, "%s: fa_backward: %s: %s", th_backend_label(bi), fa_status_string(st),
                      fa_context_last_error(f->ctx));
        th_ran(bi);
      }
    } else {
      th_ran(bi);
    }
    ck_assert_int_eq(fa_synchronize(f->ctx), FA_SUCCESS);
    /* Outputs now hold results: poison them again for the next cases. */
    for (int j = 3; j < 9; j++)
      ck_assert_int_eq(fa_buffer_write(f->ctx, f->buf[j], 0, f->poison, BUF_BYTES), FA_SUCCESS);
  }
  th_finish_case();
}
END_TEST

/* fa_dropout_mask: the valid call is [B, Hq, Sq, Sk] u8 in the (poisoned) o buffer; each case breaks one thing
 * and the buffer must stay poison. */
static err_case break_dropout_mask(int i, fa_context **ctx, const fa_attention_desc **desc, const fa_tensor **mask,
                                   fa_attention_desc *d, fa_tensor *m, fixture *f) {
  switch (i) {
  case 0: return (err_case){"the unbroken call is accepted", FA_SUCCESS, NULL};
  case 1: *ctx = NULL; return (err_case){"NULL context", INV, NULL};
  case 2: *desc = NULL; return (err_case){"NULL descriptor", INV, "desc"};
  case 3: *mask = NULL; return (err_case){"NULL mask", INV, "mask"};
  case 4: m->dtype = FA_F32; return (err_case){"mask in f32, not u8", INV, "mask"};
  case 5: m->dtype = FA_F16; return (err_case){"mask in f16", INV, "mask"};
  case 6: m->shape[0] = 0; return (err_case){"mask with batch 0", INV, "mask"};
  case 7: m->shape[1] = -1; return (err_case){"mask with -1 heads", INV, "mask"};
  case 8: m->shape[2] = 0; return (err_case){"mask with 0 rows", INV, "mask"};
  case 9: m->shape[3] = -2; return (err_case){"mask with -2 columns", INV, "mask"};
  case 10: m->buf = NULL; return (err_case){"mask with a NULL buffer", INV, "mask"};
  case 11: m->offset = BUF_BYTES - 16; return (err_case){"mask reaching past the end of its buffer", INV, "mask"};
  case 12: m->buf = f->foreign; return (err_case){"mask in a buffer of another context", INV, "mask"};
  case 13: d->dropout_p = 1.0f; return (err_case){"dropout_p 1", INV, "dropout_p"};
  case 14: d->dropout_p = -0.5f; return (err_case){"dropout_p -0.5", INV, "dropout_p"};
  case 15: d->dropout_p = NAN; return (err_case){"dropout_p NaN", INV, "dropout_p"};
  case 16: m->stride[2] = 0; return (err_case){"mask with row stride 0 (rows overwrite each other)", INV, "mask"};
  case 17: m->stride[3] = 2, m->stride[2] = SK; return (err_case){"mask with columns interleaving the next row", INV, "mask"};
  }
  return (err_case){NULL, 0, NULL};
}

enum { N_DROPOUT_MASK_CASES = 18 };

START_TEST(t_dropout_mask_errors) {
  err_case e = {NULL, 0, NULL};
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fixture *f = get_fixture(bi);
    fa_attention_desc d = {0};
    d.dropout_p = 0.5f, d.dropout_seed = 7;
    fa_tensor m;
    fa_tensor_packed(&m, f->buf[3], 0, FA_U8, B, HQ, SQ, SK);
    fa_context *ctx = f->ctx;
    const fa_attention_desc *desc = &d;
    const fa_tensor *mask = &m;
    e = break_dropout_mask(_i, &ctx, &desc, &mask, &d, &m, f);
    if (bi == 0) th_case_begin("fa_dropout_mask: %s", e.what);
    stale_message(f->ctx);
    char stale[1024];
    snprintf(stale, sizeof stale, "%s", fa_context_last_error(f->ctx));
    fa_status st = fa_dropout_mask(ctx, desc, mask);
    const char *msg = fa_context_last_error(f->ctx);
    ck_assert_msg(st == e.want, "%s: %s: returned %s, want %s (message: \"%s\")", th_case(), th_backend_label(bi),
                  fa_status_string(st), fa_status_string(e.want), msg);
    if (e.want == FA_SUCCESS) {
      /* It wrote the mask: poison the buffer again for the cases that follow. */
      ck_assert_int_eq(fa_synchronize(f->ctx), FA_SUCCESS);
      ck_assert_int_eq(fa_buffer_write(f->ctx, f->buf[3], 0, f->poison, BUF_BYTES), FA_SUCCESS);
      th_ran(bi);
      continue;
    }
    if (e.names) {
      ck_assert_msg(msg[0] && strcmp(msg, stale) != 0, "%s: %s: no message for this error (last: \"%s\")", th_case(),
                    th_backend_label(bi), msg);
      ck_assert_msg(names_any(msg, e.names), "%s: %s: message \"%s\" names none of %s", th_case(),
                    th_backend_label(bi), msg, e.names);
    }
    check_untouched(f, th_case(), 0);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* The block-mask pattern helpers have no context: fa_last_create_error() names the argument, and the host
 * mask is not written. */
START_TEST(t_pattern_errors) {
  th_case_begin("fa_block_mask_butterfly / fa_block_mask_local_global: NULL mask, sizes, window, global");
  static const struct {
    int local_global;
    int null_mask;
    int64_t rows, cols, window, global;
    const char *names;
  } cases[] = {
      {0, 1, 4, 4, 0, 0, "mask"},   {0, 0, 0, 4, 0, 0, "rows"},  {0, 0, -3, 4, 0, 0, "rows"},
      {0, 0, 4, 0, 0, 0, "cols"},   {0, 0, 4, -1, 0, 0, "cols"}, {1, 1, 4, 4, 1, 1, "mask"},
      {1, 0, 0, 4, 1, 1, "rows"},   {1, 0, 4, -2, 1, 1, "cols"}, {1, 0, 4, 4, -1, 0, "window"},
      {1, 0, 4, 4, 0, -2, "global"}, {1, 0, 4, 4, -1, -1, "window|global"},
  };
  uint8_t m[64], untouched[64];
  memset(untouched, 0xa5, sizeof untouched);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    memcpy(m, untouched, sizeof m);
    /* Leave an unrelated message behind first, so that a call writing none is caught. */
    fa_context_options bad;
    fa_context_options_default(&bad);
    bad.backend = (fa_backend)42;
    fa_context *none = NULL;
    ck_assert_int_eq(fa_context_create(&bad, &none), FA_ERROR_INVALID_ARGUMENT);
    uint8_t *mp = cases[i].null_mask ? NULL : m;
    fa_status st = cases[i].local_global
                       ? fa_block_mask_local_global(mp, cases[i].rows, cases[i].cols, cases[i].window, cases[i].global)
                       : fa_block_mask_butterfly(mp, cases[i].rows, cases[i].cols);
    const char *msg = fa_last_create_error();
    ck_assert_msg(st == FA_ERROR_INVALID_ARGUMENT, "case %zu (%s rows %lld cols %lld window %lld global %lld): %s", i,
                  cases[i].local_global ? "local_global" : "butterfly", (long long)cases[i].rows,
                  (long long)cases[i].cols, (long long)cases[i].window, (long long)cases[i].global,
                  fa_status_string(st));
    ck_assert_msg(names_any(msg, cases[i].names), "case %zu: fa_last_create_error() \"%s\" names none of %s", i, msg,
                  cases[i].names);
    ck_assert_msg(memcmp(m, untouched, sizeof m) == 0, "case %zu: the mask was written by a call that failed", i);
  }
  th_ran(0);
  th_finish_case();
}
END_TEST

/* FLASHATTN_BACKEND / FLASHATTN_DEVICE and the options, through fa_context_create. */
static void set_env(const char *name, const char *value) {
  if (value) setenv(name, value, 1);
  else unsetenv(name);
}

static char *save_env(const char *name) {
  const char *v = getenv(name);
  return v ? strdup(v) : NULL;
}

static void expect_create(const fa_context_options *opt, fa_status want, const char *what, const char *word) {
  fa_context *ctx = (fa_context *)&ctx; /* not NULL: create must set it */
  fa_status st = fa_context_create(opt, &ctx);
  const char *msg = fa_last_create_error();
  ck_assert_msg(st == want, "%s: returned %s, want %s (\"%s\")", what, fa_status_string(st), fa_status_string(want),
                msg);
  if (want == FA_SUCCESS) {
    ck_assert_ptr_nonnull(ctx);
    fa_context_destroy(ctx);
    return;
  }
  ck_assert_msg(ctx == NULL, "%s: *out not set to NULL on error", what);
  ck_assert_msg(msg[0] != 0, "%s: fa_last_create_error() is empty", what);
  if (word) ck_assert_msg(strstr(msg, word) != NULL, "%s: message \"%s\" does not name %s", what, msg, word);
}

START_TEST(t_environment) {
  th_case_begin("FLASHATTN_BACKEND, FLASHATTN_DEVICE and options at context creation");
  char *old_backend = save_env("FLASHATTN_BACKEND"), *old_device = save_env("FLASHATTN_DEVICE");
  fa_context_options opt;
  fa_context_options_default(&opt);
  int n_cuda = 0, n_cl = 0;
  fa_device_count(FA_BACKEND_CUDA, &n_cuda);
  fa_device_count(FA_BACKEND_OPENCL, &n_cl);

  set_env("FLASHATTN_DEVICE", NULL);
  set_env("FLASHATTN_BACKEND", "vulkan");
  expect_create(&opt, FA_ERROR_INVALID_ARGUMENT, "FLASHATTN_BACKEND=vulkan", "FLASHATTN_BACKEND");
  expect_create(NULL, FA_ERROR_INVALID_ARGUMENT, "FLASHATTN_BACKEND=vulkan, NULL options", "FLASHATTN_BACKEND");
  set_env("FLASHATTN_BACKEND", "cuda");
  expect_create(&opt, n_cuda > 0 ? FA_SUCCESS : FA_ERROR_BACKEND_UNAVAILABLE, "FLASHATTN_BACKEND=cuda", NULL);
  set_env("FLASHATTN_BACKEND", "opencl");
  expect_create(&opt, n_cl > 0 ? FA_SUCCESS : FA_ERROR_BACKEND_UNAVAILABLE, "FLASHATTN_BACKEND=opencl", NULL);
  if (n_cl > 0) {
    set_env("FLASHATTN_DEVICE", "abc");
    expect_create(&opt, FA_ERROR_INVALID_ARGUMENT, "FLASHATTN_DEVICE=abc", "FLASHATTN_DEVICE");
    set_env("FLASHATTN_DEVICE", "-3");
    expect_create(&opt, FA_ERROR_INVALID_ARGUMENT, "FLASHATTN_DEVICE=-3", "FLASHATTN_DEVICE");
    set_env("FLASHATTN_DEVICE", "9999");
    expect_create(&opt, FA_ERROR_BACKEND_UNAVAILABLE, "FLASHATTN_DEVICE=9999", NULL);
  }
  set_env("FLASHATTN_DEVICE", NULL);
  set_env("FLASHATTN_BACKEND", NULL);
  /* An explicit backend ignores FLASHATTN_BACKEND. */
  set_env("FLASHATTN_BACKEND", "vulkan");
  fa_context_options o2 = opt;
  o2.backend = FA_BACKEND_OPENCL;
  expect_create(&o2, n_cl > 0 ? FA_SUCCESS : FA_ERROR_BACKEND_UNAVAILABLE, "backend opencl, FLASHATTN_BACKEND=vulkan",
                NULL);
  set_env("FLASHATTN_BACKEND", NULL);
  o2.device = 9999;
  expect_create(&o2, FA_ERROR_BACKEND_UNAVAILABLE, "opencl device 9999", NULL);
  o2.device = -2;
  expect_create(&o2, FA_ERROR_INVALID_ARGUMENT, "device -2", "device");
  o2 = opt;
  o2.backend = (fa_backend)42;
  expect_create(&o2, FA_ERROR_INVALID_ARGUMENT, "backend 42", "backend");
  if (n_cuda == 0) {
    o2 = opt;
    o2.backend = FA_BACKEND_CUDA;
    expect_create(&o2, FA_ERROR_BACKEND_UNAVAILABLE, "backend cuda on a machine without a CUDA device", NULL);
  }
  ck_assert_int_eq(fa_context_create(&opt, NULL), FA_ERROR_INVALID_ARGUMENT);

  int n = 7;
  ck_assert_int_eq(fa_device_count(FA_BACKEND_AUTO, &n), FA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(n, 0);
  ck_assert_int_eq(fa_device_count((fa_backend)42, &n), FA_ERROR_INVALID_ARGUMENT);
  ck_assert_int_eq(fa_device_count(FA_BACKEND_OPENCL, NULL), FA_ERROR_INVALID_ARGUMENT);

  set_env("FLASHATTN_BACKEND", old_backend);
  set_env("FLASHATTN_DEVICE", old_device);
  free(old_backend);
  free(old_device);
  th_ran(0);
  th_finish_case();
}
END_TEST

/* The smaller entry points: NULL handles and out-of-range requests. */
START_TEST(t_api_errors) {
  th_case_begin("NULL and out-of-range arguments of the other calls");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    fa_buffer *b = (fa_buffer *)&b;
    fa_device_info info;
    fa_device_info_init(&info);
    fa_tiles tiles;
    size_t cur, peak;
    char host[16];
    ck_assert_int_eq(fa_context_info(NULL, &info), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_context_info(ctx, NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_synchronize(NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_context_tiles(NULL, 64, FA_F32, &tiles), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_context_tiles(ctx, 64, FA_F32, NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_context_tiles(ctx, 64, (fa_dtype)5, &tiles), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_ne(fa_context_tiles(ctx, 0, FA_F32, &tiles), FA_SUCCESS);
    ck_assert_int_eq(fa_context_tiles(ctx, 512, FA_F32, &tiles), FA_ERROR_UNSUPPORTED);
    ck_assert_int_eq(fa_context_memory(NULL, &cur, &peak), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_context_reset_peak_memory(NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_create(NULL, 16, &b), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_create(ctx, 0, &b), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_ptr_null(b);
    ck_assert_msg(fa_context_last_error(ctx)[0], "fa_buffer_create(0 bytes): no message");
    ck_assert_int_eq(fa_buffer_create(ctx, 16, NULL), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_wrap(ctx, NULL, 16, &b), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_wrap(NULL, host, 16, &b), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_write(ctx, NULL, 0, host, 16), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_read(ctx, NULL, 0, host, 16), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_int_eq(fa_buffer_size(NULL), 0);
    fa_buffer_destroy(NULL);
    fa_context_destroy(NULL);
    ck_assert_str_eq(fa_context_last_error(NULL), "");
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* fa_tensor_packed with strides past int64: they saturate (they wrapped to 0 before issue 14, a view whose
 * rows all start at element 0), and the call that gets the view refuses it. */
START_TEST(t_packed_overflow) {
  th_case_begin("fa_tensor_packed: strides past int64 saturate and are refused");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fixture *f = get_fixture(bi);
    fa_tensor t;
    fa_tensor_packed(&t, f->buf[0], 0, FA_F32, 1, 1, (int64_t)1 << 32, (int64_t)1 << 32);
    ck_assert_int_eq(t.stride[3], 1);
    ck_assert_int_eq(t.stride[2], (int64_t)1 << 32);
    ck_assert_msg(t.stride[1] == INT64_MAX && t.stride[0] == INT64_MAX, "strides [%lld, %lld] wrapped",
                  (long long)t.stride[0], (long long)t.stride[1]);
    fa_tensor_packed(&t, f->buf[0], 0, FA_F32, 2, (int64_t)1 << 40, (int64_t)1 << 20, 16);
    ck_assert_int_eq(t.stride[1], (int64_t)1 << 24);
    ck_assert_int_eq(t.stride[0], INT64_MAX);
    call c;
    valid_call(f, &c);
    c.q = t;
    ck_assert_int_eq(fa_forward(c.ctx, c.descp, c.qp, c.kp, c.vp, c.op, c.lsep), FA_ERROR_INVALID_ARGUMENT);
    ck_assert_msg(names_any(fa_context_last_error(f->ctx), "q"), "%s", fa_context_last_error(f->ctx));
    check_untouched(f, "q with saturated strides", 0);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* Device memory beyond what the device reports is refused before the driver is asked (PoCL granted 64 GiB
 * on a 6 GiB device, then aborted inside a forward). Where the device is small (<= 8 GiB: PoCL here), it is
 * filled in quarters first; on a large GPU only requests that cannot fit are made, so nothing big is held. */
START_TEST(t_memory_refused) {
  th_case_begin("allocations past the device's reported memory: FA_ERROR_OUT_OF_MEMORY");
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    fa_device_info info;
    fa_device_info_init(&info);
    ck_assert_int_eq(fa_context_info(ctx, &info), FA_SUCCESS);
    const size_t total = info.global_mem_bytes;
    ck_assert_uint_gt(total, 0);
    size_t before, peak, after;
    ck_assert_int_eq(fa_context_memory(ctx, &before, &peak), FA_SUCCESS);
    fa_buffer *b = (fa_buffer *)&b;
    ck_assert_int_eq(fa_buffer_create(ctx, total + 1, &b), FA_ERROR_OUT_OF_MEMORY);
    ck_assert_ptr_null(b);
    ck_assert_msg(names_any(fa_context_last_error(ctx), "fa_buffer_create"), "%s", fa_context_last_error(ctx));
    ck_assert_int_eq(fa_buffer_create(ctx, SIZE_MAX, &b), FA_ERROR_OUT_OF_MEMORY);
    fa_buffer *small;
    ck_assert_int_eq(fa_buffer_create(ctx, 1 << 20, &small), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, total - before - (1 << 20) + 1, &b), FA_ERROR_OUT_OF_MEMORY);
    fa_buffer *quarter[5] = {NULL};
    int made = 0;
    if (total <= ((size_t)8 << 30)) {
      fa_status st = FA_SUCCESS;
      while (made < 5 && (st = fa_buffer_create(ctx, total / 4, &quarter[made])) == FA_SUCCESS) made++;
      ck_assert_msg(made <= 4 && st == FA_ERROR_OUT_OF_MEMORY, "%d quarters of %zu bytes granted, then %s", made,
                    total, fa_status_string(st));
    }
    for (int i = 0; i < made; i++) fa_buffer_destroy(quarter[i]);
    fa_buffer_destroy(small);
    ck_assert_int_eq(fa_context_memory(ctx, &after, &peak), FA_SUCCESS);
    ck_assert_uint_eq(after, before);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

/* The aliasing rule must not refuse what is disjoint: q, k, v interleaved in one packed [B, S, 3, H, D] tensor,
 * dq, dk, dv likewise, o and lse side by side in one buffer. The results must match the same call on separate
 * packed buffers. */
START_TEST(t_interleaved_accepted) {
  th_case_begin("packed qkv and dqkv in one buffer each, o and lse in one: accepted, same results");
  enum { S = 24, H = 2, DD = 16, ROW = 3 * H * DD };
  const size_t n = (size_t)B * S * ROW, one = (size_t)B * S * H * DD, lse_n = (size_t)B * H * S;
  for (int bi = 0; bi < th_backend_count(); bi++) {
    fa_context *ctx = th_context(bi);
    float *host = malloc(n * sizeof(float)), *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    ck_assert(host && got && want);
    th_rng r;
    th_rng_init(&r, th_case_seed(bi));
    for (size_t i = 0; i < n; i++) host[i] = (float)th_rng_normal(&r);
    fa_buffer *qkv, *dqkv, *olse, *sep[12];
    ck_assert_int_eq(fa_buffer_create(ctx, n * 4, &qkv), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, n * 4, &dqkv), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_create(ctx, (one + lse_n) * 4, &olse), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_write(ctx, qkv, 0, host, n * 4), FA_SUCCESS);
    fa_tensor t[3], g[3], o, lse, dout;
    for (int i = 0; i < 3; i++) {
      fa_tensor_packed(&t[i], qkv, (size_t)i * H * DD * 4, FA_F32, B, S, H, DD);
      fa_tensor_packed(&g[i], dqkv, (size_t)i * H * DD * 4, FA_F32, B, S, H, DD);
      t[i].stride[1] = g[i].stride[1] = ROW, t[i].stride[0] = g[i].stride[0] = (int64_t)S * ROW;
    }
    fa_tensor_packed(&o, olse, 0, FA_F32, B, S, H, DD);
    fa_tensor_packed(&lse, olse, one * 4, FA_F32, B, H, S, 1);
    dout = t[0]; /* an input may alias inputs */
    fa_attention_desc desc;
    fa_attention_desc_init(&desc);
    desc.causal = 1;
    ck_assert_msg(fa_forward(ctx, &desc, &t[0], &t[1], &t[2], &o, &lse) == FA_SUCCESS, "%s", fa_context_last_error(ctx));
    fa_status st = fa_backward(ctx, &desc, &t[0], &t[1], &t[2], &o, &lse, &dout, &g[0], &g[1], &g[2]);
    ck_assert_msg(st == FA_SUCCESS || st == FA_ERROR_UNSUPPORTED, "%s", fa_context_last_error(ctx));
    const int with_backward = st == FA_SUCCESS;
    /* The same on separate packed buffers: q k v o lse dout dq dk dv. */
    fa_tensor u[9];
    for (int i = 0; i < 9; i++) {
      ck_assert_int_eq(fa_buffer_create(ctx, one * 4, &sep[i]), FA_SUCCESS);
      fa_tensor_packed(&u[i], sep[i], 0, FA_F32, B, i == 4 ? H : S, i == 4 ? S : H, i == 4 ? 1 : DD);
    }
    for (int i = 0; i < 3; i++)
      for (size_t row = 0; row < (size_t)B * S; row++)
        ck_assert_int_eq(fa_buffer_write(ctx, sep[i], row * H * DD * 4, host + row * ROW + (size_t)i * H * DD,
                                         H * DD * 4), FA_SUCCESS);
    for (size_t row = 0; row < (size_t)B * S; row++)
      ck_assert_int_eq(fa_buffer_write(ctx, sep[5], row * H * DD * 4, host + row * ROW, H * DD * 4), FA_SUCCESS);
    ck_assert_int_eq(fa_forward(ctx, &desc, &u[0], &u[1], &u[2], &u[3], &u[4]), FA_SUCCESS);
    if (with_backward)
      ck_assert_int_eq(fa_backward(ctx, &desc, &u[0], &u[1], &u[2], &u[3], &u[4], &u[5], &u[6], &u[7], &u[8]),
                       FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_read(ctx, olse, 0, got, (one + lse_n) * 4), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_read(ctx, sep[3], 0, want, one * 4), FA_SUCCESS);
    ck_assert_int_eq(fa_buffer_read(ctx, sep[4], 0, want + one, lse_n * 4), FA_SUCCESS);
    for (size_t i = 0; i < one + lse_n; i++)
      ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])), "o/lse[%zu]: %g vs %g", i, got[i], want[i]);
    if (with_backward) {
      ck_assert_int_eq(fa_buffer_read(ctx, dqkv, 0, got, n * 4), FA_SUCCESS);
      for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(fa_buffer_read(ctx, sep[6 + i], 0, want, one * 4), FA_SUCCESS);
        for (size_t row = 0; row < (size_t)B * S; row++)
          for (size_t e = 0; e < H * DD; e++) {
            const float a = got[row * ROW + (size_t)i * H * DD + e], w = want[row * H * DD + e];
            ck_assert_msg(fabsf(a - w) <= 1e-5f * (1 + fabsf(w)), "d%c[%zu]: %g vs %g", "qkv"[i], row, a, w);
          }
      }
    }
    for (int i = 0; i < 9; i++) fa_buffer_destroy(sep[i]);
    fa_buffer_destroy(qkv), fa_buffer_destroy(dqkv), fa_buffer_destroy(olse);
    free(host), free(got), free(want);
    th_ran(bi);
  }
  th_finish_case();
}
END_TEST

static Suite *make_suite(void) {
  Suite *s = suite_create("errors");
  TCase *tc = tcase_create("errors");
  tcase_set_timeout(tc, TH_TIMEOUT_S);
  tcase_add_loop_test(tc, t_valid_call_accepted, 0, 4);
  tcase_add_loop_test(tc, t_forward_errors, 0, N_FORWARD_CASES);
  tcase_add_loop_test(tc, t_backward_errors, 0, N_BACKWARD_CASES);
  tcase_add_loop_test(tc, t_forward_errors, MASK_CASE0, MASK_CASE0 + N_MASK_CASES);
  tcase_add_loop_test(tc, t_backward_errors, MASK_CASE0, MASK_CASE0 + N_MASK_CASES);
  tcase_add_loop_test(tc, t_forward_errors, ALIAS_CASE0, ALIAS_CASE0 + N_ALIAS_FORWARD);
  tcase_add_loop_test(tc, t_backward_errors, ALIAS_CASE0, ALIAS_CASE0 + N_ALIAS_BACKWARD);
  tcase_add_loop_test(tc, t_dropout_mask_errors, 0, N_DROPOUT_MASK_CASES);
  tcase_add_test(tc, t_pattern_errors);
  tcase_add_test(tc, t_environment);
  tcase_add_test(tc, t_api_errors);
  tcase_add_test(tc, t_packed_overflow);
  tcase_add_test(tc, t_memory_refused);
  tcase_add_test(tc, t_interleaved_accepted);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  th_set_cleanup(free_fixtures);
  return th_main(make_suite(), 1);
}
