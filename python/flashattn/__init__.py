"""flashattn: exact attention with the FlashAttention algorithm on CUDA and OpenCL devices, for any array
that speaks DLPack (PyTorch, CuPy, JAX, NumPy), with flash_attn's function signatures."""
from ._lib import FlashAttnError
from ._rng import manual_seed
from .interface import (attention_backward, attention_forward, dropout_keep_mask, flash_attn_combine,
                        flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func, flash_attn_varlen_func,
                        flash_attn_varlen_kvpacked_func, flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)
from . import _context, _lib

__version__ = _lib.lib.fa_version_string().decode()


def memory_stats():
    """{(backend, device, stream): (current_bytes, peak_bytes)} of the library's own device memory
    (workspace, staging buffers) in each context this process has made."""
    return {key: ctx.memory() for key, ctx in _context.cached().items()}


__all__ = ["FlashAttnError", "attention_backward", "attention_forward", "dropout_keep_mask", "flash_attn_combine",
           "flash_attn_func", "flash_attn_kvpacked_func", "flash_attn_qkvpacked_func", "flash_attn_varlen_func",
           "flash_attn_varlen_kvpacked_func", "flash_attn_varlen_qkvpacked_func", "flash_attn_with_kvcache",
           "manual_seed", "memory_stats"]
