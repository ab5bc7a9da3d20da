"""What flashattn needs from an array's own library: outputs of the same kind, and the caller's CUDA stream."""
import contextlib
import sys

from . import _lib


def _torch(x):
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(x, torch.Tensor) else None


def _numpy(x):
    np = sys.modules.get("numpy")
    return np if np is not None and isinstance(x, np.ndarray) else None


def is_torch(x):
    return _torch(x) is not None


def for_dlpack(x):
    """x as its producer will export it: torch refuses to export a tensor that requires grad."""
    return x.detach() if _torch(x) is not None and x.requires_grad else x


def empty(like, shape, dtype=None, fill=None):
    """A contiguous array of like's kind and device (torch, NumPy, CuPy, else through the array API's
    namespace), uninitialised or filled with fill; dtype None: like's, else a name ("float32", "int32", ...)."""
    torch = _torch(like)
    if torch is not None:
        dt = getattr(torch, dtype) if dtype else like.dtype
        if fill is None:
            return torch.empty(shape, dtype=dt, device=like.device)
        return torch.full(shape, fill, dtype=dt, device=like.device)
    np = _numpy(like)
    if np is not None:
        return np.empty(shape, dtype=dtype or like.dtype) if fill is None else np.full(shape, fill, dtype or like.dtype)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        with like.device:
            if fill is None:
                return cupy.empty(shape, dtype=dtype or like.dtype)
            return cupy.full(shape, fill, dtype=dtype or like.dtype)
    if hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        dt = getattr(xp, dtype) if dtype else like.dtype
        if fill is None:
            return xp.empty(shape, dtype=dt, device=like.device)
        return xp.full(shape, fill, dtype=dt, device=like.device)
    raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                              f"q: cannot make outputs like a {type(like).__name__} (not a torch, NumPy or CuPy "
                              "array, and no __array_namespace__)")


def dtype_name(dtype):
    """"float16" for torch.float16, numpy.float16, numpy.dtype("float16") or "float16"; None stays None."""
    if dtype is None or isinstance(dtype, str):
        return dtype
    return getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1]


def cuda_stream(x):
    """The stream the caller's library would run x's next operation on: torch's or CuPy's current stream, else
    0 (the legacy default stream)."""
    torch = _torch(x)
    if torch is not None:
        return torch.cuda.current_stream(x.device).cuda_stream
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.cuda.get_current_stream().ptr
    return 0


def device_scope(x):
    """Make x's CUDA device current while its arrays are exported: torch exports only from the current device."""
    torch = _torch(x)
    if torch is not None and x.device.type == "cuda":
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()
