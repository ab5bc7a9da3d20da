/* flashattn-info: the backends built in, their devices, on-chip memory and the tiles chosen. */
#include <stdio.h>
#include <stdlib.h>

#include "flashattn.h"

static void show_tiles(fa_context *ctx) {
  static const int dims[] = {64, 128, 256};
  static const fa_dtype dtypes[] = {FA_F32, FA_F16};
  for (size_t t = 0; t < sizeof dtypes / sizeof *dtypes; t++) {
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) {
      fa_tiles tiles;
      fa_status st = fa_context_tiles(ctx, dims[i], dtypes[t], &tiles);
      if (st == FA_SUCCESS)
        printf("      %-4s d=%-3d  Br=%-3d Bc=%-3d threads=%-4d local=%zu bytes\n", fa_dtype_name(dtypes[t]), dims[i],
               tiles.block_q, tiles.block_k, tiles.threads, tiles.local_mem_bytes);
      else
        printf("      %-4s d=%-3d  %s: %s\n", fa_dtype_name(dtypes[t]), dims[i], fa_status_string(st),
               fa_context_last_error(ctx));
    }
  }
}

static void show_device(fa_backend b, int index) {
  fa_context_options opt;
  fa_context_options_default(&opt);
  opt.backend = b;
  opt.device = index;
  fa_context *ctx;
  fa_status st = fa_context_create(&opt, &ctx);
  if (st != FA_SUCCESS) {
    printf("  [%d] %s: %s\n", index, fa_status_string(st), fa_last_create_error());
    return;
  }
  fa_device_info info;
  fa_device_info_init(&info);
  fa_context_info(ctx, &info);
  printf("  [%d] %s\n", index, info.name);
  printf("      platform: %s; driver %s; %s\n", info.platform, info.driver_version, info.api_version);
  printf("      compute units: %d, max group: %d, global memory: %.1f GiB\n", info.compute_units,
         info.max_work_group_size, (double)info.global_mem_bytes / (1 << 30));
  printf("      on-chip memory: %zu bytes reported, tiles sized for %zu%s\n", info.device_local_mem_bytes,
         info.local_mem_bytes, info.tensor_cores ? "; tensor cores" : "");
  if (info.kernels[0]) printf("      kernels: %s\n", info.kernels);
  printf("      kernel cache: %s\n", info.kernel_cache);
  show_tiles(ctx);
  fa_context_destroy(ctx);
}

int main(int argc, char **argv) {
  if (argc > 1) {
    printf("usage: %s\nLists the backends built into flashattn %s, their devices and the tiles chosen.\n"
           "Environment: FLASHATTN_LOCAL_MEM_BYTES lowers the on-chip budget.\n",
           argv[0], fa_version_string());
    return 0;
  }
  printf("flashattn %s\n", fa_version_string());
  const fa_backend backends[] = {FA_BACKEND_CUDA, FA_BACKEND_OPENCL};
  for (int i = 0; i < 2; i++) {
    fa_backend b = backends[i];
    if (!fa_backend_built(b)) {
      printf("%s: not built in\n", fa_backend_name(b));
      continue;
    }
    int n = 0;
    fa_status st = fa_device_count(b, &n);
    if (st != FA_SUCCESS) {
      /* A context attempt gives the sentence saying why. */
      fa_context_options opt;
      fa_context_options_default(&opt);
      opt.backend = b;
      fa_context *ctx = NULL;
      fa_context_create(&opt, &ctx);
      fa_context_destroy(ctx);
      /* The sentence repeats "<backend> backend unavailable: ", which this line already says. */
      const char *why = fa_last_create_error();
      char prefix[64];
      snprintf(prefix, sizeof prefix, "%s backend unavailable: ", fa_backend_name(b));
      if (strncmp(why, prefix, strlen(prefix)) == 0) why += strlen(prefix);
      printf("%s: unavailable: %s\n", fa_backend_name(b), why);
      continue;
    }
    printf("%s: %d device%s\n", fa_backend_name(b), n, n == 1 ? "" : "s");
    for (int d = 0; d < n; d++) show_device(b, d);
  }
  return 0;
}
