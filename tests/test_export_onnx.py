"""`charlm export --onnx`: the step as an ONNX graph, run in onnxruntime against charlm itself, for every model
kind, one-hot and embedding; the guide's sampling loop runs as written."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
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
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "onnx.md"
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


# `python -m charlm` with the stop signal (the first argument) sent from inside the exporter: torch.export.export,
# which torch.onnx calls and whose errors it wraps in its own many-line report (a fault injected from the test side)
SIGNAL_IN_EXPORTER = """
import os, sys
import torch.export
signum, export = int(sys.argv.pop(1)), torch.export.export
def signalled(*args, **kwargs):
    os.kill(os.getpid(), signum)
    return export(*args, **kwargs)
torch.export.export = signalled
from charlm.cli.main import entry
entry()
"""


@pytest.mark.parametrize("signum", [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", 0)) if s])
@pytest.mark.slow
def test_a_stop_signal_inside_the_exporter_is_the_one_interrupted_line(tmp_path, signum):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", corpus, ["model.hidden_size=16", "model.embed_size=16"])
    out = tmp_path / "exports"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", SIGNAL_IN_EXPORTER, str(int(signum))]
    proc = subprocess.run(
        [*command, "export", "--run-dir", str(run), "--onnx", str(out / "onnx")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 128 + signum, proc.stderr
    name = signal.Signals(signum).name
    assert proc.stderr == f"interrupted: {name} while writing {out / 'onnx'}: stopped, nothing left behind\n"
    assert list(out.iterdir()) == []  # no temp folder, no half folder


@pytest.mark.parametrize("settings", [["data.documents=lines"], ["data.documents=lines", "data.min_char_count=15"]])
def test_a_documents_model_names_its_reserved_ids_and_the_guides_loop_never_writes_them(
    tmp_path, capsys, monkeypatch, settings
):
    """<eod> (and <unk>) are vocabulary entries, not characters: onnx.json names their ids and `printed` writes
    <eod> as a line break, as `charlm generate` does; the guide's loop (writing `printed`) never writes '<eod>'."""
    from charlm.store import checkpoint as ckpt

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO: and JULIET: say so.\n" * 20 + "the quick brown fox jumps over the lazy dog\n" * 40)
    run = save_untrained_run(tmp_path / "run", corpus, ["model.hidden_size=16", "model.embed_size=16", *settings])
    saved = ckpt.load(run / "best.pt")
    eod = saved.vocab.index("<eod>")
    saved.model["head.bias"][eod] = 4.0  # an item ends often: the loop meets <eod> many times in 200 characters
    ckpt.save(run / "best.pt", saved)
    folder = tmp_path / "onnx"
    assert main(["export", "--run-dir", str(run), "--onnx", str(folder)]) == 0
    facts, chars = json.loads((folder / "onnx.json").read_text()), json.loads((folder / "vocab.json").read_text())
    assert chars["chars"] == saved.vocab and facts["eod"] == eod
    assert facts["unk"] == (saved.vocab.index("<unk>") if "<unk>" in saved.vocab else None)
    assert facts["printed"][eod] == "\n" and len(facts["printed"]) == facts["vocab_size"]
    assert all(p == c for i, (p, c) in enumerate(zip(facts["printed"], saved.vocab, strict=True)) if i != eod)
    capsys.readouterr()
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    exec(compile(code.replace("models/my-run-onnx", str(folder)), str(DOCS), "exec"), {})
    printed = capsys.readouterr().out
    assert "<eod>" not in printed and "\n" in printed.rstrip("\n") and printed.startswith("ROMEO:")
