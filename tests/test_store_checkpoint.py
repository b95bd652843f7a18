"""Checkpoints and run folders: atomic writes, safe loading, latest run, rebuilding a model."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch
from helpers import make_rnn

from charlm.config import Config, load_config
from charlm.data import Vocab
from charlm.errors import CheckpointError
from charlm.model import CharRNN
from charlm.store import checkpoint as ckpt
from charlm.store import layout
from charlm.store.run_dir import RunDir

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
        "model": model.state_dict(),
        "model_args": {"vocab_size": len(vocab), **dataclasses.asdict(model.config)},
        "vocab": vocab.chars,
        "config": config.to_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "step": 42,
        "metrics": {"epoch": 3, "train_loss": 2.5, "val_loss": 2.75, "val_ppl": 15.6},
        "corpus_sha256": "ab" * 32,
        "torch_rng": torch.get_rng_state(),
        "data_rng": generator.get_state(),
        "best_val_loss": 2.75,
    }


def load_run_model(folder, which: str = "best"):
    return ckpt.load_model(RunDir(folder).checkpoint(which))


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------
# save / load


def test_save_load_round_trip(tmp_path):
    payload = {
        "weights": torch.randn(3, 4),
        "ids": torch.arange(5, dtype=torch.int16),
        "nested": {"a": [1, 2.5, None]},
        "text": "分开",
        "flag": True,
    }
    path = tmp_path / "x.pt"
    ckpt.save_payload(path, payload)
    loaded = ckpt.load_payload(path)
    assert loaded["format"] == ckpt.FORMAT and loaded["version"] == ckpt.VERSION
    assert torch.equal(loaded["weights"], payload["weights"])
    assert loaded["ids"].dtype == torch.int16 and torch.equal(loaded["ids"], payload["ids"])
    assert loaded["nested"] == {"a": [1, 2.5, None]} and loaded["text"] == "分开" and loaded["flag"] is True
    assert loaded["weights"].device.type == "cpu"


# ---------------------------------------------------------------------------------------------------
# refusing bad checkpoints


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_crafted_pickle_is_refused_and_runs_no_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    path = run / layout.BEST
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
    ckpt.save_payload(tmp_path / layout.BEST, train_like_payload(model, vocab, config))
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
    ckpt.save_payload(tmp_path / layout.BEST, train_like_payload(best, vocab, config))
    ckpt.save_payload(tmp_path / layout.LAST, train_like_payload(last, vocab, config))
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
    ckpt.save_payload(tmp_path / layout.BEST, payload)
    with pytest.raises(CheckpointError, match="does not match"):
        load_run_model(tmp_path)


@pytest.mark.parametrize(
    "args",
    [
        {"num_layers": 100_000},
        {"hidden_size": 10**9},
        {"hidden_size": 2**16, "num_layers": 1024},
        {"kind": "lstm", "num_layers": 1024},
    ],
    ids=["layers", "width", "both-bounded", "kind-and-layers"],
)
def test_model_args_of_absurd_sizes_are_compared_with_the_weights_before_anything_is_built(tmp_path, args):
    """A checkpoint's model_args (not validated as a config is) that disagree with its small weights: refused at
    once by the shapes they imply, never by building (180 s for 100,000 layers, or a 10^18-byte allocation)."""
    import time

    model = make_rnn(3, kind="gru", hidden_size=4)
    payload = train_like_payload(model, Vocab("abc"), Config())
    payload["model_args"].update(args)
    ckpt.save_payload(tmp_path / layout.BEST, payload)
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="does not match"):
        load_run_model(tmp_path)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["head.weight", "rnn.weight_hh_l0", "rnn.bias_ih_l0"])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(tmp_path, value, name):
    model = make_rnn(3, kind="gru", hidden_size=4)
    payload = train_like_payload(model, Vocab("abc"), Config())
    payload["model"] = {k: v.clone() for k, v in payload["model"].items()}
    payload["model"][name].view(-1)[0] = value  # one number is enough to make every score NaN
    ckpt.save_payload(tmp_path / layout.BEST, payload)
    with pytest.raises(CheckpointError, match=rf"not finite numbers \(NaN or infinity in {name}\).*lower train.lr"):
        load_run_model(tmp_path)
