"""Runs are never lost: exact resume, signals, non-finite losses, a full disk, changed configs."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest
import torch

from charlm.config import load_config
from charlm.errors import RunError, UsageError
from charlm.events import SilentReporter
from charlm.files import fsio
from charlm.store.checkpoint import load_payload
from charlm.store.run_dir import RunDir
from charlm.training.setup import train
from charlm.training.stop import Interrupted

REPO = Path(__file__).resolve().parents[1]
TIMING = {"chars_per_s", "train_seconds", "seconds"}


def corpus(path: Path) -> Path:
    text = "".join("分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" for _ in range(40))
    path.write_text(text, encoding="utf-8")
    return path


def config(tmp_path: Path, *overrides: str):
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.corpus={corpus(tmp_path / 'corpus.txt')}",
            "train.device=cpu",
            "sample.preview_every=0",
            "train.epochs=4",
            "model.dropout=0.3",
            *overrides,
        ],
    )


def losses(run_dir: Path) -> list[dict]:
    """metrics.jsonl without timings and resume events: what must match an uninterrupted run."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in RunDir(run_dir).metrics.read() if "event" not in r]


def weights(run_dir: Path, name: str = "last.pt") -> dict:
    return load_payload(run_dir / name)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    assert losses(a) == losses(b)
    for name in ("last.pt", "best.pt"):
        wa, wb = weights(a, name), weights(b, name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


class CrashAt(SilentReporter):
    """Simulates a crash (an exception out of the loop) or a signal at a given epoch and batch."""

    def __init__(self, epoch: int, batch: int, signum: int | None = None):
        self.at, self.signum, self.epoch = (epoch, batch), signum, 0

    def epoch_start(self, epoch, num_batches, done=0):
        self.epoch = epoch

    def batch(self, done, loss):
        if (self.epoch, done) == self.at:
            if self.signum is None:
                raise RuntimeError("simulated crash")
            os.kill(os.getpid(), self.signum)


@pytest.fixture
def reference(tmp_path):
    def run(*overrides: str) -> Path:
        out = tmp_path / ("ref-" + "-".join(o.replace("=", "_").replace(".", "_") for o in overrides))
        train(config(tmp_path, *overrides), out)
        return out

    return run


@pytest.mark.parametrize("sampling", ["consecutive", "random"])
def test_crash_after_an_epoch_then_resume_is_the_same_run(tmp_path, reference, sampling):
    options = (f"train.sampling={sampling}", "train.random_offset=true", "train.carry_state_across_epochs=true")
    expected = reference(*options)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config(tmp_path, *options), run_dir, CrashAt(epoch=3, batch=4))  # dies in epoch 3
    assert load_payload(run_dir / "last.pt")["epoch"] == 2
    train(config(tmp_path, *options), run_dir, resume=True)
    assert_same_run(run_dir, expected)


@pytest.mark.parametrize("sampling", ["consecutive", "random"])
def test_crash_mid_epoch_with_batch_checkpoints_then_resume_is_the_same_run(tmp_path, reference, sampling):
    options = (f"train.sampling={sampling}", "train.checkpoint_every_batches=3")
    expected = reference(*options)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(config(tmp_path, *options), run_dir, CrashAt(epoch=2, batch=7))
    saved = load_payload(run_dir / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 6)
    train(config(tmp_path, *options), run_dir, resume=True)
    assert_same_run(run_dir, expected)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_at_the_batch_boundary_and_resume_is_the_same_run(tmp_path, reference, signum, code):
    expected = reference()
    run_dir = tmp_path / "run"
    before = signal.getsignal(signum)  # SIG_IGN when a shell started the tests in the background
    with pytest.raises(Interrupted) as info:
        train(config(tmp_path), run_dir, CrashAt(epoch=2, batch=5, signum=signum))
    assert info.value.exit_code == code
    assert f"charlm train --resume --run-dir {run_dir}" in str(info.value)
    saved = load_payload(run_dir / "last.pt")
    assert (saved["epoch"], saved["batch_in_epoch"]) == (1, 5)
    assert signal.getsignal(signum) == before  # the handler from before training is back
    train(config(tmp_path), run_dir, resume=True)
    assert_same_run(run_dir, expected)


def signal_in_final_eval(monkeypatch, signum: int, when: str) -> None:
    """The final eval, with `signum` sent to this process at `when`: as it starts, after its first window of the
    test split, or once its last window is scored (before the run is marked finished)."""
    import charlm.training.evals as evals_module

    real_final, real_evaluate = evals_module.Evals.final, evals_module.evaluate

    def evaluate(*args, progress=None, **kwargs):
        def first_window(chars):
            os.kill(os.getpid(), signum)
            progress(chars)

        return real_evaluate(*args, progress=first_window if progress else None, **kwargs)

    def final(self, requests):
        if when == "start":
            os.kill(os.getpid(), signum)
        if when == "window":
            monkeypatch.setattr(evals_module, "evaluate", evaluate)
        result = real_final(self, requests)
        if when == "end":
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(evals_module.Evals, "final", final)


