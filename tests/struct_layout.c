/* Prints the public structs' layout as this compiler lays out include/flashattn.h: one line per field,
 * "struct field offset size", then "struct sizeof size". The Python package's ctypes mirror of the header
 * (python/flashattn/_lib.py) is checked against it by python/tests/test_layout.py. */
#include <stddef.h>
#include <stdio.h>

#include "flashattn.h"

#define FIELD(type, field) \
  printf("%s %s %zu %zu\n", #type, #field, offsetof(type, field), sizeof(((type *)0)->field))
#define SIZE(type) printf("%s sizeof 0 %zu\n", #type, sizeof(type))

int main(void) {
  FIELD(fa_context_options, struct_size);
  FIELD(fa_context_options, backend);
  FIELD(fa_context_options, device);
  FIELD(fa_context_options, native_queue);
  SIZE(fa_context_options);

  FIELD(fa_tensor, buf);
  FIELD(fa_tensor, offset);
  FIELD(fa_tensor, dtype);
  FIELD(fa_tensor, shape);
  FIELD(fa_tensor, stride);
  SIZE(fa_tensor);

  FIELD(fa_attention_desc, struct_size);
  FIELD(fa_attention_desc, algo);
  FIELD(fa_attention_desc, softmax_scale);
  FIELD(fa_attention_desc, causal);
  FIELD(fa_attention_desc, deterministic);
  FIELD(fa_attention_desc, block_mask);
  FIELD(fa_attention_desc, block_q);
  FIELD(fa_attention_desc, block_k);
  FIELD(fa_attention_desc, dropout_p);
  FIELD(fa_attention_desc, dropout_seed);
  FIELD(fa_attention_desc, dropout_offset);
  FIELD(fa_attention_desc, seqlens_k);
  FIELD(fa_attention_desc, block_table);
  FIELD(fa_attention_desc, window);
  FIELD(fa_attention_desc, window_left);
  FIELD(fa_attention_desc, window_right);
  FIELD(fa_attention_desc, alibi_slopes);
  FIELD(fa_attention_desc, softcap);
  FIELD(fa_attention_desc, num_splits);
  FIELD(fa_attention_desc, trust_indices);
  FIELD(fa_attention_desc, cu_seqlens_q);
  FIELD(fa_attention_desc, cu_seqlens_k);
  FIELD(fa_attention_desc, max_seqlen_q);
  FIELD(fa_attention_desc, max_seqlen_k);
  SIZE(fa_attention_desc);

  FIELD(fa_device_info, struct_size);
  FIELD(fa_device_info, backend);
  FIELD(fa_device_info, device_index);
  FIELD(fa_device_info, name);
  FIELD(fa_device_info, platform);
  FIELD(fa_device_info, driver_version);
  FIELD(fa_device_info, api_version);
  FIELD(fa_device_info, local_mem_bytes);
  FIELD(fa_device_info, device_local_mem_bytes);
  FIELD(fa_device_info, global_mem_bytes);
  FIELD(fa_device_info, compute_units);
  FIELD(fa_device_info, max_work_group_size);
  FIELD(fa_device_info, compute_capability);
  FIELD(fa_device_info, tensor_cores);
  FIELD(fa_device_info, kernels);
  FIELD(fa_device_info, kernel_cache);
  FIELD(fa_device_info, events_host_clock);
  SIZE(fa_device_info);
  return 0;
}
