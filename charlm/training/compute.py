"""How a run computes: train.precision resolved for the device (and what it cannot speed up there), and
train.deterministic's algorithms (PyTorch's, with the fixed cuBLAS workspace they need on CUDA)."""

from __future__ import annotations

import contextlib
import os

import torch

from charlm.config import Config
from charlm.errors import UsageError
from charlm.runtime import capability

CUBLAS_WORKSPACE = ":4096:8"  # PyTorch's reproducibility notes: cuBLAS is deterministic with a fixed workspace


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: str):
    """train.deterministic: PyTorch's deterministic algorithms for the run (restored afterwards), and on CUDA the
    fixed cuBLAS workspace they need. cuBLAS reads CUBLAS_WORKSPACE_CONFIG once per process, at its first use,
    so it is set here (unless set already) before any CUDA work, and left set. Off: nothing is touched."""
    if not enabled:
        yield
        return
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_initialized() and device != "cpu":
            raise UsageError(
                "train.deterministic needs CUBLAS_WORKSPACE_CONFIG set before this process first uses "
                f"CUDA: export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}, or train in a new process"
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def resolved_precision(config: Config, device: torch.device) -> capability.Precision:
    """train.precision on this device (auto resolved); fp16 refused where the CPU has no float16 kernel."""
    precision = capability.resolve_precision(config.train.precision, device.type)
    kind = config.model.kind
    if precision.name == "fp16" and device.type == "cpu" and not capability.cpu_fp16_kernel(kind):
        raise UsageError(
            f"train.precision=fp16: PyTorch has no float16 {kind} kernel on this CPU: use "
            "train.precision=auto (or fp32, bf16) on the CPU; fp16 is for GPUs without bf16"
        )
    if precision.name == "bf16" and device.type == "cpu" and not capability.cpu_bf16_kernel(kind):
        raise UsageError(
            f"train.precision=bf16: PyTorch has no bfloat16 {kind} kernel on this CPU (oneDNN's needs AVX-512): "
            "use train.precision=auto (or fp32) here"
        )
    return precision


NATIVE_UNITS = {"bf16": "AVX-512 BF16 or AMX", "fp16": "AMX-FP16 or AVX-512 FP16"}  # on a CPU


def precision_warnings(precision: capability.Precision, kind: str, device: torch.device) -> list[str]:
    """What an asked-for precision cannot speed up here: a format this device only emulates, or a CPU GRU in
    bf16 (auto picks neither warning's case: bf16 pays for a GRU's head)."""
    name = precision.name
    if not precision.asked or name == "fp32" or device.type not in ("cpu", "cuda"):
        return []
    if not capability.native(name, device.type):
        where, units = ("CPU", NATIVE_UNITS[name]) if device.type == "cpu" else ("GPU", "compute capability 8.0+")
        return [
            f"train.precision={name}: this {where} has no native {name} arithmetic ({units}), so {name} runs "
            "slower than fp32 here: set train.precision=auto"
        ]
    if name == "bf16" and device.type == "cpu" and kind == "gru":
        return ["train.precision=bf16: PyTorch's CPU GRU has no bf16 kernel, so only the output head runs in bf16"]
    return []
