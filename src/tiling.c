/* Tile sizes from the device's on-chip memory. Pure functions of the limits the backend queried, shared
 * by both backends; each kernel family sizes its own local-memory layout below the paper's rule. */
#include "tiling.h"

void fa_tiles_paper(size_t bytes, int head_dim, int *block_q, int *block_k) {
  size_t floats = bytes / sizeof(float);
  size_t bc = (floats + 4 * (size_t)head_dim - 1) / (4 * (size_t)head_dim);
  if (bc < 1) bc = 1;
  *block_k = bc > 4096 ? 4096 : (int)bc;
  *block_q = *block_k < head_dim ? *block_k : head_dim;
}
