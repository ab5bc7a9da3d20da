/* kernels/decode.cu's tensor-core decode kernel (fa_decode_mma) run on the host through tests/emu/cuda_common.cuh
 * (ldmatrix, mma.sync, shuffles emulated lane by lane), against a float64 reference: the fragment layouts, the
 * per-warp cp.async ring, the block-table reads and the warps' merge are checked where no GPU is (CI). One
 * executable per kernel variant (meson passes FA_DTYPE, HEAD_DIM, FA_DEC_MODS, FA_DEC_WARPS, FA_DEC_STAGES);
 * cases: Sq 1 and 4 x 4 heads per KV head, seqlens_k, pages of 16 and 32 in shuffled order, windows, split
 * partials (combined here), row blocks past 16 rows, ALiBi and softcap in the FA_DEC_MODS variants. TAP output. */
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "emu/cuda_common.cuh"
#include "../kernels/decode.cu"

thread_local emu_dim threadIdx, blockIdx;
unsigned char *emu_smem;
emu_warp emu_warps[8];
std::barrier<> *emu_block_bar;

static double rnd(unsigned &s) { s = s * 1664525u + 1013904223u; return (s >> 8) / double(1 << 24) * 2 - 1; }

struct Case { int B, Sq, Hq, Hkv, cap, page, causal, splits, lens, window, wl, wr, alibi; float softcap; };