@pytest.mark.parametrize(
    ("signum", "when", "stopped_by"),
    [
        (signal.SIGTERM, "start", None),
        (signal.SIGTERM, "window", None),
        (signal.SIGTERM, "end", None),
        (signal.SIGINT, "window", None),
        (getattr(signal, "SIGHUP", signal.SIGTERM), "start", None),
        (signal.SIGTERM, "window", "train.time_budget=0.001s"),
        (signal.SIGTERM, "start", "train.patience=1"),
    ],
)
def test_a_signal_in_the_final_eval_is_a_stopped_run_that_resumes_to_its_final_eval(
    tmp_path, monkeypatch, signum, when, stopped_by
):
    """Not "finished" with exit 0: Interrupted (128 + signal), the resume command, status interrupted and no final
    line; the resume then makes the final eval (the same figures as a run never stopped) and finishes."""
    settings = ("data.test_fraction=0.2", "train.epochs=2", *([stopped_by] if stopped_by else []))
    untouched = train(config(tmp_path, *settings), tmp_path / "reference")
    if stopped_by == "train.patience=1":
        settings = (*settings, "train.lr=10", "train.clip_norm=null", "train.epochs=6")  # no new best: it stops
    run_dir = tmp_path / "run"
    before = signal.getsignal(signum)
    with monkeypatch.context() as patched:
        signal_in_final_eval(patched, signum, when)
        with pytest.raises(Interrupted) as info:
            train(config(tmp_path, *settings), run_dir)
    assert info.value.exit_code == 128 + signum and signal.getsignal(signum) == before
    assert f"continue with: charlm train --resume --run-dir {run_dir}" in str(info.value)
    folder = RunDir(run_dir)
    assert folder.status.read()["state"] == "interrupted"
    if when != "end":  # after the final line (a resume drops it, as any line past the checkpoint)
        assert not [r for r in folder.metrics.read() if r.get("event") == "final"]
    summary = train(config(tmp_path, *settings), run_dir, resume=True)
    assert folder.status.read()["state"] == "finished"
    (final,) = [r for r in folder.metrics.read() if r.get("event") == "final"]
    assert final["test_chars"] > 0 and summary.final == final
    if stopped_by is None:
        assert final["test_loss"] == untouched.final["test_loss"]


def test_resume_refuses_changes_that_alter_the_computation(tmp_path):
    run_dir = tmp_path / "run"
    train(config(tmp_path, "train.epochs=1"), run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    for change, named in [
        ("model.hidden_size=32", "model.hidden_size"),
        ("train.batch_size=4", "train.batch_size"),
        ("train.lr=0.1", "train.lr"),
        ("data.newlines=space", "data.newlines"),
    ]:
        with pytest.raises(UsageError, match=named):
            train(config(tmp_path, "train.epochs=1", change), run_dir, resume=True)
    (tmp_path / "corpus.txt").write_text("一些完全不同的文字\n" * 200, encoding="utf-8")
    with pytest.raises(UsageError, match="checksum differs"):
        train(load_config(run_dir / "config.yaml"), run_dir, resume=True)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_resume_accepts_more_epochs_new_previews_and_an_explicit_lr(tmp_path):
    run_dir = tmp_path / "run"
    train(config(tmp_path, "train.epochs=1"), run_dir)
    corpus(tmp_path / "corpus.txt")
    changed = config(tmp_path, "train.epochs=2", "sample.length=5", "train.lr=0.002")
    train(changed, run_dir, resume=True, explicit={"train.epochs", "sample.length", "train.lr"})
    records = RunDir(run_dir).metrics.read()
    (event,) = [r for r in records if "event" in r]
    assert event["changed"] == {"train.epochs": [1, 2], "sample.length": [20, 5], "train.lr": [0.005, 0.002]}
    assert [r["epoch"] for r in records if "event" not in r] == [1, 2]
    assert load_config(run_dir / "config.yaml").train.epochs == 2


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="nothing to resume"):
        train(config(tmp_path), tmp_path / "empty", resume=True)
    with pytest.raises(UsageError, match="--run-dir"):
        train(config(tmp_path), None, resume=True)


@pytest.fixture
def nan_at(monkeypatch):
    """Make the training loss NaN at the given (1-based) training calls of cross_entropy."""
    import charlm.training.loop as train_module

    real = train_module.F.cross_entropy
    calls = {"n": 0}

    def install(bad: set[int] | None):
        class Patched:
            def __getattr__(self, name):
                return getattr(torch.nn.functional, name)

            @staticmethod
            def cross_entropy(*args, **kwargs):
                calls["n"] += 1
                loss = real(*args, **kwargs)
                return loss * float("nan") if bad is None or calls["n"] in bad else loss

        monkeypatch.setattr(train_module, "F", Patched())

    return install


