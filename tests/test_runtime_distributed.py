"""Data-parallel training under torchrun: N gloo processes on the CPU compute what one process computes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import make_rnn

from charlm import data
from charlm.cli.main import main
from charlm.config import DataConfig, load_config
from charlm.errors import ConfigError, CorpusError
from charlm.evaluate import evaluate
from charlm.model import CharRNN
from charlm.runtime import distributed
from charlm.store import checkpoint as ckpt
from charlm.store.run_dir import RunDir
from charlm.training.resume import gather_hidden, local_hidden
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
WORDS = ["分开", "不分开", "爱情", "你的", "微笑", "天空", "我想", "就是", "love", "rain", "回家", "风景"]
TIMING = {"chars_per_s", "train_seconds", "seconds"}

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this PyTorch build has no torch.distributed gloo backend",
)


def make_corpus(path: Path, chars: int = 3000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines, size = [], 0
    while size < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(line)
        size += len(line) + 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def settings(corpus: Path, *extra: str) -> list[str]:
    return [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", *extra]


def environment(tmp: Path) -> dict:
    # one thread per process on a 2-core machine; the encoded-corpus cache goes under tmp
    (tmp / "data").mkdir(exist_ok=True)  # CHARLM_DATA_DIR must name a folder that exists
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CHARLM_DATA_DIR": str(tmp / "data"),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }


def torchrun(tmp: Path, nproc: int, *overrides: str, run_dir: Path, resume: bool = False):
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m charlm train ...`: the real thing."""
    args = ["--config", TINY, "--run-dir", str(run_dir), *(["--resume"] if resume else [])]
    for item in overrides:
        args += ["--set", item]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "charlm",
        "train",
        *args,
    ]
    return subprocess.run(command, cwd=tmp, env=environment(tmp), capture_output=True, text=True, timeout=600)


def charlm(tmp: Path, *args: str, **options):
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        cwd=tmp,
        env=environment(tmp),
        capture_output=True,
        text=True,
        timeout=600,
        **options,
    )


def single(*overrides: str, run_dir: Path, resume: bool = False) -> dict:
    return train(load_config(TINY, list(overrides)), run_dir, resume=resume)


def weights(run_dir: Path, name: str = "last.pt") -> dict:
    return ckpt.load_payload(run_dir / name)["model"]


def losses(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(run_dir).metrics.read() if "event" not in r]


def assert_close_runs(a: Path, b: Path, atol: float = 1e-6) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], rtol=0, atol=atol), (key, (wa[key] - wb[key]).abs().max())
    la, lb = losses(a), losses(b)
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb]
    for ra, rb in zip(la, lb, strict=True):
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5), key


# ---------------------------------------------------------------------------------------------------
# Shares of the work, without processes


def test_rank_shares_of_consecutive_and_random_batches_rebuild_the_global_batch():
    ids = torch.arange(1000)
    for world in (1, 2, 4):
        shares = [distributed.Ranks(rank=r, world_size=world).share(8) for r in range(world)]
        whole = list(data.consecutive_batches(ids, 8, 7, offset=3))
        parts = [list(data.consecutive_batches(ids, 8, 7, offset=3, share=share)) for share in shares]
        for i, (x, y) in enumerate(whole):
            assert torch.equal(torch.cat([p[i][0] for p in parts]), x)
            assert torch.equal(torch.cat([p[i][1] for p in parts]), y)
        whole = list(data.random_batches(ids, 8, 7, generator=torch.Generator().manual_seed(5)))
        parts = [
            list(data.random_batches(ids, 8, 7, generator=torch.Generator().manual_seed(5), share=share))
            for share in shares
        ]
        for i, (x, _) in enumerate(whole):
            assert torch.equal(torch.cat([p[i][0] for p in parts]), x)


def test_eval_shares_add_up_to_the_single_process_loss(monkeypatch):
    torch.manual_seed(0)
    model = make_rnn(20, "lstm", 16, input="embedding", embed_size=8)
    ids = torch.randint(0, 20, (503,))
    expected = evaluate(model, ids, batch_size=7, num_steps=10)
    monkeypatch.setattr(distributed.Ranks, "sum_", lambda self, total: total)  # add the shares up here instead
    shares = [
        evaluate(model, ids, batch_size=7, num_steps=10, ranks=distributed.Ranks(rank=r, world_size=3))
        for r in range(3)
    ]
    total = sum(s["nats_per_char"] * s["chars"] for s in shares)
    assert shares[0]["chars"] == expected["chars"]
    assert total / expected["chars"] == pytest.approx(expected["nats_per_char"], rel=1e-6)  # float32 batches of 2-3


