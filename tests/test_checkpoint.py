"""Checkpoints and run folders: atomic writes, safe loading, latest run, rebuilding a model."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import pytest
import torch
from helpers import make_rnn

from charlm import checkpoint as ckpt
from charlm import fsio, rundir
from charlm.config import Config, load_config
from charlm.data import Vocab
from charlm.errors import CheckpointError, RunError
from charlm.model import CharRNN
from charlm.rundir import RunDir

pytestmark = pytest.mark.usefixtures("single_thread")


class Exploit:
    """Unpickling this calls open(marker, "w"): proof that code ran while loading."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def train_like_payload(model: CharRNN, vocab: Vocab, config: Config) -> dict:
    """What train.py saves: the keys and value types of a real checkpoint."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    logits, _ = model(torch.randint(0, len(vocab), (2, 5)))
    logits.sum().backward()
    optimizer.step()  # the optimizer state holds tensors, as after a real epoch
    generator = torch.Generator().manual_seed(0)
    return {
        "model": model.state_dict(), "model_args": {"vocab_size": len(vocab), **dataclasses.asdict(model.config)},
        "vocab": vocab.chars, "config": config.to_dict(),
        "optimizer": optimizer.state_dict(), "epoch": 3, "step": 42,
        "metrics": {"epoch": 3, "train_loss": 2.5, "val_loss": 2.75, "val_ppl": 15.6},
        "corpus_sha256": "ab" * 32, "torch_rng": torch.get_rng_state(), "data_rng": generator.get_state(),
        "best_val_loss": 2.75,
    }


def load_run_model(folder, which: str = "best"):
    return ckpt.load_model(RunDir(folder).checkpoint(which))


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------
# save / load


def test_save_load_round_trip(tmp_path):
    payload = {"weights": torch.randn(3, 4), "ids": torch.arange(5, dtype=torch.int16), "nested": {"a": [1, 2.5, None]},
               "text": "分开", "flag": True}
    path = tmp_path / "x.pt"
    ckpt.save_payload(path, payload)
    loaded = ckpt.load_payload(path)
    assert loaded["format"] == ckpt.FORMAT and loaded["version"] == ckpt.VERSION
    assert torch.equal(loaded["weights"], payload["weights"])
    assert loaded["ids"].dtype == torch.int16 and torch.equal(loaded["ids"], payload["ids"])
    assert loaded["nested"] == {"a": [1, 2.5, None]} and loaded["text"] == "分开" and loaded["flag"] is True
    assert loaded["weights"].device.type == "cpu"


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "last.pt"
    for i in range(3):  # overwriting too
        ckpt.save_payload(path, {"i": i, "t": torch.ones(100)})
    assert names(tmp_path) == ["last.pt"]
    assert ckpt.load_payload(path)["i"] == 2
    fsio.atomic_write_text(tmp_path / "config.yaml", "name: 分开\n")
    assert names(tmp_path) == ["config.yaml", "last.pt"]
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "name: 分开\n"


def test_atomic_write_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    fsio.atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "best.pt"
    ckpt.save_payload(path, {"v": 1})

    def broken(f):
        f.write(b"half a checkpo")
        raise OSError(28, "No space left on device")

    with pytest.raises(RunError, match="No space left"):
        fsio.atomic_write(path, broken)
    assert names(tmp_path) == ["best.pt"]
    assert ckpt.load_payload(path)["v"] == 1


def test_write_into_a_missing_folder_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="cannot write"):
        fsio.atomic_write_text(tmp_path / "nope" / "config.yaml", "x")


def test_append_line_writes_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rundir.append_line(path, {"epoch": 1, "sample": "分开"})
    rundir.append_line(path, {"epoch": 2, "loss": 1.5})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1, "sample": "分开"}, {"epoch": 2, "loss": 1.5}]
    assert "分开" in lines[0]


def test_write_run_files(tmp_path):
    vocab = Vocab("分开ab\n")
    RunDir(tmp_path).write_run_files("name: x\n", vocab.to_json())
    assert (tmp_path / rundir.CONFIG).read_text(encoding="utf-8") == "name: x\n"
    assert Vocab.from_json((tmp_path / rundir.VOCAB).read_text(encoding="utf-8")) == vocab


# ---------------------------------------------------------------------------------------------------
# refusing bad checkpoints


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_is_refused_and_runs_no_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    path = run / rundir.BEST
    evil = {"format": ckpt.FORMAT, "version": ckpt.VERSION, "model": Exploit(marker)}
    if writer == "torch.save":
        torch.save(evil, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(evil, f, protocol=2)

    with pytest.raises(CheckpointError, match="refusing to load"):
        ckpt.load_payload(path)
    with pytest.raises(CheckpointError):
        load_run_model(run)
    assert not marker.exists(), "loading the checkpoint ran code from it"

    # the payload is live: an unsafe load does run it (so the check above is meaningful)
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_payload(path, {"w": torch.randn(64, 64), "epoch": 1})
    raw = path.read_bytes()
    for size in (len(raw) // 2, len(raw) - 1, 1000, 100, 10):
        path.write_bytes(raw[:size])
        with pytest.raises(CheckpointError) as info:
            ckpt.load_payload(path)
        assert str(path) in str(info.value), size


def test_zip_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ckpt.load_payload(path)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n", b"hello"], ids=["empty", "text", "word"])
def test_empty_or_text_file_is_refused(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="best.pt"):
        ckpt.load_payload(path)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"format": "someone-else", "version": 1, "model": {}}, "not a charlm checkpoint"),
        ({"version": 1, "model": {}}, "not a charlm checkpoint"),
        ([1, 2, 3], "not a charlm checkpoint"),
        ({"format": ckpt.FORMAT, "version": 2}, "version 2"),
        ({"format": ckpt.FORMAT}, "version None"),
    ],
)
def test_wrong_format_or_version_is_refused(tmp_path, payload, match):
    path = tmp_path / "x.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=match):
        ckpt.load_payload(path)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.load_payload(tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_run_model(tmp_path)


# ---------------------------------------------------------------------------------------------------
# run folders


def test_latest_run_picks_the_newest_last_checkpoint(tmp_path):
    for name, mtime in [("a", 1_000_000), ("b", 3_000_000), ("c", 2_000_000)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / rundir.LAST).write_bytes(b"x")
        os.utime(tmp_path / name / rundir.LAST, (mtime, mtime))
    (tmp_path / "d").mkdir()  # newer, but has only best.pt: not a candidate
    (tmp_path / "d" / rundir.BEST).write_bytes(b"x")
    (tmp_path / "a" / rundir.BEST).write_bytes(b"x")  # a newer best.pt does not count either
    assert RunDir.latest(tmp_path).path == tmp_path / "b"
    os.utime(tmp_path / "a" / rundir.LAST, (4_000_000, 4_000_000))
    assert RunDir.latest(tmp_path).path == tmp_path / "a"


def test_latest_run_without_runs(tmp_path):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.latest(tmp_path)
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.latest(tmp_path / "missing")


def test_resolve_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="no trained run"):
        RunDir.resolve(None)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / rundir.LAST).write_bytes(b"x")
    assert RunDir.resolve(None).path.resolve() == (tmp_path / "runs" / "r1").resolve()
    assert RunDir.resolve(tmp_path / "runs" / "r1").path == tmp_path / "runs" / "r1"
    with pytest.raises(CheckpointError, match="not found"):
        RunDir.resolve(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------
# load_model


@pytest.mark.parametrize(
    "args",
    [
        dict(kind="lstm", hidden_size=16, num_layers=2, dropout=0.3, input="embedding", embed_size=8),
        dict(kind="rnn_tanh", hidden_size=12, input="onehot"),
        dict(kind="gru", hidden_size=8, input="embedding", embed_size=8, tie_weights=True),
    ],
    ids=["lstm", "rnn_tanh-onehot", "gru-tied"],
)
def test_load_model_rebuilds_the_saved_model(tmp_path, args):
    torch.manual_seed(0)
    vocab = Vocab("分开不的我ab \n")
    config = load_config(None, ["model.kind=gru", "train.lr=0.01"])
    model = make_rnn(len(vocab), **args)
    ckpt.save_payload(tmp_path / rundir.BEST, train_like_payload(model, vocab, config))
    loaded, loaded_vocab, saved = load_run_model(tmp_path, "best")
    loaded_config, state = saved.config, saved.train_state

    assert loaded_vocab == vocab
    assert loaded_config == config
    assert state.epoch == 3 and state.step == 42 and state.last_record["val_ppl"] == 15.6
    assert not loaded.training
    assert loaded.config == model.config and loaded.vocab_size == model.vocab_size
    model.eval()
    x = torch.randint(0, len(vocab), (3, 9))
    with torch.no_grad():
        expected, expected_state = model(x)
        got, got_state = loaded(x)
    assert torch.equal(got, expected)
    if isinstance(expected_state, tuple):
        assert isinstance(got_state, tuple)
        assert all(torch.equal(a, b) for a, b in zip(got_state, expected_state, strict=True))
    else:
        assert torch.equal(got_state, expected_state)
    if args.get("tie_weights"):
        assert loaded.head.weight is loaded.embedding.weight


def test_load_model_last_and_best_are_separate(tmp_path):
    vocab = Vocab("abc")
    config = Config()
    best = make_rnn(3, kind="gru", hidden_size=4)
    last = make_rnn(3, kind="gru", hidden_size=4)
    ckpt.save_payload(tmp_path / rundir.BEST, train_like_payload(best, vocab, config))
    ckpt.save_payload(tmp_path / rundir.LAST, train_like_payload(last, vocab, config))
    got_best, *_ = load_run_model(tmp_path, "best")
    got_last, *_ = load_run_model(tmp_path, "last")
    assert torch.equal(got_best.head.weight, best.head.weight)
    assert torch.equal(got_last.head.weight, last.head.weight)
    with pytest.raises(CheckpointError, match="best or last"):
        load_run_model(tmp_path, "middle")


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p["model_args"].update(hidden_size=99),  # weights of another shape
        lambda p: p.pop("vocab"),
        lambda p: p["config"]["train"].update(lrr=0.1),  # a config this charlm cannot read
        lambda p: p["model_args"].update(kind="transformer"),
    ],
    ids=["shape", "no-vocab", "bad-config", "bad-kind"],
)
def test_load_model_with_a_mismatched_payload(tmp_path, damage):
    model = make_rnn(3, kind="gru", hidden_size=4)
    payload = train_like_payload(model, Vocab("abc"), Config())
    damage(payload)
    ckpt.save_payload(tmp_path / rundir.BEST, payload)
    with pytest.raises(CheckpointError, match="does not match"):
        load_run_model(tmp_path)
