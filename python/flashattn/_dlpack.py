"""Read an array's memory through DLPack without a copy: pointer, device, dtype, shape, strides.

The capsule is kept on the View so the producer's memory stays alive while flashattn uses it; the capsule
is not consumed (renamed), so its destructor hands the tensor back to the producer when the View goes.
"""
import ctypes
import dataclasses
from dataclasses import dataclass

from . import _lib

CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
HOST_DEVICES = (CPU, CUDA_HOST)
CUDA_DEVICES = (CUDA, CUDA_MANAGED)
_DEVICE_NAMES = {1: "cpu", 2: "cuda", 3: "cuda_host", 4: "opencl", 7: "vulkan", 8: "metal", 10: "rocm",
                 13: "cuda_managed", 14: "oneapi"}
# (type code, bits) -> fa_dtype; lanes must be 1.
_DTYPES = {(2, 32): _lib.F32, (2, 16): _lib.F16, (4, 16): _lib.BF16, (1, 8): _lib.U8, (0, 32): _lib.I32}
DTYPE_NAMES = {_lib.F32: "float32", _lib.F16: "float16", _lib.BF16: "bfloat16", _lib.U8: "uint8", _lib.I32: "int32"}
ELEMENT_SIZE = {_lib.F32: 4, _lib.F16: 2, _lib.BF16: 2, _lib.U8: 1, _lib.I32: 4}


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int32), ("dtype", _DataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class _ManagedVersioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY

_api = ctypes.pythonapi
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass
class View:
    """One array's memory as flashattn sees it. Strides are in elements; ptr includes the byte offset."""
    name: str
    ptr: int
    device_type: int
    device_id: int
    dtype: int
    shape: tuple
    strides: tuple
    read_only: bool
    capsule: object

    @property
    def on_cuda(self):
        return self.device_type in CUDA_DEVICES

    def dense(self):
        """Whether the view's elements fill its span with no gaps."""
        lo, hi = self.span()
        n = 1
        for d in self.shape:
            n *= d
        return hi - lo == n * ELEMENT_SIZE[self.dtype]

    def lead(self, n):
        """The view with n leading dimensions of size 1 (their stride steps past the whole span)."""
        if not n:
            return self
        step = (self.span()[1] - self.ptr) // ELEMENT_SIZE[self.dtype] or 1
        return dataclasses.replace(self, shape=(1,) * n + self.shape, strides=(step,) * n + self.strides)

    def permute(self, axes):
        """The view with its dimensions in the order axes gives (no data moves)."""
        return dataclasses.replace(self, shape=tuple(self.shape[a] for a in axes),
                                   strides=tuple(self.strides[a] for a in axes))

    def span(self):
        """[first byte, one past the last byte) that the view can touch."""
        size = ELEMENT_SIZE[self.dtype]
        if any(n == 0 for n in self.shape):
            return self.ptr, self.ptr
        last = sum((n - 1) * s for n, s in zip(self.shape, self.strides))
        return self.ptr, self.ptr + (last + 1) * size


def device_name(device_type):
    return _DEVICE_NAMES.get(device_type, f"DLPack device type {device_type}")


def _fail(name, sentence):
    raise _lib.FlashAttnError(_lib.INVALID_ARGUMENT, f"{name}: {sentence}")


def device_of(x, name):
    """(device_type, device_id) of an array, before any capsule is made."""
    if not hasattr(x, "__dlpack_device__"):
        _fail(name, f"a {type(x).__name__} does not speak DLPack (no __dlpack_device__)")
    dev_type, dev_id = x.__dlpack_device__()
    return int(dev_type), int(dev_id)


def _capsule(x, stream):
    kwargs = {} if stream is None else {"stream": stream}
    try:
        return x.__dlpack__(max_version=(1, 0), **kwargs)
    except TypeError:  # a producer older than DLPack 1.0 takes no max_version
        return x.__dlpack__(**kwargs)


def view(x, name, stream=None):
    """Import x (anything with __dlpack__) as a View. stream: the consumer's CUDA stream, for CUDA arrays."""
    if not hasattr(x, "__dlpack__"):
        _fail(name, f"a {type(x).__name__} does not speak DLPack (no __dlpack__)")
    try:
        cap = _capsule(x, stream)
    except BufferError as e:  # the producer refuses to export (torch: a tensor on another device than current)
        _fail(name, f"cannot be read through DLPack: {e}")
    if _api.PyCapsule_IsValid(cap, b"dltensor_versioned"):
        managed = _ManagedVersioned.from_address(_api.PyCapsule_GetPointer(cap, b"dltensor_versioned"))
        read_only = bool(managed.flags & _READ_ONLY)
    elif _api.PyCapsule_IsValid(cap, b"dltensor"):
        managed = _Managed.from_address(_api.PyCapsule_GetPointer(cap, b"dltensor"))
        read_only = False
    else:
        _fail(name, "__dlpack__ returned something that is not an unused DLPack capsule")
    t = managed.dl_tensor
    dt, dev, n = t.dtype, t.device, t.ndim
    key = (dt.code, dt.bits)
    if key not in _DTYPES or dt.lanes != 1:
        kind = {0: "int", 1: "uint", 2: "float", 4: "bfloat", 5: "complex", 6: "bool"}.get(dt.code, "code ")
        lanes = f"x{dt.lanes}" if dt.lanes != 1 else ""
        _fail(name, f"dtype {kind}{dt.bits}{lanes} is not float32, float16, bfloat16, uint8 or int32")
    shape = tuple(t.shape[:n])
    if t.strides:
        strides = tuple(t.strides[:n])
    else:  # NULL strides: compact row-major
        strides, acc = [], 1
        for size in reversed(shape):
            strides.insert(0, acc)
            acc *= size
        strides = tuple(strides)
    return View(name, (t.data or 0) + t.byte_offset, dev.device_type, dev.device_id, _DTYPES[key], shape, strides,
                read_only, cap)
