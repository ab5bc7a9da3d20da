"""ctypes bindings to libflashattn's public C API (include/flashattn.h), and its errors as exceptions."""
import ctypes
import glob
import os

# fa_status values, in the header's order.
STATUS_NAMES = ("FA_SUCCESS", "FA_ERROR_INVALID_ARGUMENT", "FA_ERROR_UNSUPPORTED",
                "FA_ERROR_BACKEND_UNAVAILABLE", "FA_ERROR_OUT_OF_MEMORY", "FA_ERROR_DEVICE",
                "FA_ERROR_KERNEL_BUILD")
SUCCESS, INVALID_ARGUMENT, UNSUPPORTED, BACKEND_UNAVAILABLE = 0, 1, 2, 3
BACKEND_AUTO, BACKEND_CUDA, BACKEND_OPENCL = 0, 1, 2
F32, F16, BF16, U8, I32 = 0, 1, 2, 3, 4
ALGO_FLASH, ALGO_STANDARD = 0, 1


class FlashAttnError(RuntimeError):
    """A call into flashattn failed. `status` is the fa_status name, the message the library's sentence."""

    def __init__(self, status, message):
        self.status = STATUS_NAMES[status] if isinstance(status, int) else status
        super().__init__(f"{message} ({self.status})" if message else self.status)


class ContextOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("backend", ctypes.c_int), ("device", ctypes.c_int),
                ("native_queue", ctypes.c_void_p)]


class Tensor(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("offset", ctypes.c_size_t), ("dtype", ctypes.c_int),
                ("shape", ctypes.c_int64 * 4), ("stride", ctypes.c_int64 * 4)]


class AttentionDesc(ctypes.Structure):
    """fa_attention_desc as include/flashattn.h declares it, every field (tests/struct_layout.c checks the
    offsets); struct_size is set to its sizeof, so the library reads every field."""
    _fields_ = [("struct_size", ctypes.c_size_t), ("algo", ctypes.c_int), ("softmax_scale", ctypes.c_float),
                ("causal", ctypes.c_int), ("deterministic", ctypes.c_int),
                ("block_mask", ctypes.POINTER(Tensor)), ("block_q", ctypes.c_int64),
                ("block_k", ctypes.c_int64), ("dropout_p", ctypes.c_float),
                ("dropout_seed", ctypes.c_uint64), ("dropout_offset", ctypes.c_uint32),
                ("seqlens_k", ctypes.POINTER(Tensor)), ("block_table", ctypes.POINTER(Tensor)),
                ("window", ctypes.c_int), ("window_left", ctypes.c_int64), ("window_right", ctypes.c_int64),
                ("alibi_slopes", ctypes.POINTER(Tensor)), ("softcap", ctypes.c_float),
                ("num_splits", ctypes.c_int), ("trust_indices", ctypes.c_int),
                ("cu_seqlens_q", ctypes.POINTER(Tensor)), ("cu_seqlens_k", ctypes.POINTER(Tensor)),
                ("max_seqlen_q", ctypes.c_int64), ("max_seqlen_k", ctypes.c_int64)]


class DeviceInfo(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("backend", ctypes.c_int), ("device_index", ctypes.c_int),
                ("name", ctypes.c_char * 256), ("platform", ctypes.c_char * 256),
                ("driver_version", ctypes.c_char * 64), ("api_version", ctypes.c_char * 64),
                ("local_mem_bytes", ctypes.c_size_t), ("device_local_mem_bytes", ctypes.c_size_t),
                ("global_mem_bytes", ctypes.c_size_t), ("compute_units", ctypes.c_int),
                ("max_work_group_size", ctypes.c_int), ("compute_capability", ctypes.c_int),
                ("tensor_cores", ctypes.c_int), ("kernels", ctypes.c_char * 512),
                ("kernel_cache", ctypes.c_char * 512), ("events_host_clock", ctypes.c_int)]


def _find_library():
    """FLASHATTN_LIBRARY, else the copy installed inside this package (the wheel), else the system's."""
    path = os.environ.get("FLASHATTN_LIBRARY")
    if path:
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    bundled = sorted(glob.glob(os.path.join(here, "libflashattn.so*")), key=len)
    return bundled[0] if bundled else "libflashattn.so.1"


def _declare(lib):
    P, S, I, VP = ctypes.POINTER, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p
    TP = P(Tensor)
    sigs = {
        "fa_version": (I, []),
        "fa_version_string": (ctypes.c_char_p, []),
        "fa_status_string": (ctypes.c_char_p, [I]),
        "fa_backend_built": (I, [I]),
        "fa_device_count": (I, [I, P(I)]),
        "fa_context_create": (I, [P(ContextOptions), P(VP)]),
        "fa_last_create_error": (ctypes.c_char_p, []),
        "fa_context_destroy": (None, [VP]),
        "fa_context_last_error": (ctypes.c_char_p, [VP]),
        "fa_context_info": (I, [VP, P(DeviceInfo)]),
        "fa_synchronize": (I, [VP]),
        "fa_buffer_create": (I, [VP, S, P(VP)]),
        "fa_buffer_wrap": (I, [VP, VP, S, P(VP)]),
        "fa_buffer_write": (I, [VP, VP, S, VP, S]),
        "fa_buffer_read": (I, [VP, VP, S, VP, S]),
        "fa_buffer_destroy": (None, [VP]),
        "fa_forward": (I, [VP, P(AttentionDesc), TP, TP, TP, TP, TP]),
        "fa_backward": (I, [VP, P(AttentionDesc), TP, TP, TP, TP, TP, TP, TP, TP, TP]),
        "fa_forward_workspace_size": (I, [VP, P(AttentionDesc), TP, TP, TP, TP, TP, P(S)]),
        "fa_kv_append": (I, [VP, TP, TP, TP, TP, TP, TP, I]),
        "fa_combine": (I, [VP, ctypes.c_int64, TP, ctypes.c_int64, TP, ctypes.c_int64, TP, TP]),
        "fa_dropout_mask": (I, [VP, P(AttentionDesc), TP]),
        "fa_context_memory": (I, [VP, P(S), P(S)]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


lib = _declare(ctypes.CDLL(_find_library()))


def check(status, ctx=None):
    """Raise FlashAttnError with the library's sentence unless status is FA_SUCCESS."""
    if status != SUCCESS:
        text = lib.fa_context_last_error(ctx) if ctx else lib.fa_last_create_error()
        raise FlashAttnError(status, text.decode(errors="replace"))
