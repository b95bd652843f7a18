"""benchmarks/bf16_bench.py (bench.py's bf16 rows): the sampling figures on a small model, and the rule
that picks the --weights default from them."""

from __future__ import annotations

import bf16_bench
import pytest
import torch
from helpers import make_rnn

from charlm.data import Vocab


def test_sampling_figures_cover_every_format_against_version_1(single_thread):
    torch.manual_seed(0)
    vocab = Vocab("abcdefghijklmnopqrstuvwxyz ")
    model = make_rnn(len(vocab), "lstm", hidden_size=48, num_layers=2, input="embedding", embed_size=16).eval()
    figures = bf16_bench.sampling(model, vocab, "ab", quick=True)
    assert figures["gen_v1_chars_per_s"] > 0 and figures["gen_v1_batch_chars_per_s"] > 0
    for weights in ("fp32", "bf16", "int8"):
        single, batch = figures[f"gen_{weights}_chars_per_s"], figures[f"gen_{weights}_batch_chars_per_s"]
        assert figures[f"gen_{weights}_batch_over_single"] == pytest.approx(batch / single)
        assert figures[f"gen_{weights}_over_v1"] == pytest.approx(single / figures["gen_v1_chars_per_s"])
        assert 0 <= figures[f"gen_{weights}_greedy_same_chars"] <= 500
        assert 0.0 <= figures[f"gen_{weights}_greedy_agreement"] <= 1.0
    assert (figures["gen_fp32_greedy_same_chars"], figures["gen_fp32_greedy_agreement"]) == (500, 1.0)
    assert figures["gen_best_single_over_v1"] == max(figures[f"gen_{w}_over_v1"] for w in ("fp32", "bf16", "int8"))


def test_the_default_rule_takes_the_fastest_format_that_keeps_fp32s_greedy_text():
    figures = {
        "gen_fp32_chars_per_s": 3000,
        "gen_bf16_chars_per_s": 4000,
        "gen_int8_chars_per_s": 5000,
        "trained_bf16_greedy_same_chars": 2000,
        "trained_int8_greedy_same_chars": 46,
    }
    assert bf16_bench.default_by_rule(figures, 2000) == "bf16"
    figures["trained_bf16_greedy_same_chars"] = 1999
    assert bf16_bench.default_by_rule(figures, 2000) == "fp32"
    figures["trained_int8_greedy_same_chars"] = 2000
    assert bf16_bench.default_by_rule(figures, 2000) == "int8"
