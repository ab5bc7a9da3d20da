"""flashattn contexts, made once per (backend, device, stream) and kept, and the binding of array views to
device buffers for one call: CUDA memory is wrapped in place, host memory is staged through OpenCL buffers."""
import atexit
import ctypes
import threading

from . import _lib
from ._dlpack import ELEMENT_SIZE

CU_STREAM_LEGACY = 1  # the legacy default stream's handle, which is what a stream pointer of 0 means


class Context:
    """One fa_context and the lock that keeps it to one thread at a time (the library's rule)."""

    def __init__(self, backend, device, stream):
        opt = _lib.ContextOptions(ctypes.sizeof(_lib.ContextOptions), backend, device, stream or None)
        handle = ctypes.c_void_p()
        _lib.check(_lib.lib.fa_context_create(ctypes.byref(opt), ctypes.byref(handle)))
        self.handle = handle
        self.lock = threading.Lock()

    def check(self, status):
        _lib.check(status, self.handle)

    def info(self):
        info = _lib.DeviceInfo()
        info.struct_size = ctypes.sizeof(info)
        self.check(_lib.lib.fa_context_info(self.handle, ctypes.byref(info)))
        return info

    def memory(self):
        cur, peak = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(_lib.lib.fa_context_memory(self.handle, ctypes.byref(cur), ctypes.byref(peak)))
        return cur.value, peak.value


_contexts = {}
_contexts_lock = threading.Lock()


def get(backend, device, stream=None):
    """The cached context for a CUDA device and stream (stream 0 is the legacy default stream), or for
    the OpenCL device that FLASHATTN_DEVICE picks (device -1)."""
    if backend == _lib.BACKEND_CUDA and not stream:
        stream = CU_STREAM_LEGACY
    key = (backend, device, stream)
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = Context(backend, device, stream)
        return ctx


def cached():
    """The contexts made so far, keyed by (backend, device, stream)."""
    with _contexts_lock:
        return dict(_contexts)


@atexit.register
def _destroy_all():
    with _contexts_lock:
        for ctx in _contexts.values():
            _lib.lib.fa_context_destroy(ctx.handle)
        _contexts.clear()


class Binding:
    """Device buffers for the views of one call, as fa_tensor structs.

    Views whose memory overlaps (q, k and v of one packed qkv) share one buffer, so a packed array is wrapped
    or copied once and an output's neighbours round-trip unchanged. Host memory is copied in before the call
    (outputs too, for that reason) and outputs are copied back by finish(); CUDA memory is wrapped, no copy.
    partial names the outputs that the call writes only in part (a KV cache it appends to, varlen rows
    outside every sequence): they are copied in even when nothing else shares their memory.
    """

    def __init__(self, ctx, views, outputs, partial=()):
        self.ctx, self.buffers, self.tensors, self._readback = ctx, [], {}, []
        self.views = {v.name: v for v in views}
        on_cuda = views[0].on_cuda
        try:
            for group in _overlapping(views):
                lo = min(v.span()[0] for v in group)
                hi = max(v.span()[1] for v in group)
                # A lone output that fills its span is written whole by the call: nothing to copy in.
                v0 = group[0]
                whole_output = len(group) == 1 and v0.name in outputs and v0.name not in partial and v0.dense()
                buf = self._buffer(lo, max(hi - lo, 1), on_cuda, not whole_output)
                if not on_cuda and any(v.name in outputs for v in group):
                    self._readback.append((buf, lo, hi - lo))
                for v in group:
                    self.tensors[v.name] = _tensor(buf, v.ptr - lo, v)
        except BaseException:
            self.release()
            raise

    def _buffer(self, lo, nbytes, on_cuda, copy_in):
        h, lib = ctypes.c_void_p(), _lib.lib
        if on_cuda:
            self.ctx.check(lib.fa_buffer_wrap(self.ctx.handle, lo, nbytes, ctypes.byref(h)))
            self.buffers.append(h)
        else:
            self.ctx.check(lib.fa_buffer_create(self.ctx.handle, nbytes, ctypes.byref(h)))
            self.buffers.append(h)
            if lo and copy_in:
                self.ctx.check(lib.fa_buffer_write(self.ctx.handle, h, 0, lo, nbytes))
        return h

    def get(self, name):
        """A pointer to the fa_tensor of a view (for a call's argument), or None when the view is absent."""
        t = self.tensors.get(name)
        return ctypes.byref(t) if t is not None else None

    def pointer(self, name):
        """The same as a pointer object, for a struct's field."""
        t = self.tensors.get(name)
        return ctypes.pointer(t) if t is not None else None

    def finish(self):
        """Copy host outputs back (blocking), then free the buffers."""
        try:
            for buf, lo, nbytes in self._readback:
                if nbytes:
                    self.ctx.check(_lib.lib.fa_buffer_read(self.ctx.handle, buf, 0, lo, nbytes))
        finally:
            self.release()

    def release(self):
        for h in self.buffers:
            _lib.lib.fa_buffer_destroy(h)
        self.buffers = []


def _overlapping(views):
    """Views grouped so that each group's memory spans overlap and different groups' do not."""
    groups = []
    for v in sorted(views, key=lambda v: v.span()[0]):
        lo, hi = v.span()
        if groups and lo < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], hi)
            groups[-1][2].append(v)
        else:
            groups.append([lo, hi, [v]])
    return [g[2] for g in groups]


def _tensor(buf, offset, v):
    """The fa_tensor of a view; views of fewer than 4 dimensions (lse, indices, slopes) get the header's
    trailing dimensions of 1. A stack of parts (name *_partial, for fa_combine) gives its part 0."""
    shape, strides = list(v.shape), list(v.strides)
    if v.name.endswith("_partial"):
        shape, strides = shape[1:], strides[1:]
    while len(shape) < 4:
        shape.append(1)
        strides.append(1)
    return _lib.Tensor(buf.value, offset, v.dtype, (ctypes.c_int64 * 4)(*shape), (ctypes.c_int64 * 4)(*strides))