def test_state_gather_and_slice_round_trip():
    state = torch.arange(2 * 8 * 3.0).view(2, 8, 3)  # (layers, batch, hidden)
    parts = [local_hidden(distributed.Ranks(rank=r, world_size=4), (state, -state), 8) for r in range(4)]
    assert all(p[0].shape == (2, 2, 3) for p in parts)
    assert torch.equal(torch.cat([p[0] for p in parts], dim=1), state)
    assert torch.equal(torch.cat([p[1] for p in parts], dim=1), -state)


def test_batch_size_that_does_not_divide_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"train.batch_size 8 does not split evenly across 3 processes.*multiple"):
        distributed.check_batch(8, 3)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="batch_size"):  # checked before joining any process group
        distributed.setup("cpu", 8)


def test_without_torchrun_setup_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = distributed.setup("cpu", 7)
    assert (ranks.active, ranks.is_main, ranks.device) == (False, True, torch.device("cpu"))
    state = torch.zeros(1, 7, 3)
    assert gather_hidden(ranks, state) is state and local_hidden(ranks, state, 7) is state


def test_dry_run_prints_the_single_and_multi_node_commands(tmp_path, capsys):
    corpus = make_corpus(tmp_path / "c.txt")
    code = main(["train", "--config", TINY, "--corpus", str(corpus), "--nproc", "4", "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "torchrun --standalone --nproc_per_node 4 -m charlm train --config" in printed
    assert "--nproc 4" in printed and "2 of the 8 streams each" in printed
    assert "--nnodes NNODES --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500" in printed
    assert "--run-dir runs/tiny" in printed


# ---------------------------------------------------------------------------------------------------
# The encoded corpus, memory-mapped


def test_encoded_cache_gives_the_same_corpus_memory_mapped(tmp_path, monkeypatch):
    path = make_corpus(tmp_path / "c.txt", chars=5000)
    cfg = DataConfig(corpus=str(path), val_fraction=0.1, test_fraction=0.05)
    plain = data.load_corpus(cfg)
    cached = data.load_corpus(cfg, cache=tmp_path / "enc")
    (folder,) = (tmp_path / "enc").iterdir()
    monkeypatch.setattr("charlm.data.cache.encode_chunks", lambda *a, **k: pytest.fail("encoded again"))
    again = data.load_corpus(cfg, cache=tmp_path / "enc")
    for corpus in (cached, again):
        assert corpus.vocab == plain.vocab and corpus.sha256 == plain.sha256
        for split in ("train", "val", "test"):
            assert torch.equal(corpus.split(split), plain.split(split))
    if Path("/proc/self/maps").exists():  # the ids live in the file's pages, not in a private copy
        maps = Path("/proc/self/maps").read_text()
        spans = [line.split()[0].split("-") for line in maps.splitlines() if str(folder / "all.ids") in line]
        ptr = again.train.data_ptr()
        assert any(int(lo, 16) <= ptr < int(hi, 16) for lo, hi in spans)
    monkeypatch.undo()
    del cached, again, corpus  # unmap before cutting the file short
    with open(folder / "all.ids", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorpusError, match="damaged: delete that folder"):
        data.load_corpus(cfg, cache=tmp_path / "enc")
    path.write_text(path.read_text(encoding="utf-8") + "新的字\n", encoding="utf-8")  # another text: another entry
    changed = data.load_corpus(cfg, cache=tmp_path / "enc")
    assert changed.sha256 != plain.sha256 and len(list((tmp_path / "enc").iterdir())) == 2


# ---------------------------------------------------------------------------------------------------
# Real processes: torchrun with gloo on the CPU


@needs_gloo
@pytest.mark.parametrize("sampling", ["consecutive", "random"])
@pytest.mark.slow
def test_two_ranks_train_the_same_weights_as_one_process(tmp_path, single_thread, sampling):
    """2 ranks x 4 streams = 1 process x 8 streams, over 42 SGD steps with the state carried across epochs.

    SGD keeps the comparison tight: the two differ only in the last bits of the gradient averaging. (With
    Adam the first step divides near-zero gradients by their own size, which turns such last-bit
    differences into ~1e-6 on a few weights; the runs stay together from there.)
    """
    corpus = make_corpus(tmp_path / "c.txt")
    options = settings(
        corpus,
        f"train.sampling={sampling}",
        "train.optimizer=sgd",
        "train.lr=1.0",
        "train.epochs=2",
        "train.random_offset=true",
        "train.carry_state_across_epochs=true",
        "train.checkpoint_every_batches=5",
        "train.keep_last=20",
    )
    single(*options, run_dir=tmp_path / "one")
    result = torchrun(tmp_path, 2, *options, run_dir=tmp_path / "two")
    assert result.returncode == 0, result.stderr
    assert_close_runs(tmp_path / "one", tmp_path / "two")
    saved = ckpt.load(tmp_path / "one" / "last.pt")
    before = CharRNN(saved.model_config, len(saved.vocab)).state_dict()  # freshly initialised
    assert max((weights(tmp_path / "two")[k] - before[k]).abs().max() for k in before) > 0.1  # it trained
    one, two = (ckpt.load_payload(tmp_path / name / "ckpt-e0001-b000005.pt") for name in ("one", "two"))
    if sampling == "consecutive":  # the checkpoint holds the whole batch's carried state, in stream order
        assert two["state"].shape == one["state"].shape == (1, 8, 64)
        assert torch.allclose(two["state"], one["state"], rtol=0, atol=1e-6)
    assert two["loss_sum"].item() == pytest.approx(one["loss_sum"].item(), rel=1e-6)
    # rank 0 alone wrote the folder: one line per epoch, one progress report
    assert [r["epoch"] for r in RunDir(tmp_path / "two").metrics.read()] == [1, 2]
    assert result.stdout.count("run folder") == 2 and "2 x cpu (gloo)" in result.stdout  # banner and summary

    # a 2-rank checkpoint from the middle of epoch 2 resumes in one process as the same run
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "two", resumed)
    shutil.copy(resumed / "ckpt-e0001-b000005.pt", resumed / "last.pt")
    single(*options, run_dir=resumed, resume=True)
    assert_close_runs(tmp_path / "one", resumed)


@needs_gloo
@pytest.mark.slow
def test_a_distributed_run_resumes_from_its_checkpoint(tmp_path):
    """2 ranks for 3 epochs = 2 ranks for 1 epoch, then --resume to 3 epochs = 2 ranks resumed from a
    checkpoint in the middle of epoch 2: the same weights and losses, bit for bit, with dropout (every
    rank's generator is saved) and Adam. (A constant LR: the cosine schedule depends on train.epochs.)"""
    corpus = make_corpus(tmp_path / "c.txt")
    options = settings(
        corpus,
        "model.dropout=0.3",
        "train.random_offset=true",
        "train.schedule=constant",
        "train.checkpoint_every_batches=5",
        "train.keep_last=20",
    )
    whole, split, middle = tmp_path / "whole", tmp_path / "split", tmp_path / "middle"
    result = torchrun(tmp_path, 2, *options, "train.epochs=3", run_dir=whole)
    assert result.returncode == 0, result.stderr
    assert torchrun(tmp_path, 2, *options, "train.epochs=1", run_dir=split).returncode == 0
    result = torchrun(tmp_path, 2, *options, "train.epochs=3", run_dir=split, resume=True)
    assert result.returncode == 0, result.stderr
    assert "resuming after 1 epochs and 0 batches" in result.stdout
    shutil.copytree(whole, middle)
    shutil.copy(middle / "ckpt-e0001-b000010.pt", middle / "last.pt")
    result = torchrun(tmp_path, 2, *options, "train.epochs=3", run_dir=middle, resume=True)
    assert result.returncode == 0, result.stderr
    assert "resuming after 1 epochs and 10 batches" in result.stdout
    for run_dir in (split, middle):
        a, b = weights(whole), weights(run_dir)
        assert all(torch.equal(a[k], b[k]) for k in a), run_dir.name
        assert losses(whole) == losses(run_dir), run_dir.name
    assert len(ckpt.load_payload(middle / "last.pt")["ranks"]) == 2


@needs_gloo
def test_nproc_refuses_a_batch_that_does_not_divide_before_starting_anything(tmp_path):
    corpus = make_corpus(tmp_path / "c.txt")
    result = charlm(tmp_path, "train", "--config", TINY, "--corpus", str(corpus), "--device", "cpu", "--nproc", "3")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: train.batch_size 8 does not split evenly across 3 processes: set "
        "train.batch_size to a multiple of 3 (e.g. 9) or run a number of processes "
        "that divides 8"
    )


