"""The hardware: which device to train on, what it is called, and how much memory a run took."""

from __future__ import annotations

import contextlib
import platform
import sys
import threading

import torch

from mnist_ffn.errors import MnistFfnError, UsageError
from mnist_ffn.messages import shown

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(requested: str) -> torch.device:
    if requested not in DEVICES and not str(requested).startswith("cuda:"):
        raise UsageError(f"device {shown(requested)}: choose one of {', '.join(DEVICES)} (or cuda:N)")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise MnistFfnError(f"--device {requested}: no CUDA device is available to this torch build; use --device cpu")
    if requested.startswith("cuda:"):
        index = requested.partition(":")[2]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise UsageError(
                f"device {shown(requested)}: this machine has CUDA devices 0-{torch.cuda.device_count() - 1}"
            )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise MnistFfnError("--device mps: no Apple GPU is available; use --device cpu")
    return torch.device(requested)


def peak_memory(device: torch.device) -> dict:
    """Peak memory of this process: the CUDA allocator's peak on a GPU, else the peak resident set size."""
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_max_allocated"}
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return {"peak_memory_bytes": None, "peak_memory_kind": "rss"}
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kilobytes
    return {"peak_memory_bytes": max_rss * per_unit, "peak_memory_kind": "rss"}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# torch's global generator is the process's: a run (its initial weights, its dropout masks) draws from it. Held
# while a run of the API or a playground session trains, so that two threads training at once each get the numbers
# their seed gives, as they would one after the other.
GLOBAL_RANDOM = threading.RLock()


@contextlib.contextmanager
def callers_random_state():
    """torch's global random state (the CPU's, and every GPU's once CUDA is in use) as the caller left it, whatever
    the block draws, and the block's draws its own (GLOBAL_RANDOM held): a library call must not change what the
    caller's next random numbers are, nor another thread's run change its own."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with GLOBAL_RANDOM, torch.random.fork_rng(devices=devices):
        yield


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's CPU threads set to `count` for the block (0: left as they are), and the caller's count back after."""
    before = torch.get_num_threads()
    if count and count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
