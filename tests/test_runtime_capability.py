"""capability: the CPU's flags, what a device computes natively, and what train.precision=auto resolves to.
Every feature is monkeypatched: no test depends on this machine's CPU or GPU."""

from __future__ import annotations

import pytest
import torch

from charlm.runtime import capability
from charlm.runtime.capability import Precision, resolve_precision

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 vaes
bogomips\t: 4890.85
"""
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes bf16 i8mm\nCPU implementer\t: 0x41\n"


def test_cpu_flags_reads_x86_and_arm_cpuinfo_and_is_empty_without_one(tmp_path):
    (tmp_path / "x86").write_text(X86)
    (tmp_path / "arm").write_text(ARM)
    assert {"avx2", "avx512_bf16"} <= capability.cpu_flags(tmp_path / "x86")
    assert "bogomips" not in capability.cpu_flags(tmp_path / "x86")
    assert "i8mm" in capability.cpu_flags(tmp_path / "arm")
    assert capability.cpu_flags(tmp_path / "absent") == frozenset()  # macOS, Windows


def without_torch_queries(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_amx_fp16_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_cpu_bf16_native_asks_torch(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(capability, "CPUINFO", "/nonexistent")  # torch's answer alone decides
    assert capability.cpu_bf16_native() is native


@pytest.mark.parametrize(
    ("flags", "bf16", "fp16"),
    [
        ("avx2 avx512_bf16", True, False),
        ("amx_bf16 amx_fp16", True, True),
        ("avx2 avx512_fp16", False, True),
        ("avx2 fma", False, False),
    ],
)
def test_without_torch_queries_the_cpuinfo_flags_decide(tmp_path, monkeypatch, flags, bf16, fp16):
    without_torch_queries(monkeypatch)
    (tmp_path / "cpuinfo").write_text(f"flags\t\t: {flags}\n")
    monkeypatch.setattr(capability, "CPUINFO", tmp_path / "cpuinfo")
    assert capability.cpu_bf16_native() is bf16
    assert capability.cpu_fp16_native() is fp16


def cpu(monkeypatch, bf16: bool):
    monkeypatch.setattr(capability, "cpu_bf16_native", lambda: bf16)


def gpu(monkeypatch, bf16: bool):
    monkeypatch.setattr(capability, "cuda_bf16_native", lambda: bf16)


def test_auto_is_bf16_on_a_cpu_that_computes_it_and_fp32_on_one_that_does_not(monkeypatch):
    cpu(monkeypatch, True)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "bf16" and "AVX-512 BF16 or AMX" in chosen.reason and not chosen.scaled
    cpu(monkeypatch, False)
    chosen = resolve_precision("auto", "cpu")
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason


def test_auto_is_bf16_on_a_gpu_with_it_and_fp16_with_loss_scaling_on_one_without(monkeypatch):
    gpu(monkeypatch, True)
    assert resolve_precision("auto", "cuda") == Precision("bf16", "auto: this GPU computes bf16 natively", asked=False)
    gpu(monkeypatch, False)
    chosen = resolve_precision("auto", "cuda")
    assert chosen.name == "fp16" and chosen.scaled and "loss scaling" in chosen.reason


def test_auto_is_fp32_on_mps_and_an_explicit_precision_is_kept_anywhere(monkeypatch):
    cpu(monkeypatch, False)
    gpu(monkeypatch, False)
    assert resolve_precision("auto", "mps").name == "fp32"
    for name in ("fp32", "bf16", "fp16"):
        for device in ("cpu", "cuda", "mps"):
            assert resolve_precision(name, device) == Precision(name, f"train.precision={name} as asked")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_native_says_what_each_device_computes_without_emulation(monkeypatch):
    cpu(monkeypatch, False)
    gpu(monkeypatch, False)
    monkeypatch.setattr(capability, "cpu_fp16_native", lambda: False)
    assert capability.native("fp32", "cpu") and capability.native("fp32", "mps")
    assert not capability.native("bf16", "cpu") and not capability.native("fp16", "cpu")
    assert not capability.native("bf16", "cuda") and capability.native("fp16", "cuda")  # every CUDA GPU has fp16
    assert not capability.native("bf16", "mps")
    cpu(monkeypatch, True)
    gpu(monkeypatch, True)
    assert capability.native("bf16", "cpu") and capability.native("bf16", "cuda")


def test_autocast_dtype():
    assert capability.autocast_dtype("bf16") is torch.bfloat16
    assert capability.autocast_dtype("fp16") is torch.float16
    assert capability.autocast_dtype("fp32") is None


class RaisingLSTM(torch.nn.Module):
    """What oneDNN does on a CPU without a float16 LSTM."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")


class PlainRNN(torch.nn.Module):
    """A recurrent layer that runs under any autocast: one float32 matmul."""

    def __init__(self, size, hidden):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(size, hidden))

    def forward(self, x):
        return x.float() @ self.weight, None


def test_cpu_fp16_kernel_is_tried_not_assumed(monkeypatch):
    monkeypatch.setattr(torch.nn, "LSTM", RaisingLSTM)
    monkeypatch.setattr(torch.nn, "RNN", PlainRNN)
    assert capability.cpu_fp16_kernel("lstm") is False
    assert capability.cpu_fp16_kernel("rnn_tanh") is True


def test_importing_capability_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, charlm.runtime.capability as c; c.cpu_flags(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
