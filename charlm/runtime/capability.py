"""What this machine computes natively, and the training precision `train.precision: auto` resolves to.

    auto ─► cuda: bf16 where the GPU has it (Ampere and later), else fp16 with loss scaling (T4, V100)
            cpu:  bf16 with AVX-512 BF16 or AMX, else fp32 (emulated bf16 is slower than fp32)
            mps and anything else: fp32 (autocast there is unmeasured by charlm: ask for bf16/fp16 to try it)

Training resolves it once, at its start (training/setup.py), and `charlm doctor` reads the same functions.
Nothing here imports torch at the top: `cpu_flags` and the module itself stay cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "fp16")  # what autocast computes in; weights, optimizer and loss stay fp32
REQUESTS = ("auto", *PRECISIONS)  # what train.precision may ask for
CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo's names for the units that compute each format natively (the fallback to torch's own query)
NATIVE_FLAGS = {"bf16": frozenset({"avx512_bf16", "amx_bf16"}), "fp16": frozenset({"avx512_fp16", "amx_fp16"})}


@dataclass(frozen=True)
class Precision:
    """A resolved training precision and, for the user, why it was chosen."""

    name: str  # fp32 | bf16 | fp16
    reason: str
    asked: bool = True  # False: auto chose it (never a format the device only emulates)

    @property
    def scaled(self) -> bool:
        """fp16 needs loss scaling: its 5-bit exponent flushes small gradients to zero."""
        return self.name == "fp16"


def cpu_flags(path: Path | None = None) -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo (or `path`) lists them (Linux); empty where there is no such file."""
    try:
        text = Path(path or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, arm64
            return frozenset(value.split())
    return frozenset()


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), as PyTorch's own query says
    (/proc/cpuinfo's flags where this torch has none)."""
    import torch

    queries = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(query) for query in queries):
        return any(query() for query in queries)
    return bool(NATIVE_FLAGS["bf16"] & cpu_flags())


def cpu_fp16_native() -> bool:
    """Whether this CPU computes fp16 in hardware (AMX-FP16, AVX-512 FP16)."""
    import torch

    query = getattr(torch.cpu, "_is_amx_fp16_supported", None)
    if callable(query) and query():
        return True
    return bool(NATIVE_FLAGS["fp16"] & cpu_flags())


def cuda_bf16_native() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (compute capability 8.0 and later), not emulated."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def native(precision: str, device_type: str) -> bool:
    """Whether `device_type` computes `precision` natively (fp32 always; else as the functions above say)."""
    if precision == "fp32":
        return True
    if device_type == "cpu":
        return cpu_bf16_native() if precision == "bf16" else cpu_fp16_native()
    if device_type == "cuda":
        return cuda_bf16_native() if precision == "bf16" else True  # every CUDA GPU has fp16 units
    return False  # mps: unmeasured


def resolve_precision(requested: str, device_type: str) -> Precision:
    """The precision a run on `device_type` trains in: `requested` itself unless it is auto (see the top)."""
    if requested not in REQUESTS:
        raise ValueError(f"unknown precision {requested!r}: one of {', '.join(REQUESTS)}")
    if requested != "auto":
        return Precision(requested, f"train.precision={requested} as asked")
    if device_type == "cuda":
        if cuda_bf16_native():
            return Precision("bf16", "auto: this GPU computes bf16 natively", asked=False)
        return Precision("fp16", "auto: this GPU has no native bf16, so fp16 with loss scaling", asked=False)
    if device_type == "cpu":
        if cpu_bf16_native():
            return Precision("bf16", "auto: this CPU computes bf16 natively (AVX-512 BF16 or AMX)", asked=False)
        return Precision(
            "fp32",
            "auto: this CPU has no native bf16 (AVX-512 BF16 or AMX), where bf16 would be slower than fp32",
            asked=False,
        )
    return Precision(
        "fp32",
        f"auto: fp32 on {device_type} (mixed precision there is unmeasured; set "
        "train.precision=bf16 or fp16 to try it)",
        asked=False,
    )


def autocast_dtype(precision: str):
    """The torch dtype autocast computes in for `precision`; None for fp32 (no autocast)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def cpu_fp16_kernel(kind: str) -> bool:
    """Whether this torch's CPU runs a recurrent layer of `kind` (rnn_tanh | rnn_relu | lstm | gru) under float16
    autocast, forward and backward: oneDNN has no float16 LSTM on most CPUs (it raises), so this is tried on a
    tiny layer rather than assumed."""
    return _cpu_autocast_kernel(kind, "fp16")


def cpu_bf16_kernel(kind: str) -> bool:
    """The same for bfloat16: oneDNN's bf16 LSTM needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, which an
    AVX2-only CPU lacks (it raises there)."""
    return _cpu_autocast_kernel(kind, "bf16")


def _cpu_autocast_kernel(kind: str, precision: str) -> bool:
    import torch
    from torch import nn

    layer = nn.LSTM(4, 4) if kind == "lstm" else nn.GRU(4, 4) if kind == "gru" else nn.RNN(4, 4)
    try:
        with torch.autocast("cpu", dtype=autocast_dtype(precision)):
            out, _ = layer(torch.zeros(2, 1, 4))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def onednn_bf16_matmul() -> bool:
    """Whether oneDNN packs and multiplies bf16 weights on this CPU (the same AVX-512 or AVX-NE-CONVERT need):
    tried on a 1x1 weight rather than assumed."""
    import torch

    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(1, 1, dtype=torch.bfloat16), 1)
    except RuntimeError:
        return False
    return True
