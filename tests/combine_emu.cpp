/* kernels/decode.cu's fa_combine kernel (the split decode's merge and fa_combine) run on the host through
 * tests/emu/cuda_common.cuh, against a float64 merge: 1 to 130 parts (some of them -inf), D 8 to 256. TAP. */
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>
#include "emu/cuda_common.cuh"
#include "../kernels/decode.cu"
thread_local emu_dim threadIdx, blockIdx;
unsigned char *emu_smem;
emu_warp emu_warps[8];
std::barrier<> *emu_block_bar;
int main() {
  int bad = 0, n = 0;
  printf("1..20\n");
  for (int parts : {1, 3, 16, 33, 130}) for (int D : {8, 72, 128, 256}) {
    const int B = 2, H = 3, S = 2;
    const size_t rows = B * H * S;
    std::vector<float> op(parts * rows * D), lp(parts * rows);
    unsigned sd = 1;
    auto rnd = [&] { sd = sd * 1664525u + 1013904223u; return (sd >> 8) / float(1 << 24) * 2 - 1; };
    for (auto &x : op) x = rnd();
    for (size_t i = 0; i < lp.size(); i++) lp[i] = (i % 7 == 3) ? -INFINITY : rnd() * 3;
    std::vector<float> o(rows * D, NAN), lse(rows, NAN);
    fa_combine_params a; memset(&a, 0, sizeof a);
    a.op = (unsigned long long)op.data(); a.op_sb = H * S * D; a.op_sh = S * D; a.op_ss = D; a.op_stride = rows * D;
    a.lp = (unsigned long long)lp.data(); a.lp_sb = H * S; a.lp_sh = S; a.lp_ss = 1; a.lp_stride = rows;
    a.o = (unsigned long long)o.data(); a.o_sb = S * H * D; a.o_ss = H * D; a.o_sh = D;
    a.lse = (unsigned long long)lse.data(); a.l_sb = H * S; a.l_sh = S; a.l_ss = 1;
    a.parts = parts; a.head_dim = D; a.seqlen_q = S;
    std::barrier<> bb(128); emu_block_bar = &bb;
    std::vector<std::unique_ptr<std::barrier<>>> wb;
    for (int w = 0; w < 4; w++) wb.emplace_back(new std::barrier<>(32)), emu_warps[w].bar = wb.back().get();
    for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int i = 0; i < S; i++) {
      std::vector<std::thread> th;
      for (int t = 0; t < 128; t++) th.emplace_back([&, t] { threadIdx = {t, 0, 0}; blockIdx = {i, h, b}; fa_combine(a); });
      for (auto &t : th) t.join();
    }
    double err = 0;
    for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int i = 0; i < S; i++) {
      const size_t r = (b * H + h) * S + i;
      double mx = -INFINITY, sum = 0;
      for (int p = 0; p < parts; p++) mx = std::max(mx, (double)lp[p * rows + r]);
      for (int p = 0; p < parts; p++) if (mx > -INFINITY) sum += exp(lp[p * rows + r] - mx);
      const double tot = mx > -INFINITY ? mx + log(sum) : -INFINITY;
      if (!(tot == -INFINITY && lse[r] == -INFINITY)) err = std::max(err, fabs(tot - lse[r]));
      if (std::isnan(lse[r])) err = INFINITY;
      for (int d = 0; d < D; d++) {
        double v = 0;
        for (int p = 0; p < parts; p++) if (lp[p * rows + r] > -INFINITY) v += exp(lp[p * rows + r] - tot) * op[(p * rows + r) * D + d];
        const float got = o[(b * S + i) * H * D + h * D + d];
        err = std::max(err, std::isnan(got) ? INFINITY : fabs(got - v));
      }
    }
    const int ok = err < 1e-4;
    printf("%s %d - combine parts %d D %d: max err %.2e\n", ok ? "ok" : "not ok", ++n, parts, D, err);
    bad += !ok;
  }
  return bad ? 1 : 0;
}