def test_a_nan_loss_stops_naming_epoch_and_batch_and_keeps_the_last_checkpoint(tmp_path, nan_at):
    run_dir = tmp_path / "run"
    train(config(tmp_path, "train.epochs=1"), run_dir)
    good = (run_dir / "last.pt").read_bytes()
    nan_at({4})  # the 4th batch after resuming: epoch 2, batch 4
    with pytest.raises(RunError, match=r"NaN/Inf loss or gradient norm at epoch 2, batch 4: lower train.lr") as info:
        train(config(tmp_path, "train.epochs=2"), run_dir, resume=True)
    assert "last good checkpoint" in str(info.value)
    assert (run_dir / "last.pt").read_bytes() == good
    assert [r["epoch"] for r in RunDir(run_dir).metrics.read() if "event" not in r] == [1]


def test_a_real_divergence_is_caught(tmp_path):
    explode = config(
        tmp_path, "model.kind=rnn_relu", "train.optimizer=sgd", "train.lr=1e6", "train.clip_norm=null", "train.epochs=1"
    )
    with pytest.raises(RunError, match="NaN/Inf"):
        train(explode, tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_skip_mode_drops_non_finite_batches_and_counts_them(tmp_path, nan_at):
    nan_at({3, 5})
    train(config(tmp_path, "train.on_nonfinite=skip", "train.epochs=1"), tmp_path / "run")
    (record,) = RunDir(tmp_path / "run").metrics.read()
    assert record["skipped_batches"] == 2
    assert record["train_loss"] == record["train_loss"]  # finite: the NaN batches were left out


def test_skip_mode_stops_after_the_limit(tmp_path, nan_at):
    nan_at(None)
    with pytest.raises(RunError, match="more than train.max_nonfinite=3"):
        train(config(tmp_path, "train.on_nonfinite=skip", "train.max_nonfinite=3"), tmp_path / "run")


def test_a_full_disk_is_a_clear_error_and_the_previous_checkpoint_still_loads(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    saves = []
    real_write = fsio.atomic_write

    def write(path, writer):
        if Path(path).suffix == ".pt":
            saves.append(path)
            if len(saves) > 2:  # epoch 1 writes best.pt and last.pt; then the disk is full
                raise RunError(f"cannot write {path} (No space left on device): free disk space")
        real_write(path, writer)

    monkeypatch.setattr(fsio, "atomic_write", write)
    with pytest.raises(RunError, match="No space left"):
        train(config(tmp_path), run_dir)
    monkeypatch.undo()
    assert load_payload(run_dir / "last.pt")["epoch"] == 1
    assert not list(run_dir.glob(".*.tmp"))


def test_atomic_write_turns_enospc_into_a_run_error_and_leaves_the_old_file(tmp_path):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def fail(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunError, match="No space left on device"):
        fsio.atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_keep_last_keeps_that_many_older_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    train(config(tmp_path, "train.keep_last=2"), run_dir)
    kept = sorted(p.name for p in run_dir.glob("ckpt-*.pt"))
    assert kept == ["ckpt-e0003-b000000.pt", "ckpt-e0004-b000000.pt"]
    train(config(tmp_path), tmp_path / "plain")
    assert not list((tmp_path / "plain").glob("ckpt-*.pt"))


def test_metrics_written_after_the_last_checkpoint_are_recomputed_not_duplicated(tmp_path, reference):
    expected = reference("train.keep_last=4")
    run_dir = tmp_path / "run"
    train(config(tmp_path, "train.keep_last=4"), run_dir)
    # as if the process died after appending epoch 4's line (and half of another) but before its last.pt
    (run_dir / "last.pt").write_bytes((run_dir / "ckpt-e0003-b000000.pt").read_bytes())
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"epoch": 4, "train_lo')
    assert [r["epoch"] for r in RunDir(run_dir).metrics.read()] == [1, 2, 3, 4]  # the torn line is ignored
    train(config(tmp_path, "train.keep_last=4"), run_dir, resume=True)
    assert [r["epoch"] for r in losses(run_dir)] == [1, 2, 3, 4]
    assert_same_run(run_dir, expected)


@pytest.mark.parametrize(
    "options", [("train.variable_bptt=true",), ("train.eval_every_batches=4", "train.schedule=plateau")]
)
def test_variable_bptt_and_in_epoch_evals_resume_mid_epoch_as_the_same_run(tmp_path, reference, options):
    options = (*options, "train.checkpoint_every_batches=3")
    expected = reference(*options)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        train(config(tmp_path, *options), run_dir, CrashAt(epoch=2, batch=7))
    train(config(tmp_path, *options), run_dir, resume=True)
    assert_same_run(run_dir, expected)


def test_deterministic_resume_with_dropout_between_layers_is_the_same_run_and_saves_the_usual_layout(
    tmp_path, reference
):
    # train.deterministic runs the layers apart, the dropout between them drawn from torch's saved generator
    options = (
        "model.kind=lstm",
        "model.num_layers=2",
        "model.dropout_hidden=0.4",
        "train.deterministic=true",
        "train.checkpoint_every_batches=3",
    )
    expected = reference(*options)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config(tmp_path, *options), run, CrashAt(epoch=2, batch=7))
    train(config(tmp_path, *options), run, resume=True)
    assert_same_run(run, expected)
    assert "rnn.weight_ih_l1" in weights(run)  # the config's own layout: every reader of a checkpoint builds it
    # and it resumes without train.deterministic too (the fused layers take the same weights)
    train(config(tmp_path, *options[:-2], "train.epochs=5"), run, resume=True)
    assert [r["epoch"] for r in losses(run)][-1] == 5


# ---------------------------------------------------------------------------------------------------
# train.precision on resume: fp16's loss scale, a run folder from before train.precision, auto elsewhere


def test_an_fp16_run_resumes_mid_epoch_as_the_same_run_with_its_loss_scale(tmp_path, reference):
    from charlm.runtime.capability import cpu_fp16_kernel

    if not cpu_fp16_kernel("gru"):  # tiny.yaml's model
        pytest.skip("this torch has no float16 GRU kernel on this CPU")
    options = ("train.precision=fp16", "train.checkpoint_every_batches=3")
    expected = reference(*options)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config(tmp_path, *options), run_dir, CrashAt(epoch=2, batch=7))
    train(config(tmp_path, *options), run_dir, resume=True)
    assert_same_run(run_dir, expected)
    # the growth tracker counts steps since the last overflow: a scaler started afresh on resume would count
    # only the resumed steps
    resumed, whole = load_payload(run_dir / "last.pt")["scaler"], load_payload(expected / "last.pt")["scaler"]
    assert resumed == whole and whole["_growth_tracker"] > 0


