"""benchmarks/gpu_bench.py (bench.py --device cuda): its suite on the CPU, and a measurement that breaks."""

from __future__ import annotations

from pathlib import Path

import gpu_bench
import pytest

from charlm.runtime import capability


def test_the_suite_runs_on_the_cpu_with_tiny_sizes(builtin_cache, single_thread):
    figures = gpu_bench.run_suite(smoke=True)
    train = figures["train"]
    # bf16 training is refused where the CPU has no bf16 LSTM kernel (an AVX2-only CPU): its rows say so
    bf16_here = capability.cpu_bf16_kernel("lstm")
    failed = {name for name, r in train.items() if "error" in r}
    assert len(train) == 4 * len(gpu_bench.SMOKE.models)
    assert failed == (set() if bf16_here else {name for name in train if "bf16" in name})
    tiny = train["lstm_1x32_fp32"]
    lstm = 4 * 32 * (128 + 32) + 4 * 2 * 32  # weights and biases; the rest is the head, (32 + 1) x vocab
    vocab, rest = divmod(tiny["non_embedding_parameters"] - lstm, 32 + 1)
    assert rest == 0 and 30 < vocab <= 65  # the characters of the start of tiny shakespeare
    assert tiny["mfu"] == pytest.approx(
        6 * tiny["non_embedding_parameters"] * tiny["chars_per_s"] / (figures["peak_tflops"]["fp32"] * 1e12)
    )
    assert not bf16_here or train["lstm_1x32_bf16_deterministic"]["slowdown"] > 0
    assert figures["eval"]["chars"] > 0 and figures["generation"]["gen_1_eager_chars_per_s"] > 0
    assert figures["generation"]["gen_1_graph"] == "not run: a CUDA graph needs CUDA"
    names = [name for name, _ in gpu_bench.rows(figures)]
    assert "train lstm_2x48_tf32" in names and "gen_1_graph" in names


def test_a_measurement_that_breaks_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    def fake_train_rate(layers, hidden, dtype, sizes, device, run: Path, deterministic=False):
        if dtype == "tf32":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")
        return {"chars_per_s": 1000.0 * (0.5 if deterministic else 1), "non_embedding_parameters": 10}

    monkeypatch.setattr(gpu_bench, "train_rate", fake_train_rate)
    peaks = {"fp32": 1.0, "tf32": 2.0, "bf16": 4.0}
    figures = gpu_bench.training_figures(gpu_bench.SMOKE, "cpu", tmp_path, peaks)
    assert figures["lstm_1x32_tf32"] == {"error": "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"}
    assert figures["lstm_1x32_bf16"]["mfu"] == pytest.approx(6 * 10 * 1000 / 4e12)
    assert figures["lstm_2x48_bf16_deterministic"]["slowdown"] == pytest.approx(2.0)
    assert gpu_bench.describe_rate(figures["lstm_1x32_tf32"]).startswith("failed: RuntimeError: cuDNN error")
