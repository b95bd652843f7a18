"""charlm.runtime.device: the host-device sync that timings use."""

from __future__ import annotations

import torch

from charlm.runtime.device import synchronize


def test_synchronize_waits_for_a_gpu_and_does_nothing_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    synchronize(torch.device("cpu"))
    assert calls == []  # the CPU computes in place: nothing is queued
    synchronize(torch.device("cuda:0"))  # constructing the device needs no GPU; the sync itself is replaced
    assert calls == [torch.device("cuda:0")]
