"""kernels.py: the fp32 kernel of a generation step is measured on this machine once and cached."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_rnn, make_unreadable

from charlm.generation.fast_step import FastStep, _onednn
from charlm.runtime import kernels
from charlm.runtime.kernels import FP32_KERNELS, KernelTable

needs_onednn = pytest.mark.skipif(not _onednn(), reason="this PyTorch build has no oneDNN linear on the CPU")


def test_the_faster_kernel_is_chosen_whichever_it_is(monkeypatch):
    candidates = {"onednn": object(), "dense": object()}
    for winner in FP32_KERNELS:
        monkeypatch.setattr(
            kernels, "calls_per_second", lambda project, x, w=winner: 2.0 if project is candidates[w] else 1.0
        )
        assert kernels.fastest(candidates, rows=1, in_features=8) == winner


@needs_onednn
def test_a_choice_is_measured_once_per_machine_and_read_back(tmp_path, monkeypatch):
    path = tmp_path / "kernels.json"
    model = make_rnn(9, "lstm", hidden_size=16, num_layers=2).eval()
    first = KernelTable(path)
    FastStep(model, "fp32", rows=3, kernels=first)
    # layer 0's W_hh, layer 1's [W_ih | W_hh], the head
    assert first.measured == [KernelTable.key(shape, 3) for shape in [(64, 16), (64, 32), (9, 16)]]
    saved = json.loads(path.read_text())
    assert saved["machine"] == kernels.machine() and set(saved["fp32"].values()) <= set(FP32_KERNELS)

    monkeypatch.setattr(kernels, "fastest", lambda *a: pytest.fail("measured again"))
    second = KernelTable(path)
    FastStep(model, "fp32", rows=3, kernels=second)
    assert second.measured == [] and second.choices == first.choices


@needs_onednn
def test_measuring_leaves_the_callers_random_state_alone(tmp_path):
    model = make_rnn(9, "lstm", hidden_size=16).eval()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    table = KernelTable(tmp_path / "kernels.json")
    FastStep(model, "fp32", kernels=table)
    assert table.measured  # it did measure
    assert torch.equal(torch.rand(3), expected)


@needs_onednn
def test_another_machines_choices_are_measured_again(tmp_path):
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps({"machine": {"cpu": "another CPU"}, "fp32": {"9x16-r1": "dense"}}))
    assert KernelTable(path).choices == {}
    path.write_text("not json")
    assert KernelTable(path).choices == {}


@needs_onednn
def test_an_unwritable_cache_still_generates(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    table = KernelTable(blocker / "kernels.json")  # its folder cannot be made
    FastStep(make_rnn(9, "gru", hidden_size=16).eval(), "fp32", kernels=table)
    assert len(table.measured) == len(table.choices) == 2  # W_hh and the head, kept in memory


@needs_onednn
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_both_fp32_kernels_compute_the_model(tmp_path, kind):
    torch.manual_seed(0)
    model = make_rnn(11, kind, hidden_size=24, num_layers=2).eval()
    ids = torch.randint(0, 11, (4, 6))
    with torch.inference_mode():
        expected, _ = model(ids, None)
    for kernel in FP32_KERNELS:
        table = KernelTable(tmp_path / f"{kernel}.json")
        table.choices = {
            KernelTable.key(shape, 4): kernel
            for shape in [(96, 24), (96, 48), (72, 24), (72, 48), (11, 24), (24, 24), (24, 48)]
        }
        step, hidden, rows = FastStep(model, "fp32", rows=4, kernels=table), model.begin_hidden(4), []
        assert table.measured == []
        assert {p.mode for p in [step.head, *(q for pair in step.layers for q in pair if q)]} == {kernel}
        with torch.inference_mode():
            for t in range(ids.shape[1]):
                logits, hidden = step(ids[:, t], hidden)
                rows.append(logits)
        # two kernels sum in different orders: equal to float32 rounding, not bit for bit
        assert torch.allclose(torch.stack(rows), expected, atol=1e-5)


@pytest.mark.parametrize(
    "choice", ['"fast"', "1", "null", "true", '["onednn"]', '{"k": "dense"}', "NaN", '"ONEDNN"', '"onednn "']
)
def test_a_cached_choice_that_names_no_kernel_is_measured_again(tmp_path, monkeypatch, choice):
    path = tmp_path / "kernels.json"
    fast, kept = KernelTable.key((8, 4), 1), KernelTable.key((9, 4), 1)
    text = json.dumps({"machine": kernels.machine(), "fp32": {fast: "CHOICE", kept: "dense"}})
    path.write_text(text.replace('"CHOICE"', choice))
    table = KernelTable(path)
    expected = {} if choice == "NaN" else {kept: "dense"}  # NaN is not JSON: nothing of the file is trusted
    assert table.choices == expected
    monkeypatch.setattr(kernels, "fastest", lambda *a: "onednn")
    assert table.fp32(lambda kernel: None, (8, 4), 1) == "onednn" and table.measured == [fast]


@pytest.mark.parametrize("damage", ["fifo", "dev-zero", "folder", "huge", "list", "fp32-list", "deep"])
def test_a_kernel_cache_that_is_not_a_bounded_json_file_is_ignored_without_hanging(tmp_path, damage):
    path = tmp_path / "kernels.json"
    if not make_unreadable(path, damage):
        # the right machine: only the entries' shape is wrong
        path.write_text(
            {
                "list": "[]",
                "fp32-list": json.dumps({"machine": kernels.machine(), "fp32": ["dense"]}),
                "deep": '{"a":' * 50_000,
            }[damage]
        )
    assert KernelTable(path).choices == {}


@needs_onednn
@pytest.mark.slow
def test_the_kernel_benchmark_runs(tmp_path):
    """benchmarks/kernel_choice.py in its quick form: every way of stepping measured, the choice made in the run."""
    from kernel_choice import main as bench

    figures = bench(["--quick", "--json", str(tmp_path / "k.json")])
    assert json.loads((tmp_path / "k.json").read_text()) == figures
    assert all(figures[f"{w}_{n}_chars_per_s"] > 0 for w in ("v1", "dense", "onednn", "chosen") for n in (1, 32))
    assert set(figures["chosen_kernels"]) <= set(FP32_KERNELS) and figures["chosen_kernels"]
