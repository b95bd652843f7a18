"""Small builders shared by tests."""

from __future__ import annotations

from charlm.config import ModelConfig
from charlm.model import CharRNN


def make_rnn(
    vocab_size: int,
    kind: str = "lstm",
    hidden_size: int = 256,
    num_layers: int = 1,
    dropout: float = 0.0,
    input: str = "onehot",
    embed_size: int = 256,
    tie_weights: bool = False,
    **rest,
) -> CharRNN:
    """A CharRNN from keyword settings, with plain defaults for tests (one-hot, no dropout, untied) rather
    than ModelConfig's recipe defaults; `rest`: any other ModelConfig field."""
    cfg = ModelConfig(
        kind=kind,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        input=input,
        embed_size=embed_size,
        tie_weights=tie_weights,
        **rest,
    )
    return CharRNN(cfg, vocab_size)


def save_untrained_run(folder, corpus, settings=()):
    """A run folder (best.pt and last.pt) holding a freshly initialised model of configs/tiny.yaml on `corpus`
    with `settings` (KEY=VALUE): for tests of the commands that read a run, on any model kind, in a second."""
    from pathlib import Path

    from charlm.config import load_config
    from charlm.data import load_corpus
    from charlm.store import checkpoint

    config = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", [f"data.corpus={corpus}", *settings]
    )
    loaded = load_corpus(config.data)
    model = CharRNN(config.model, len(loaded.vocab))
    saved = checkpoint.Checkpoint(model.state_dict(), config.model, loaded.vocab.chars, config, loaded.sha256)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("best.pt", "last.pt"):
        checkpoint.save(folder / name, saved)
    return folder


LINES = ["the cat sat on the mat", "and then ran far away", "a dog sat on a log", "then the cat ran away"]


def lines_run(folder, *, lines: int, settings=()):
    """A run folder (save_untrained_run) on a corpus of LINES in a seeded random order, `lines` of them, written
    beside the folder: a text the training split's counts know by heart and an untrained model does not."""
    import numpy as np

    rng = np.random.default_rng(0)
    corpus = folder.parent / "corpus.txt"
    corpus.write_text("\n".join(LINES[i] for i in rng.integers(0, len(LINES), lines)) + "\n", encoding="utf-8")
    return save_untrained_run(folder, str(corpus), settings)


def screenshot_colours(png: bytes) -> int:
    """How many distinct colours a PNG screenshot has: 1 for a blank page, hundreds for a rendered one."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 24))


def surprisal_of(
    chars: list[str],
    ids: list[int],
    bits: list[float],
    nats_per_char: float,
    train_counts=None,
    note: str | None = None,
    source: str = "val split",
    epoch: int = 3,
):
    """A surprisal.Surprisal of a whole text kept (every character shown), its sums by character made here
    by hand: for tests of the breakdown and the views without a model."""
    from pathlib import Path

    import torch

    from charlm.analysis.surprisal import Surprisal

    targets = torch.tensor(ids[1 : 1 + len(bits)], dtype=torch.long)
    count = torch.bincount(targets, minlength=len(chars))
    cost = torch.bincount(targets, weights=torch.tensor(bits, dtype=torch.float64), minlength=len(chars))
    return Surprisal(
        Path("runs/x"),
        "best",
        epoch,
        source,
        chars,
        torch.tensor(ids),
        torch.tensor(bits),
        len(bits),
        len(ids),
        count,
        cost,
        nats_per_char,
        None if train_counts is None else torch.tensor(train_counts),
        note,
    )


# `python -m charlm` with every fsync of a regular file slowed down (the fault injected from the test side, never
# through a hook in charlm), so that a signal or a SIGKILL lands in the middle of a write: between a temp file's
# last byte and its rename. The pause in seconds is the first argument, the CLI's arguments follow.
SLOW_FSYNC = """
import os, stat, sys, time
fsync, pause = os.fsync, float(sys.argv.pop(1))
def slow_fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        time.sleep(pause)
    return fsync(fd)
os.fsync = slow_fsync
from charlm.cli.main import entry
entry()
"""


def make_unreadable(path, damage: str) -> bool:
    """Turn `path` into a cache file charlm must not read: a FIFO (reading waits forever), a link to /dev/zero
    (reading never ends), a folder, or a file past machine.MAX_CACHE_BYTES. False for any other `damage` (the
    caller writes its own content); skips where FIFOs are not POSIX's."""
    import os

    import pytest

    from charlm.files.machine import MAX_CACHE_BYTES

    if damage in ("fifo", "dev-zero") and not hasattr(os, "mkfifo"):
        pytest.skip("FIFOs and /dev/zero are POSIX")
    if damage == "fifo":
        os.mkfifo(path)
    elif damage == "dev-zero":
        path.symlink_to("/dev/zero")
    elif damage == "folder":
        path.mkdir()
    elif damage == "huge":
        with open(path, "wb") as f:
            f.truncate(MAX_CACHE_BYTES + 1)
    else:
        return False
    return True


def serving(app):
    """A context manager: `app` served by uvicorn on a free port of 127.0.0.1 in a thread; gives the base URL,
    and stops the server (its lifespan ends: workers closed) on leaving."""
    import contextlib
    import threading
    import time

    import uvicorn

    from charlm.serve.server import listen, url, uvicorn_config

    @contextlib.contextmanager
    def serve():
        sock = listen("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn_config(app))  # charlm serve's own (its connection bounds), in a thread
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "the test server did not start"
        try:
            yield url(sock)
        finally:
            server.should_exit = True
            thread.join(30)
            sock.close()

    return serve()


def tiny_timemachine_model(root):
    """A tiny run trained for one epoch on the start of The Time Machine (shipped), loaded: the serve tests'
    model."""
    from pathlib import Path

    import charlm

    configs = Path(__file__).resolve().parent.parent / "configs"
    settings = ["data.corpus=timemachine", "data.max_chars=5000", "train.epochs=1", "sample.preview_every=0"]
    summary = charlm.train(charlm.load_config(configs / "tiny.yaml", settings), Path(root) / "run")
    return charlm.load(summary.run_dir)


def replace_sample_next(monkeypatch, before):
    """Every choice of a next character (alone or in a server's batch) calls before() first."""
    from charlm.generation import sampling
    from charlm.serve import batch as batch_module

    original = sampling.sample_next

    def replaced(*args, **kwargs):
        before()
        return original(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_next", replaced)
    monkeypatch.setattr(batch_module, "sample_next", replaced)


def until(condition, what: str, seconds: float = 20) -> None:
    """Wait for `condition()` (polled), failing with `what` after `seconds`."""
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.01)
