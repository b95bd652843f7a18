"""benchmarks/fp16_check.py: fp16 against fp32 on the CPU smoke, and a charlm without train.precision."""

from __future__ import annotations

import json

import fp16_check


def test_the_smoke_compares_or_says_why_not(tmp_path, single_thread):
    out = tmp_path / "fp16.json"
    assert fp16_check.main(["--smoke", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    if "skipped" in result:  # before train.precision exists, or where this CPU refuses fp16
        assert "precision" in result["skipped"] or "fp16" in result["skipped"]
    else:
        assert (
            result["relative_difference"]
            == (result["fp16_val_loss"] - result["fp32_val_loss"]) / result["fp32_val_loss"]
        )


def test_without_train_precision_a_gpu_run_is_a_failure(tmp_path, monkeypatch):
    def refuse(smoke, work):
        from charlm.errors import ConfigError

        raise ConfigError("unknown config key train.precision")

    monkeypatch.setattr(fp16_check, "compare", refuse)
    assert fp16_check.main(["--json", str(tmp_path / "out.json")]) == 1
    assert "train.precision" in json.loads((tmp_path / "out.json").read_text())["skipped"]
