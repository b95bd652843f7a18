"""Fine-tuning (train --init-from): the grown vocabulary, the parent's loss at step 0, the record, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_training_resume import CrashAt, assert_same_run, losses

from charlm.cli.main import main
from charlm.config import load_config
from charlm.data import load_corpus
from charlm.evaluate import evaluate
from charlm.export.model_folder import export_model
from charlm.model import CharRNN
from charlm.store.checkpoint import load_payload
from charlm.store.run_dir import RunDir
from charlm.training.init_from import load_parent
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
PARENT_TEXT = "分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 40
NEW_TEXT = "我想就这样 rain on the road\n你的手不放开 love is all 爱可不可以\n" * 40  # new characters: latin

pytestmark = pytest.mark.usefixtures("single_thread")


def settings(corpus: Path, *more: str) -> list[str]:
    return [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", *more]


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A small finished run on the lyrics-like text (tied LSTM, so the tie is grown too)."""
    root = tmp_path_factory.mktemp("parent")
    corpus = root / "parent.txt"
    corpus.write_text(PARENT_TEXT, encoding="utf-8")
    config = load_config(
        TINY,
        settings(
            corpus,
            "train.epochs=3",
            "model.kind=lstm",
            "model.embed_size=32",
            "model.hidden_size=32",
            "model.tie_weights=true",
        ),
    )
    train(config, root / "run")
    return root / "run"


@pytest.fixture
def new_corpus(tmp_path) -> Path:
    path = tmp_path / "new.txt"
    path.write_text(NEW_TEXT, encoding="utf-8")
    return path


def test_the_parent_val_loss_barely_moves_when_the_vocabulary_grows(parent, new_corpus):
    source = load_parent(parent)
    config = source.checkpoint.config
    corpus = load_corpus(config.data, vocab=source.vocab.extended(set(NEW_TEXT)))
    assert len(corpus.vocab) > len(source.vocab)  # the new text brings characters
    grown = CharRNN(config.model, len(corpus.vocab))
    source.load_weights(grown)
    old = source.checkpoint.build_model()
    t = config.train
    before = evaluate(old, corpus.val, batch_size=t.eval_batch_size, num_steps=t.num_steps)["nats_per_char"]
    after = evaluate(grown, corpus.val, batch_size=t.eval_batch_size, num_steps=t.num_steps)["nats_per_char"]
    assert math.isclose(before, source.checkpoint.train_state.best_loss, rel_tol=1e-6)  # the same val ids
    assert before < after < before * 1.01
    assert grown.head.weight is grown.embedding.weight


