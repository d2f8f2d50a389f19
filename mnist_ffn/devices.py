"""The hardware: which device to train on, what it is called, and how much memory a run took."""

from __future__ import annotations

import platform
import sys

import torch

from mnist_ffn.errors import MnistFfnError


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise MnistFfnError("--device cuda: no CUDA device is available to this torch build; use --device cpu")
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