static int run(const Case &c, unsigned seed) {
  static int n = 0;
  const int D = HEAD_DIM, G = c.Hq / c.Hkv;
  if (c.Hkv % kH) { /* the host gives such a problem one head per block */
    printf("ok %d - Hkv %d with %d heads per block # SKIP\n", ++n, c.Hkv, kH);
    return 0;
  }
  std::vector<fa_elem> q((size_t)c.B * c.Sq * c.Hq * D), o(q.size(), 0xffff);
  const int pages_per = c.page ? c.cap / c.page : 0, npages = c.page ? c.B * pages_per + 2 : 0;
  const size_t kvn = c.page ? (size_t)npages * c.page * c.Hkv * D : (size_t)c.B * c.cap * c.Hkv * D;
  std::vector<fa_elem> k(kvn), v(kvn);
  for (auto &x : q) x = fa_from_float((float)rnd(seed));
  for (auto &x : k) x = fa_from_float((float)rnd(seed));
  for (auto &x : v) x = fa_from_float((float)rnd(seed));
  std::vector<int> table((size_t)c.B * (pages_per ? pages_per : 1)), lens(c.B);
  std::vector<int> perm(npages);
  for (int i = 0; i < npages; i++) perm[i] = i;
  for (int i = npages - 1; i > 0; i--) std::swap(perm[i], perm[(int)((rnd(seed) + 1) / 2 * i)]);
  for (size_t i = 0; i < table.size() && c.page; i++) table[i] = perm[i];
  for (int b = 0; b < c.B; b++) lens[b] = c.lens ? (b == 0 ? c.cap : (int)((rnd(seed) + 1) / 2 * c.cap)) : c.cap;
  std::vector<float> alibi(c.Hq), lse((size_t)c.B * c.Hq * c.Sq, NAN);
  for (auto &x : alibi) x = (float)(rnd(seed) + 1) * 0.1f;
  fa_decode_params a;
  memset(&a, 0, sizeof a);
  a.q = (unsigned long long)q.data(), a.k = (unsigned long long)k.data(), a.v = (unsigned long long)v.data();
  a.o = (unsigned long long)o.data();
  a.q_sh = D, a.q_ss = (long long)c.Hq * D, a.q_sb = (long long)c.Sq * c.Hq * D;
  a.o_sh = a.q_sh, a.o_ss = a.q_ss, a.o_sb = a.q_sb;
  a.k_sh = D, a.k_ss = (long long)c.Hkv * D, a.k_sb = (long long)(c.page ? c.page : c.cap) * c.Hkv * D;
  a.v_sh = a.k_sh, a.v_ss = a.k_ss, a.v_sb = a.k_sb;
  a.has_lse = 1, a.lse = (unsigned long long)lse.data(), a.lse_sb = (long long)c.Hq * c.Sq, a.lse_sh = c.Sq, a.lse_ss = 1;
  if (c.lens) a.has_seqlens = 1, a.seqlens = (unsigned long long)lens.data(), a.sl_s = 1;
  a.page_size = 1, a.num_pages = 1;
  if (c.page) a.paged = 1, a.table = (unsigned long long)table.data(), a.t_sb = pages_per, a.t_sp = 1, a.page_size = c.page, a.num_pages = npages;
  if (c.alibi) a.has_alibi = 1, a.alibi = (unsigned long long)alibi.data(), a.al_sb = 0, a.al_sh = 1;
  a.batch = c.B, a.seqlen_q = c.Sq, a.cap = c.cap, a.heads_q = c.Hq, a.group = G, a.causal = c.causal;
  a.window = c.window, a.wl = c.window ? c.wl : -1, a.wr = c.window ? c.wr : -1;
  a.scale = 1.0f / sqrtf((float)D), a.softcap = c.softcap;
  const int rows_total = c.Sq * G, row_blocks = (rows_total + 15) / 16;
  a.splits = c.splits, a.row_blocks = row_blocks;
  const size_t rows = (size_t)c.B * c.Hq * c.Sq;
  std::vector<float> part_o(c.splits * rows * D, NAN), part_l(c.splits * rows, NAN);
  a.part_o = (unsigned long long)part_o.data(), a.part_lse = (unsigned long long)part_l.data();
  const size_t smem_bytes = kQe * 2 + std::max((size_t)kW * kS * 2 * 16 * (D + 8) * 2, (size_t)kW * 16 * (D + 4) * 4);
  std::vector<unsigned char> smem(smem_bytes + 16);
  emu_smem = smem.data();
  std::barrier<> bb(kW * 32);
  std::vector<std::unique_ptr<std::barrier<>>> wbar;
  for (int w = 0; w < kW; w++) wbar.emplace_back(new std::barrier<>(32)), emu_warps[w].bar = wbar.back().get();
  emu_block_bar = &bb;
  for (int z = 0; z < c.B; z++)
    for (int y = 0; y < c.Hkv / kH; y++)
      for (int x = 0; x < row_blocks * c.splits; x++) {
        memset(smem.data(), 0xff, smem.size()); /* NaN bit patterns: an unwritten stage shows */
        std::vector<std::thread> th;
        for (int t = 0; t < kW * 32; t++)
          th.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {x, y, z}; fa_decode_mma(a); });
        for (auto &t : th) t.join();
      }
  /* reference and, with splits, the host combine */
  double err = 0, nrm = 0, lerr = 0;
  for (int b = 0; b < c.B; b++)
    for (int i = 0; i < c.Sq; i++)
      for (int h = 0; h < c.Hq; h++) {
        const int hk = h / G, len = lens[b];
        int lo, hi;
        fa_dec_row_keys(i, c.Sq, len, c.causal, c.window, a.wl, a.wr, &lo, &hi);
        std::vector<double> s(std::max(hi, 1)), ref(D, 0.0);
        double mx = -INFINITY, sum = 0;
        for (int j = lo; j < hi; j++) {
          const long long ko = fa_dec_key_offset(table.data(), a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, b, j, a.k_sb, a.k_ss) + hk * a.k_sh;
          double dot = 0;
          for (int d = 0; d < D; d++) dot += (double)fa_load(&q[b * a.q_sb + i * a.q_ss + h * a.q_sh + d]) * fa_load(&k[ko + d]);
          dot *= a.scale;
          if (c.softcap > 0) dot = c.softcap * tanh(dot / c.softcap);
          if (c.alibi) dot -= alibi[h] * fabs((double)(i + len - c.Sq - j));
          s[j] = dot, mx = std::max(mx, dot);
        }
        for (int j = lo; j < hi; j++) {
          const long long vo = fa_dec_key_offset(table.data(), a.t_sb, a.t_sp, a.paged, a.page_size, a.num_pages, b, j, a.v_sb, a.v_ss) + hk * a.v_sh;
          const double p = exp(s[j] - mx);
          sum += p;
          for (int d = 0; d < D; d++) ref[d] += p * fa_load(&v[vo + d]);
        }
        const double rl = hi > lo ? mx + log(sum) : -INFINITY;
        double got_l;
        std::vector<double> got(D);
        if (c.splits == 1) {
          for (int d = 0; d < D; d++) got[d] = fa_load(&o[b * a.o_sb + i * a.o_ss + h * a.o_sh + d]);
          got_l = lse[(size_t)b * c.Hq * c.Sq + h * c.Sq + i];
        } else {
          double m2 = -INFINITY, s2 = 0;
          for (int p = 0; p < c.splits; p++) m2 = std::max(m2, (double)part_l[p * rows + ((size_t)b * c.Hq + h) * c.Sq + i]);
          for (int p = 0; p < c.splits; p++) if (m2 > -INFINITY) s2 += exp(part_l[p * rows + ((size_t)b * c.Hq + h) * c.Sq + i] - m2);
          got_l = m2 > -INFINITY ? m2 + log(s2) : -INFINITY;
          for (int d = 0; d < D; d++) {
            double x = 0;
            for (int p = 0; p < c.splits; p++) {
              const size_t r = p * rows + ((size_t)b * c.Hq + h) * c.Sq + i;
              if (part_l[r] > -INFINITY) x += exp(part_l[r] - got_l) * part_o[r * D + d];
            }
            got[d] = x;
          }
        }
        for (int d = 0; d < D; d++) {
          const double r = hi > lo ? ref[d] / sum : 0.0;
          err += (got[d] - r) * (got[d] - r), nrm += r * r;
          if (std::isnan(got[d])) err = INFINITY;
        }
        if (std::isnan(got_l)) lerr = INFINITY;
        else if (!(rl == -INFINITY && got_l == -INFINITY)) lerr = std::max(lerr, fabs(got_l - rl));
      }
  const double rel = sqrt(err / (nrm > 0 ? nrm : 1));
  const int ok = rel < (FA_DTYPE == 2 ? 1e-2 : 2e-3) && lerr < 1e-2;
  printf("%s %d - D%d dtype%d warps%d stages%d heads%d B%d Sq%d Hq%d Hkv%d cap%d page%d causal%d splits%d lens%d win%d(%d,%d) alibi%d softcap%g: rel %.2e lse %.2e\n",
         ok ? "ok" : "not ok", ++n, D, FA_DTYPE, kW, kS, kH, c.B, c.Sq, c.Hq, c.Hkv, c.cap, c.page, c.causal, c.splits, c.lens,
         c.window, c.wl, c.wr, c.alibi, c.softcap, rel, lerr);
  return !ok;
}

