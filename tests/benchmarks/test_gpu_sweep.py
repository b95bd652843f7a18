"""benchmarks/gpu_sweep.py: bf16 chars/s and MFU by batch on the CPU with tiny sizes, and where a card saturates."""

from __future__ import annotations

import gpu_sweep
import pytest

from charlm.runtime import capability


def test_the_sweep_runs_on_the_cpu_with_tiny_sizes(builtin_cache, single_thread):
    if not capability.cpu_bf16_kernel("lstm"):
        pytest.skip("this CPU has no bfloat16 LSTM kernel (oneDNN's needs AVX-512): the bf16 sweep cannot run here")
    figures = gpu_sweep.sweep(smoke=True)
    assert list(figures["models"]) == ["lstm_1x32", "lstm_2x48"]
    for model in figures["models"].values():
        runs = model["batches"]
        assert list(runs) == [str(b) for b in gpu_sweep.SMOKE_BATCHES] and not any("error" in r for r in runs.values())
        for run in runs.values():
            assert run["mfu"] == pytest.approx(
                6 * run["non_embedding_parameters"] * run["chars_per_s"] / (figures["peak_tflops_bf16"] * 1e12)
            )
    assert "lstm_2x48" in "\n".join(gpu_sweep.describe(figures))


@pytest.mark.parametrize(
    ("rates", "where"),
    [
        ((100, 190, 370), None),  # every doubling nearly doubles the speed: the card is not full yet
        ((100, 190, 210), 256),  # 512 buys 10% over 256
        ((100, 110, 400), 128),  # the first doubling that does not pay
    ],
)
def test_the_card_saturates_at_the_first_batch_whose_doubling_does_not_pay(rates, where):
    runs = {str(b): {"chars_per_s": r} for b, r in zip(gpu_sweep.BATCHES, rates, strict=True)}
    assert gpu_sweep.saturates_at(runs) == where


def test_a_failed_batch_is_left_out_of_the_saturation():
    runs = {"128": {"chars_per_s": 100.0}, "256": {"error": "out of memory"}, "512": {"chars_per_s": 110.0}}
    assert gpu_sweep.saturates_at(runs) == 128
