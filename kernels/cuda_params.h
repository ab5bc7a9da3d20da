/* The argument block of the CUDA forward kernels, passed by value. Plain C with fixed-size types and no
 * padding holes, so that the host compiler (src/cuda/cu_flash.c includes this file) and NVRTC (which gets it
 * as a header of kernels/flash_fwd.cu) lay it out the same way. */
#ifndef FA_CUDA_PARAMS_H
#define FA_CUDA_PARAMS_H

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
} fa_fwd_params;

#endif