int main() {
  const Case cases[] = {
      {1, 1, 4, 1, 100, 0, 0, 1, 0, 0, 0, 0, 0, 0.0f},
      {2, 1, 8, 2, 300, 0, 0, 1, 1, 0, 0, 0, 0, 0.0f},
      {2, 4, 8, 2, 333, 0, 1, 3, 1, 0, 0, 0, 0, 0.0f},
      {2, 4, 8, 2, 320, 16, 1, 2, 1, 0, 0, 0, 0, 0.0f},
      {1, 9, 4, 1, 200, 32, 1, 1, 0, 1, 37, -1, 0, 0.0f},
      {1, 5, 4, 1, 150, 0, 0, 2, 0, 1, 20, 3, FA_DEC_MODS, FA_DEC_MODS ? 5.0f : 0.0f},
      {2, 4, 16, 4, 224, 16, 1, 2, 1, 0, 0, 0, FA_DEC_MODS, 0.0f}, /* 4 KV heads: blocks of 2 or 4 heads */
      {1, 1, 32, 8, 160, 32, 0, 2, 1, 0, 0, 0, 0, 0.0f},          /* 8 KV heads: blocks of up to 8 */
  };
  int bad = 0;
  unsigned seed = 7;
  printf("1..%d\n", (int)(sizeof cases / sizeof cases[0]));
  for (const Case &c : cases) bad += run(c, seed++);
  return bad ? 1 : 0;
}
