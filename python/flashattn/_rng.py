"""Dropout's (seed, offset), taken from the caller's random state and advancing it, so that repeated calls
drop different probabilities and a replay after the same manual_seed drops the same ones.

Torch tensors use torch's generator of their device: on CUDA the Philox (seed, offset) pair that
torch's own dropout uses, advanced like it; on the CPU a seed drawn from the CPU generator. Other arrays
use this module's state, which manual_seed() sets.
"""
import os
import sys
import threading

# Generator offset units one call takes: torch's CUDA Philox offsets advance in multiples of 4.
_CUDA_OFFSET_STEP = 4

_lock = threading.Lock()
_state = {"seed": int.from_bytes(os.urandom(8), "little"), "offset": 0}


def manual_seed(seed):
    """Seed the dropout of non-torch arrays (NumPy, CuPy, ...); torch tensors follow torch.manual_seed."""
    with _lock:
        _state["seed"], _state["offset"] = int(seed) & 0xFFFFFFFFFFFFFFFF, 0


def get_state():
    """(seed, offset) the next non-torch call will use."""
    with _lock:
        return _state["seed"], _state["offset"]


def take(x):
    """(seed, offset) for one dropout call on x's device, advancing the generator it came from."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return _take_torch(torch, x.device)
    with _lock:
        seed, offset = _state["seed"], _state["offset"]
        _state["offset"] = (offset + 1) & 0xFFFFFFFF
        return seed, offset


def _take_torch(torch, device):
    if device.type == "cuda":
        gen = torch.cuda.default_generators[device.index if device.index is not None else
                                            torch.cuda.current_device()]
        try:
            offset = gen.get_offset()
        except (AttributeError, RuntimeError):  # a torch without Philox offsets: draw a seed (this syncs)
            return int(torch.randint(0, 2 ** 63 - 1, (), generator=gen, device=device)), 0
        gen.set_offset(offset + _CUDA_OFFSET_STEP)
        return gen.initial_seed(), offset // _CUDA_OFFSET_STEP
    seed = torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64, generator=torch.default_generator)
    return int(seed), 0
