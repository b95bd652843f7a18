"""`charlm export --onnx`: the step as an ONNX graph, run in onnxruntime against charlm itself, for every model
kind, one-hot and embedding; the guide's sampling loop runs as written."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_untrained_run

import charlm
from charlm.cli.main import main
from charlm.export.onnx import StepGraph

MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}: pip install -e '.[dev]'")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"
CORPUS = "the quick brown fox jumps over the lazy dog; " * 40 + "ROMEO: and JULIET: say so.\n" * 20
KINDS = [
    ("rnn_tanh", "onehot", 1),
    ("rnn_relu", "embedding", 1),
    ("lstm", "onehot", 2),
    ("lstm", "embedding", 1),
    ("gru", "onehot", 1),
    ("gru", "embedding", 2),
]


def export(tmp_path: Path, kind: str, inputs: str, layers: int) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    settings = [
        f"model.kind={kind}",
        f"model.input={inputs}",
        f"model.num_layers={layers}",
        "model.hidden_size=48",
        "model.embed_size=48",
        "model.tie_weights=false",
    ]
    run = save_untrained_run(tmp_path / "run", corpus, settings)
    assert main(["export", "--run-dir", str(run), "--onnx", str(tmp_path / "onnx")]) == 0
    return run, tmp_path / "onnx"


@pytest.mark.parametrize(("kind", "inputs", "layers"), KINDS)
def test_onnx_greedy_text_and_logits_match_charlm(tmp_path, kind, inputs, layers):
    import onnxruntime as ort

    run, folder = export(tmp_path, kind, inputs, layers)
    facts, chars = (
        json.loads((folder / "onnx.json").read_text()),
        json.loads((folder / "vocab.json").read_text())["chars"],
    )
    assert facts["kind"] == kind and facts["num_layers"] == layers and len(chars) == facts["vocab_size"]
    session = ort.InferenceSession(str(folder / "model.onnx"))
    model = charlm.load(run)
    expected = model.generate("ROMEO:", length=200, temperature=0)
    state = {n: np.zeros((layers, 1, 48), np.float32) for n in facts["inputs"][1:]}
    text, worst = "ROMEO:", 0.0
    reference = model.net
    hidden = None
    for i in range(len(text) + 200 - 1):
        ids = np.array([chars.index(text[i])])
        logits, *new_state = session.run(None, {"ids": ids, **state})
        state = dict(zip(facts["inputs"][1:], new_state, strict=True))
        with torch.no_grad():
            ours, hidden = reference(torch.tensor([[ids[0]]]), hidden)
        worst = max(worst, float(np.abs(logits[0] - ours.reshape(-1).numpy()).max()))
        if i + 1 >= len(text):
            text += chars[int(logits[0].argmax())]
    assert text == expected
    # float32 products summed in another order by another library: close, not bit for bit
    assert worst < 1e-4


def test_the_graph_steps_a_batch_of_any_size(tmp_path):
    import onnxruntime as ort

    _, folder = export(tmp_path, "lstm", "embedding", 1)
    session = ort.InferenceSession(str(folder / "model.onnx"))
    for batch in (1, 5):
        zeros = np.zeros((1, batch, 48), np.float32)
        logits, h, c = session.run(None, {"ids": np.arange(batch), "h": zeros, "c": zeros})
        assert logits.shape[0] == batch and h.shape == c.shape == (1, batch, 48)


def test_the_guides_sampling_loop_runs_as_written(tmp_path, monkeypatch, capsys):
    _, folder = export(tmp_path, "gru", "embedding", 1)
    capsys.readouterr()  # the export's own line
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    assert len(code.strip().splitlines()) <= 16  # the guide promises a short loop
    exec(compile(code.replace("models/my-run-onnx", str(folder)), str(DOCS), "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("ROMEO:") and len(printed) == len("ROMEO:") + 200


def test_export_onnx_refuses_an_existing_folder_and_a_folder_inside_out(tmp_path, capsys):
    run, folder = export(tmp_path, "rnn_tanh", "onehot", 1)
    assert main(["export", "--run-dir", str(run), "--onnx", str(folder)]) == 2
    assert "--onnx" in capsys.readouterr().err
    inside = ["export", "--run-dir", str(run), "--out", str(tmp_path / "m"), "--onnx", str(tmp_path / "m" / "o")]
    assert main(inside) == 2
    assert "inside --out" in capsys.readouterr().err and not (tmp_path / "m").exists()
    reverse = ["export", "--run-dir", str(run), "--onnx", str(tmp_path / "o"), "--out", str(tmp_path / "o" / "m")]
    assert main(reverse) == 2
    assert "inside --onnx" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_step_graph_equals_the_model_step():
    from helpers import make_rnn

    model = make_rnn(kind="gru", hidden_size=16, vocab_size=11).eval()
    graph = StepGraph(model)
    ids, h = torch.tensor([3, 7]), torch.zeros(1, 2, 16)
    logits, h_out = graph(ids, h)
    with torch.no_grad():
        ours, state = model(ids[:, None], h)
    torch.testing.assert_close(logits, ours.reshape(2, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_out, state, rtol=1e-5, atol=1e-6)
