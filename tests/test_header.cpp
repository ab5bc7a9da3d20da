// flashattn.h on its own compiles as C++ (extern "C" linkage, no C-only constructs), and links.
#include "flashattn.h"

#include <cstdio>

int main() {
  fa_context_options opt;
  fa_context_options_default(&opt);
  fa_tensor t = {};
  fa_tensor_packed(&t, nullptr, 0, FA_F16, 1, 2, 3, 8);
  bool ok = opt.device == -1 && t.stride[1] == 24 && fa_dtype_size(FA_BF16) == 2;
  std::printf("1..1\n%s 1 - flashattn.h compiles alone as C++ and links\n", ok ? "ok" : "not ok");
  return ok ? 0 : 1;
}
