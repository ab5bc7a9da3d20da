/* The argument block of the CUDA forward kernels, passed by value. Plain C with fixed-size types and no
 * padding holes, so that the host compiler (src/cuda/cu_flash.c includes this file) and NVRTC (which gets it
 * as a header of kernels/flash_fwd.cu) lay it out the same way. */
#ifndef FA_CUDA_PARAMS_H
#define FA_CUDA_PARAMS_H

/* The inference options of the flash kernels' argument blocks (read only with FA_INFER=1, kernels/masks.h),
 * filled by src/cuda/cu_flash.c's fa_cu_infer_params for both passes: varlen offsets cu_q, cu_k (int32
 * [seqs + 1], element strides; varlen 0: padded batches, else the grid's z counts sequences), ALiBi's slopes
 * (float32 [B or 1, Hq], element strides, 0 where broadcast; has_alibi 0: none), the window (wl, wr; -1
 * unbounded) and softcap times log2 e (0: off). */
typedef struct fa_infer_params {
  unsigned long long cu_q, cu_k, alibi;
  long long cu_q_s, cu_k_s, al_sb, al_sh;
  int varlen, seqs, wl, wr, has_alibi;
  float softcap2;
} fa_infer_params;

typedef struct fa_fwd_params {
  /* Device addresses of element 0 of each tensor (the view offsets already applied); lse 0 = not wanted. */
  unsigned long long q, k, v, o, lse;
  /* Strides in elements: batch, sequence, head (the head dim is contiguous). lse: batch, head, sequence. */
  long long q_sb, q_ss, q_sh;
  long long k_sb, k_ss, k_sh;
  long long v_sb, v_ss, v_sh;
  long long o_sb, o_ss, o_sh;
  long long lse_sb, lse_sh, lse_ss;
  int seqlen_q, seqlen_k;
  int group;   /* heads_q / heads_kv: query head h reads key/value head h / group */
  int causal;  /* 1: key j is masked for query i when j > i + seqlen_k - seqlen_q */
  int o_pairs; /* 1: o's rows allow 4-byte stores of two 16-bit elements */
  int b0, h0;  /* batch and head of grid index 0 (a launch covers at most 65535 of each) */
  float scale_log2; /* softmax scale * log2(e): the kernels work in base 2 */
  /* Block-sparse mask (read only with FA_BLOCK_MASK=1): address of block (0, 0) of batch 0, head 0 (the
   * view's byte offset applied) and byte strides per batch, query head, block row, block column (0 where
   * it broadcasts); block_q x block_k scores per block. */
  unsigned long long mask;
  long long mask_sb, mask_sh, mask_sr, mask_sc;
  /* Dropout (read only with FA_DROPOUT=1, kernels/masks.h): Philox key, counter word 3, the drop threshold,
   * and 1 / (1 - p), folded into the final 1 / l. heads_q: the counter holds b * heads_q + h. */
  unsigned long long dropout_seed;
  int block_q, block_k;
  unsigned dropout_offset, dropout_threshold;
  int heads_q;
  float dropout_scale;
  fa_infer_params inf; /* FA_INFER */
} fa_fwd_params;

/* A CUtensorMap (cuda.h's CUtensorMap: 128 opaque bytes, 64-byte aligned), made on the host with
 * cuTensorMapEncodeTiled and read by TMA instructions. */
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FA_ALIGN64 __align__(64)
#else
#define FA_ALIGN64 _Alignas(64)
#endif
typedef struct fa_tmap {
  FA_ALIGN64 unsigned long long opaque[16];
} fa_tmap;

/* The second argument of kernels/flash_fwd_sm90.cu: TMA maps of q, k and v (dims D, S, H, B innermost
 * first; boxes of 64 columns x BLOCK_M rows for q, x BLOCK_N rows for k and v; 128-byte swizzle). */
typedef struct fa_fwd_sm90_maps {
  fa_tmap q, k, v;
} fa_fwd_sm90_maps;

/* The argument block of kernels/flash_bwd_sm90.cu (the Hopper backward), its maps in fa_bwd_sm90_maps. The
 * workspace (float32 unless said): lse2 and di [B Hq][seqlen_q_pad] (lse * log2 e, +inf for rows that get
 * no probability; rowsum(dO o O)), dq_acc [B Hq][n_mblocks][slabs][BLOCK_M][64] (the sum of dS K, columns of
 * row r stored XOR (r % 8) * 8), sem int [B Hq][n_mblocks][slabs] (deterministic mode's turn counters). */
