/* fa_dropout_mask(): the keep bits that the forward and backward kernels draw, written out as bytes.
 *
 *   keep: uint8 [B, Hq, Sq, Sk] at byte offset `off`, byte strides sb, sh, sq, sk (any layout); byte
 *   (b, h, i, j) = 1 when score (i, j) of batch-head b * Hq + h is kept (kernels/masks.h), else 0.
 *   Grid: 1-d, any size: work-item x handles groups x, x + size, ... of the B*Hq * ceil(Sq/16)*8 * ceil(Sk/2)
 *   Philox groups (rows i, i+8 with i % 16 < 8, keys 2c, 2c+1), so one call serves its four bytes, and
 *   consecutive work-items write consecutive key pairs. Indices are 64-bit: Sq * Sk may pass 2^32. */

__kernel void dropout_mask(__global uchar *keep, long off, long sb, long sh, long sq, long sk, uint Hq, uint BH,
                           uint Sq, uint Sk, ulong seed, uint offset, uint threshold) {
  const ulong rows = (ulong)((Sq + 15u) / 16u) * 8u; /* group rows of one batch-head: i % 16 < 8 */
  const ulong pairs = (Sk + 1u) / 2u;
  const ulong per_bh = rows * pairs, total = per_bh * BH;
  for (ulong x = get_global_id(0); x < total; x += get_global_size(0)) {
    const uint bh = (uint)(x / per_bh);
    const ulong rest = x - (ulong)bh * per_bh;
    const uint gr = (uint)(rest / pairs), pc = (uint)(rest - (ulong)gr * pairs);
    const uint i = (gr >> 3) * 16u + (gr & 7u), j = 2u * pc;
    uint w[4];
    fa_dropout_words(seed, offset, bh, i, j, w);
    const long base = off + (long)(bh / Hq) * sb + (long)(bh % Hq) * sh;
    for (int e = 0; e < 4; e++) {
      const uint row = i + 8u * (uint)(e >> 1), col = j + (uint)(e & 1);
      if (row < Sq && col < Sk) keep[base + (long)row * sq + (long)col * sk] = w[e] >= threshold ? 1 : 0;
    }
  }
}