@needs_gloo
@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_rank_with_one_message(tmp_path):
    corpus = make_corpus(tmp_path / "c.txt")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes(b"a run is here")
    args = ["train", "--config", TINY, "--run-dir", str(run_dir), "--nproc", "2"]
    for item in settings(corpus, "train.epochs=1"):
        args += ["--set", item]
    result = charlm(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: run folder {run_dir} already holds a run: resume it with --resume, or pass a new --run-dir"
    )


@pytest.mark.parametrize(
    ("codes", "rank", "stops_quietly"),
    [
        ([2, 0], 0, False),
        ([2, 0], 1, True),  # rank 0 failed: it reports, rank 1 leaves quietly
        ([0, 1], 0, True),
        ([2, 1], 1, True),  # the lowest failing rank reports, even when others failed too
    ],
)
def test_after_an_agreed_failure_one_rank_reports_and_the_others_exit_0(monkeypatch, codes, rank, stops_quietly):
    """The launcher stops every process once one exits non-zero: a peer exiting non-zero first could kill the
    reporting rank before it printed (the launcher then exited 143). Peers exit 0; all leave the group together."""

    def gather(into, mine, group=None):
        into[:] = codes

    monkeypatch.setattr(dist, "all_gather_object", gather)
    ranks = distributed.Ranks(rank=rank, world_size=2)
    own = CorpusError("this rank's own failure") if codes[rank] else None
    if stops_quietly:
        with pytest.raises(distributed.PeerFailed) as stopped:
            ranks._settle(own)
        assert stopped.value.exit_code == 0 and stopped.value.quiet
        assert stopped.value.reported_code == next(code for code in codes if code)
    else:
        ranks._settle(own)  # the caller re-raises its own error, which the CLI prints
    assert ranks.failure_agreed