def test_a_fine_tuned_run_records_its_parent_and_keeps_the_old_ids(parent, new_corpus, tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "ft"
    code = main(
        [
            "train",
            "--init-from",
            str(parent),
            "--corpus",
            str(new_corpus),
            "--run-dir",
            str(run),
            "--set",
            "train.epochs=2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"weights from {parent}" in printed
    first, *records = RunDir(run).metrics.read()
    parent_ckpt = load_payload(parent / "best.pt")
    assert first == {
        "event": "init_from",
        "path": str(parent),
        "checkpoint": "best",
        "source": "run",
        "corpus": str(parent.parent / "parent.txt"),
        "corpus_sha256": parent_ckpt["corpus_sha256"],
        "best_val_loss": parent_ckpt["best_loss"],
        "parent_epoch": 3,
        "parent_vocab_size": len(parent_ckpt["vocab"]),
        "new_chars": "".join(sorted(set(NEW_TEXT) - set(PARENT_TEXT))),
    }
    assert [r["epoch"] for r in records] == [1, 2]
    vocab = json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"]
    assert vocab[: len(parent_ckpt["vocab"])] == parent_ckpt["vocab"]  # every old character keeps its id
    config = load_payload(run / "best.pt")["config"]
    assert config["model"] == parent_ckpt["config"]["model"]  # the parent's shape (and config, named NAME-ft)
    assert config["name"] == parent_ckpt["config"]["name"] + "-ft" and config["train"]["epochs"] == 2
    # perplexity reads the split with the run's own ids (not re-sorted): it reproduces the best val loss
    assert main(["perplexity", "--run-dir", str(run), "--json", "--device", "cpu"]) == 0
    best = min(r["val_loss"] for r in records)
    assert json.loads(capsys.readouterr().out)["nats_per_char"] == pytest.approx(best, rel=1e-9)
    assert main(["info", "--run-dir", str(run)]) == 0
    info = capsys.readouterr().out
    assert f"fine-tuned from {parent}" in info and parent_ckpt["corpus_sha256"][:12] in info
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["runs", "--root", str(run.parent)]) == 0
    table = capsys.readouterr().out
    assert "parent" in table and any(
        line.split("│")[-2].strip() == parent.name for line in table.splitlines() if "│ ft " in line
    )


def test_a_fine_tuned_run_resumes_exactly_like_any_run(parent, new_corpus, tmp_path):
    config = load_config(parent / "config.yaml", settings(new_corpus, "train.epochs=3", "model.dropout=0.2"))
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    train(config, reference, init_from=parent)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, crashed, CrashAt(2, 3), init_from=parent)
    train(config, crashed, resume=True)
    assert_same_run(reference, crashed)
    assert losses(crashed)[0]["epoch"] == 1
    events = [r.get("event") for r in RunDir(crashed).metrics.read() if "event" in r]
    assert events == ["init_from", "resume"]  # the parent line stays first


def test_a_sorted_fine_tuned_vocabulary_with_characters_the_text_lacks_resumes_too(tmp_path):
    # new characters that sort after the parent's, and parent characters the new text lacks: the run's
    # vocabulary is sorted but is not the new text's own
    parent_corpus, new_corpus = tmp_path / "parent.txt", tmp_path / "new.txt"
    parent_corpus.write_text("hello world, here we go\n" * 60, encoding="utf-8")
    new_corpus.write_text("hello yellow wool, oh hey\n" * 60, encoding="utf-8")
    train(load_config(TINY, settings(parent_corpus, "train.epochs=1")), tmp_path / "parent")
    config = load_config(TINY, settings(new_corpus, "train.epochs=3", "name=tiny-ft"))
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    train(config, reference, init_from=tmp_path / "parent")
    vocab = json.loads((reference / "vocab.json").read_text(encoding="utf-8"))["chars"]
    assert vocab == sorted(vocab) and {"d", "r"} <= set(vocab) - set("hello yellow wool, oh hey\n")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config, crashed, CrashAt(2, 2), init_from=tmp_path / "parent")
    train(config, crashed, resume=True)
    assert_same_run(reference, crashed)


def test_init_from_a_model_folder_and_from_last(parent, new_corpus, tmp_path):
    model = export_model(parent, tmp_path / "model")
    for spec, source, which in [(str(model), "model", "best"), (f"{parent}:last", "run", "last")]:
        run = tmp_path / f"ft-{source}"
        assert (
            main(
                [
                    "train",
                    "--init-from",
                    spec,
                    "--corpus",
                    str(new_corpus),
                    "--run-dir",
                    str(run),
                    "--set",
                    "train.epochs=1",
                ]
            )
            == 0
        )
        first = RunDir(run).metrics.read()[0]
        assert (first["source"], first["checkpoint"]) == (source, which)
    a, b = (load_payload(tmp_path / f"ft-{s}" / "last.pt")["model"] for s in ("model", "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # best and last of the parent are the same epoch here


def test_fine_tuning_may_change_regularisers_even_the_module_layout(parent, new_corpus, tmp_path):
    run = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                "--init-from",
                str(parent),
                "--corpus",
                str(new_corpus),
                "--run-dir",
                str(run),
                "--set",
                "train.epochs=1",
                "--set",
                "model.weight_drop=0.3",
            ]
        )
        == 0
    )
    assert "rnn.0.weight_hh_l0" in load_payload(run / "last.pt")["model"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--set", "model.num_layers=2"], "model.num_layers (1 in the parent, 2 here)"),
        (["--config", str(TINY)], "model.kind ('lstm' in the parent, 'gru' here)"),
        (["--resume"], "use one of them"),
    ],
)
def test_a_different_shape_or_resume_is_refused(parent, new_corpus, tmp_path, capsys, extra, fragment):
    run = tmp_path / "ft"
    code = main(["train", "--init-from", str(parent), "--corpus", str(new_corpus), "--run-dir", str(run), *extra])
    message = capsys.readouterr().err.strip()
    assert code == 2 and fragment in message and "\n" not in message
    assert not run.exists()


def test_a_missing_parent_is_one_line(tmp_path, capsys):
    assert main(["train", "--init-from", str(tmp_path / "nowhere:last")]) == 2
    assert "not found" in capsys.readouterr().err