def as_before_precision(run_dir: Path, bf16: bool) -> None:
    """Make a run folder as a charlm from before train.precision wrote it: `bf16:` in config.yaml and in each
    checkpoint's config, no loss scaler, no checksum."""
    from charlm.store.checkpoint import save_payload

    text = (run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "  precision: " in text
    lines = [f"  bf16: {str(bf16).lower()}" if line.startswith("  precision: ") else line for line in text.splitlines()]
    (run_dir / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in run_dir.glob("*.pt"):
        payload = load_payload(path)
        payload["config"]["train"].pop("precision")
        payload["config"]["train"]["bf16"] = bf16
        payload.pop("scaler")
        save_payload(path, {k: v for k, v in payload.items() if k not in ("format", "version")})


@pytest.mark.parametrize(("precision", "bf16"), [("fp32", False), ("bf16", True)])
def test_a_run_folder_from_before_train_precision_resumes_as_the_same_run(tmp_path, reference, precision, bf16):
    options = (f"train.precision={precision}",)
    expected = reference(*options)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(config(tmp_path, *options), run_dir, CrashAt(epoch=3, batch=4))
    as_before_precision(run_dir, bf16)
    assert load_config(run_dir / "config.yaml").train.precision == precision
    train(load_config(run_dir / "config.yaml"), run_dir, resume=True)  # what `charlm train --resume` reads
    assert_same_run(run_dir, expected)
    assert f"  precision: {precision}\n" in (run_dir / "config.yaml").read_text(encoding="utf-8")


def test_an_auto_run_resumes_in_what_it_chose_and_changes_only_when_asked(tmp_path, monkeypatch):
    from charlm.runtime import capability

    run_dir = tmp_path / "run"
    monkeypatch.setattr(capability, "cpu_bf16_native", lambda: True)
    train(config(tmp_path, "train.epochs=1", "train.precision=auto"), run_dir)  # auto: bf16 here
    monkeypatch.setattr(capability, "cpu_bf16_native", lambda: False)  # resumed on a CPU without bf16
    again = config(tmp_path, "train.epochs=2", "train.precision=auto")  # auto: fp32 there
    with pytest.raises(UsageError, match=r"changed train.precision \('bf16' -> 'fp32'\)"):
        train(again, run_dir, resume=True, explicit={"train.epochs"})
    train(again, run_dir, resume=True, explicit={"train.epochs", "train.bf16"})  # --set, in either spelling
    (event,) = [r for r in RunDir(run_dir).metrics.read() if r.get("event") == "resume"]
    assert event["changed"]["train.precision"] == ["bf16", "fp32"]
    assert load_config(run_dir / "config.yaml").train.precision == "fp32"