typedef struct fa_bwd_sm90_params {
  unsigned long long q, k, v, o, dout, lse, dq, dk, dv;
  unsigned long long lse2, di, dq_acc, sem;
  long long q_sb, q_ss, q_sh, k_sb, k_ss, k_sh, v_sb, v_ss, v_sh, o_sb, o_ss, o_sh;
  long long do_sb, do_ss, do_sh, dq_sb, dq_ss, dq_sh, dk_sb, dk_ss, dk_sh, dv_sb, dv_ss, dv_sh;
  long long lse_sb, lse_sh, lse_ss;
  unsigned long long mask; /* block mask (FA_BLOCK_MASK): block (0, 0) of batch 0, head 0; byte strides */
  long long mask_sb, mask_sh, mask_sr, mask_sc;
  unsigned long long dropout_seed;
  int seqlen_q, seqlen_k, seqlen_q_pad, n_mblocks;
  int heads_q, group, causal, b0, h0;
  float scale, scale_log2;
  int block_q, block_k;
  unsigned dropout_offset, dropout_threshold;
  float dropout_scale;
  fa_infer_params inf; /* FA_INFER; varlen: grid z counts sequences, the workspace is per sequence */
} fa_bwd_sm90_params;

/* TMA maps of q, k, v and dout for the Hopper backward: boxes of 64 columns x BLOCK_M rows (q, dout) or
 * BLOCK_N rows (k, v). */
typedef struct fa_bwd_sm90_maps {
  fa_tmap q, k, v, dout;
} fa_bwd_sm90_maps;

/* The argument block of kernels/dropout_mask.cu (fa_dropout_mask): write keep[b, h, i, j] (uint8 0/1). */
typedef struct fa_dropout_params {
  unsigned long long keep;            /* address of element (0, 0, 0, 0), byte offset applied */
  long long s_b, s_h, s_i, s_j;       /* byte strides */
  unsigned long long seed;
  unsigned long long groups;          /* threads' work items: heads_total x row_slots x col_pairs */
  unsigned long long row_slots;       /* (i, i + 8) pairs per batch-head: 8 (Sq / 16) + min(Sq % 16, 8) */
  unsigned long long col_pairs;       /* (Sk + 1) / 2 */
  int seqlen_q, seqlen_k, heads_q;
  unsigned offset, threshold;
  int pad0;                           /* keeps the size a multiple of 8 on both sides */
} fa_dropout_params;

/* The argument block of kernels/decode.cu's fa_decode (split-KV decode with the inference options): addresses
 * with the view offsets applied (0 for an absent operand), element strides (k, v: batch or page, row, head),
 * part_o / part_lse the float32 split workspace [split][B][Hq][Sq][D] and [split][B][Hq][Sq]. */
typedef struct fa_decode_params {
  unsigned long long q, k, v, o, lse, part_o, part_lse, seqlens, table, alibi, cu_q, cu_k;
  long long q_sb, q_ss, q_sh, k_sb, k_ss, k_sh, v_sb, v_ss, v_sh, o_sb, o_ss, o_sh, lse_sb, lse_sh, lse_ss;
  long long sl_s, t_sb, t_sp, al_sb, al_sh, cu_q_s, cu_k_s;
  int batch, seqlen_q, cap, heads_q, group, causal, window, wl, wr, page_size, num_pages, splits, row_blocks;
  int has_lse, has_seqlens, paged, has_alibi, varlen; /* varlen: cu_q and cu_k give the sequences' spans */
  float scale, softcap;
} fa_decode_params;

/* The argument block of kernels/decode.cu's fa_combine: part 0's views (o parts in FA_PART_DTYPE, lse parts
 * float32) and the element step between parts; the outputs o (FA_DTYPE) and lse (0: not wanted). */
typedef struct fa_combine_params {
  unsigned long long op, lp, o, lse;
  long long op_sb, op_ss, op_sh, op_stride, lp_sb, lp_sh, lp_ss, lp_stride;
  long long o_sb, o_ss, o_sh, l_sb, l_sh, l_ss;
  int parts, head_dim, seqlen_q, pad0;
} fa_combine_params;

/* The argument block of kernels/decode.cu's fa_kv_append: caches k, v (batch or page, row, head strides),
 * the new tokens [B, seqlen_new, Hkv, D], seqlens_k and the block table as in fa_decode_params. */
typedef struct fa_kv_append_params {
  unsigned long long k, v, k_new, v_new, seqlens, table;
  long long k_sb, k_ss, k_sh, v_sb, v_ss, v_sh, kn_sb, kn_ss, kn_sh, vn_sb, vn_ss, vn_sh, sl_s, t_sb, t_sp, total;
  int paged, page_size, num_pages, cap, seqlen_new, heads_kv, head_dim, pad0;
} fa_kv_append_params;

#endif
