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


def empty(like, shape, dtype=None):
    """An uninitialised contiguous array of like's kind and device (torch, NumPy, CuPy, else through the array
    API's namespace); dtype None: like's, else "float32" or "uint8"."""
    torch = _torch(like)
    if torch is not None:
        return torch.empty(shape, dtype=getattr(torch, dtype) if dtype else like.dtype, device=like.device)
    np = _numpy(like)
    if np is not None:
        return np.empty(shape, dtype=dtype or like.dtype)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(like, cupy.ndarray):
        with like.device:
            return cupy.empty(shape, dtype=dtype or like.dtype)
    if hasattr(like, "__array_namespace__"):
        xp = like.__array_namespace__()
        return xp.empty(shape, dtype=getattr(xp, dtype) if dtype else like.dtype, device=like.device)
    raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT,
                              f"q: cannot make outputs like a {type(like).__name__} (not a torch, NumPy or CuPy "
                              "array, and no __array_namespace__)")


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