@needs_gloo
@pytest.mark.slow
def test_nproc_offline_trains_without_pytorch_warnings(tmp_path):
    """A machine with no network (a fresh network namespace: loopback only): `charlm train --nproc 2`
    rendezvous on 127.0.0.1 and the terminal shows no c10d noise (hostnames that cannot be looked up)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to cut the network (a private network namespace)")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here (no private network namespace)")
    corpus = make_corpus(tmp_path / "c.txt")
    args = [
        sys.executable,
        "-m",
        "charlm",
        "train",
        "--config",
        TINY,
        "--run-dir",
        str(tmp_path / "run"),
        "--nproc",
        "2",
    ]
    for item in settings(corpus, "train.epochs=1"):
        args += ["--set", item]
    environ = {key: value for key, value in environment(tmp_path).items() if key != "TORCH_CPP_LOG_LEVEL"}
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert (tmp_path / "run" / "best.pt").exists()


@needs_gloo
@pytest.mark.slow
def test_ctrl_c_stops_every_rank_at_the_same_batch_and_the_run_resumes(tmp_path):
    """SIGINT to `charlm train --nproc 2` (torchrun's agent passes it on): all ranks stop at one batch,
    rank 0 saves and prints the resume command, and resuming gives the uninterrupted run's weights."""
    corpus = make_corpus(tmp_path / "c.txt", chars=20000)
    options = settings(corpus, "train.epochs=4")
    args = ["train", "--config", TINY, "--nproc", "2"]
    for item in options:
        args += ["--set", item]
    whole = tmp_path / "whole"
    assert charlm(tmp_path, *args, "--run-dir", str(whole)).returncode == 0
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", *args, "--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not RunDir(run_dir).metrics.read() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until epoch 1 is written: the signal lands inside epoch 2
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert f"continue with: charlm train --nproc 2 --resume --run-dir {run_dir}" in err
    assert len(err.strip().splitlines()) == 1  # rank 0 alone says it, and the launcher adds nothing
    saved = ckpt.load_payload(run_dir / "last.pt")
    assert saved["epoch"] >= 1 and (saved["epoch"], saved["batch_in_epoch"]) != (4, 0)
    assert charlm(tmp_path, *args, "--run-dir", str(run_dir), "--resume").returncode == 0
    a, b = weights(whole), weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
