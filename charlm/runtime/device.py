"""Device selection: auto picks cuda, then mps, then cpu; an explicit device must exist. And the one host-device
sync that timings use."""

from __future__ import annotations

import torch

from charlm.errors import UsageError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"device {name!r} is not valid: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cpu" and device.index not in (None, 0):
        raise UsageError(f"device {name!r} is not valid: there is one cpu device, write cpu")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"device {name} asked for, but no CUDA GPU is visible: use --device cpu or auto")
        if device.index is not None and device.index >= count:
            raise UsageError(f"device {name} asked for, but only {count} CUDA GPU(s) are visible: use cuda:0")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name} asked for, but MPS is not available: use --device cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished the work queued on it, so that a host clock read next is the device's
    time too. A GPU runs behind the host by the batches queued on it; the CPU computes in place (nothing to do)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
