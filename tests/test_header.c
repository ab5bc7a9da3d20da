/* flashattn.h on its own compiles as C (tests/meson.build adds strict warnings as errors), and its
 * declarations link against the library. Prints TAP. */
#include "flashattn.h"

#include <stdio.h>

int main(void) {
  fa_context_options opt;
  fa_context_options_default(&opt);
  fa_attention_desc desc = {.algo = FA_ALGO_FLASH, .dropout_p = 0.0f};
  int ok = opt.backend == FA_BACKEND_AUTO && desc.algo == FA_ALGO_FLASH && fa_version() > 0 &&
           FA_MAX_HEAD_DIM == 256;
  printf("1..1\n%s 1 - flashattn.h compiles alone as C and links\n", ok ? "ok" : "not ok");
  return ok ? 0 : 1;
}
