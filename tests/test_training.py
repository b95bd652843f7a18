"""The training loop, in process: determinism, schedule, clipping, best checkpoint, the d2l seed run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from charlm.config import TrainConfig, load_config
from charlm.errors import UsageError
from charlm.events import SilentReporter
from charlm.store.checkpoint import load_payload
from charlm.training.schedule import lr_at
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]


def tiny_corpus(path: Path) -> Path:
    text = "".join("分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" for _ in range(60))
    path.write_text(text, encoding="utf-8")
    return path


def tiny(tmp_path: Path, *overrides: str):
    corpus = tiny_corpus(tmp_path / "corpus.txt")
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", *overrides],
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sampling", ["consecutive", "random"])
def test_same_config_and_seed_give_identical_losses(tmp_path, sampling):
    cfg = tiny(tmp_path, f"train.sampling={sampling}", "model.dropout=0.2", "train.random_offset=true")
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    keys = ("train_loss", "val_loss", "grad_norm")
    a = [[r[k] for k in keys] for r in metrics(tmp_path / "a")]
    b = [[r[k] for k in keys] for r in metrics(tmp_path / "b")]
    assert a == b
    other = tiny(
        tmp_path, f"train.sampling={sampling}", "model.dropout=0.2", "train.random_offset=true", "train.seed=1"
    )
    train(other, tmp_path / "c")
    assert [r["train_loss"] for r in metrics(tmp_path / "c")] != [r[0] for r in a]


def test_lr_schedule_warmup_then_cosine_to_min_lr():
    t = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, schedule="cosine")
    assert lr_at(0, 110, t) == pytest.approx(0.1)
    assert lr_at(9, 110, t) == pytest.approx(1.0)
    assert lr_at(10, 110, t) == pytest.approx(1.0)
    assert lr_at(60, 110, t) == pytest.approx(0.55)
    assert lr_at(110, 110, t) == pytest.approx(0.1)
    constant = TrainConfig(lr=0.5, warmup_steps=0, schedule="constant")
    assert {lr_at(s, 100, constant) for s in range(100)} == {0.5}


def test_grad_norm_is_measured_before_clipping(tmp_path):
    train(tiny(tmp_path, "train.clip_norm=0.001", "train.epochs=1"), tmp_path / "run")
    (record,) = metrics(tmp_path / "run")
    assert record["grad_norm"] > 0.001 * 10


def test_best_checkpoint_is_the_lowest_val_loss(tmp_path):
    # a large constant lr makes val loss go up after a while, so best != last
    train(tiny(tmp_path, "train.epochs=6", "train.lr=0.05", "train.schedule=constant"), tmp_path / "run")
    records = metrics(tmp_path / "run")
    best = min(records, key=lambda r: r["val_loss"])
    assert load_payload(tmp_path / "run" / "best.pt")["epoch"] == best["epoch"]
    assert load_payload(tmp_path / "run" / "last.pt")["epoch"] == records[-1]["epoch"]


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    cfg = tiny(tmp_path, "train.epochs=1")
    train(cfg, tmp_path / "run")
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    with pytest.raises(UsageError, match="already holds a run"):
        train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before


class Recorder(SilentReporter):
    def __init__(self):
        self.info, self.previews, self.warnings = {}, [], []

    def start(self, info):
        self.info = info

    def warn(self, message):
        self.warnings.append(message)

    def preview(self, epoch, samples):
        self.previews.append((epoch, samples))


def test_previews_follow_preview_every_and_skip_unknown_prefixes(tmp_path):
    cfg = tiny(tmp_path, "train.epochs=4", "sample.preview_every=2", "sample.prefixes=[分开, xyz]")
    recorder = Recorder()
    train(cfg, tmp_path / "run", recorder)
    assert [epoch for epoch, _ in recorder.previews] == [2, 4]
    assert all(len(samples) == 1 and samples[0].startswith("分开") for _, samples in recorder.previews)
    assert any("xyz" in w for w in recorder.warnings)


@pytest.mark.slow
def test_d2l_seed_experiment_reproduces(builtin_cache, tmp_path):
    """configs/d2l-jaychou-rnn.yaml: vocab 1,027 and train perplexity <= 1.10 at epoch 250 (d2l: 1.02)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config(REPO / "configs" / "d2l-jaychou-rnn.yaml", ["train.device=cpu"])
    recorder = Recorder()
    summary = train(cfg, tmp_path / "run", recorder)
    assert recorder.info.vocab_size == 1027
    assert recorder.info.train_chars == 10000 and recorder.info.val_chars == 0
    records = metrics(tmp_path / "run")
    assert len(records) == 250 and summary.monitored == "train_loss"
    assert records[-1]["train_ppl"] <= 1.10
    assert records[49]["train_ppl"] < 100 and math.isfinite(records[49]["train_ppl"])
    assert [epoch for epoch, _ in recorder.previews] == [50, 100, 150, 200, 250]
    for _, (a, b) in recorder.previews:
        assert a.startswith("分开") and b.startswith("不分开") and len(a) == 52 and len(b) == 53


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_loads_on_cpu_with_bf16(tmp_path):
    from charlm.evaluate import evaluate
    from charlm.store.checkpoint import load_model
    from charlm.store.run_dir import RunDir

    cfg = tiny(tmp_path, "train.device=cuda", "train.precision=bf16", "train.epochs=1")
    train(cfg, tmp_path / "run")
    model, vocab, _ = load_model(RunDir(tmp_path / "run").checkpoint("best"), "cpu")
    assert next(model.parameters()).device.type == "cpu"
    corpus_ids = torch.tensor(vocab.encode("分开不分开 我想就这样牵着你的手不放开\n"))
    assert math.isfinite(evaluate(model, corpus_ids, batch_size=2, num_steps=8)["perplexity"])


# ---------------------------------------------------------------------------------------------------
# Schedules, early stopping, time budget, in-epoch and subsampled evals


def test_step_and_plateau_schedules_scale_the_lr_and_respect_min_lr():
    t = TrainConfig(lr=0.1, warmup_steps=0, schedule="step", min_lr=0.02)
    assert lr_at(5, 100, t, scale=0.5) == pytest.approx(0.05)
    assert lr_at(5, 100, t, scale=0.125) == pytest.approx(0.02)  # floored at min_lr
    t = TrainConfig(lr=0.1, warmup_steps=0, schedule="cosine", min_lr=0.0)
    assert lr_at(0, 100, t, time_fraction=0.5) == pytest.approx(0.05)  # a time budget half used: half way
    assert lr_at(90, 100, t, time_fraction=0.1) == lr_at(90, 100, t)  # whichever is further along
    assert lr_at(0, 100, t, time_fraction=1.0) == pytest.approx(0.0)


def records(run_dir: Path) -> list[dict]:
    return [r for r in metrics(run_dir) if "event" not in r]


def overfitting(tmp_path: Path, *overrides: str):
    """Train on 'abc' cycles, validate on 'cba' cycles: the better the model fits, the worse val gets."""
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc" * 600 + "cba" * 60, encoding="utf-8")
    return load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.corpus={corpus}",
            "data.val_fraction=0.0909",
            "train.device=cpu",
            "sample.preview_every=0",
            "train.epochs=30",
            "train.warmup_steps=0",
            "train.schedule=constant",
            *overrides,
        ],
    )


def test_early_stopping_stops_after_patience_evals_without_a_new_best(tmp_path):
    summary = train(overfitting(tmp_path, "train.patience=3", "train.eval_every_batches=4"), tmp_path / "run")
    rows = records(tmp_path / "run")
    assert summary.stopped == "early_stopping" and rows[-1]["stopped"] == "early_stopping"
    assert summary.epochs_run < 30
    val = [r["val_loss"] for r in rows]
    best = val.index(min(val))
    assert len(val) - 1 - best == 3  # exactly `patience` evals after the best one
    assert summary.best_loss == min(val)
    saved = load_payload(tmp_path / "run" / "best.pt")
    assert saved["step"] == rows[best]["step"]  # best.pt is the best eval's weights, even inside an epoch


def test_eval_every_epochs_evaluates_every_nth_epoch_and_the_last(tmp_path):
    summary = train(overfitting(tmp_path, "train.epochs=7", "train.eval_every_epochs=3"), tmp_path / "run")
    assert [r["epoch"] for r in records(tmp_path / "run")] == [3, 6, 7]
    assert summary.epochs_run == 7
    assert load_payload(tmp_path / "run" / "last.pt")["epoch"] == 7


def test_plateau_schedule_decays_the_lr_after_each_eval_without_improvement(tmp_path):
    train(
        overfitting(
            tmp_path,
            "train.schedule=plateau",
            "train.plateau_patience=0",
            "train.decay_factor=0.5",
            "train.min_lr=0",
            "train.epochs=6",
        ),
        tmp_path / "run",
    )
    rows = records(tmp_path / "run")
    best, expected_lr = math.inf, 0.005
    for row in rows:
        assert row["lr"] == pytest.approx(expected_lr)
        if row["val_loss"] < best:
            best = row["val_loss"]
        else:
            expected_lr *= 0.5
    assert expected_lr < 0.005  # it did decay


def test_step_schedule_decays_every_decay_every_epochs(tmp_path):
    train(
        tiny(
            tmp_path,
            "train.schedule=step",
            "train.decay_every=2",
            "train.decay_factor=0.1",
            "train.warmup_steps=0",
            "train.min_lr=0",
            "train.epochs=5",
        ),
        tmp_path / "run",
    )
    assert [r["lr"] for r in records(tmp_path / "run")] == pytest.approx([5e-3, 5e-3, 5e-4, 5e-4, 5e-5])


def test_time_budget_stops_cleanly_keeps_best_and_scores_the_test_split(tmp_path):
    cfg = tiny(tmp_path, "train.time_budget=2s", "train.epochs=100000", "data.test_fraction=0.1")
    summary = train(cfg, tmp_path / "run")
    assert summary.stopped == "time_budget"
    # the budget is checked between batches: it stops within a batch or two of 2 s, however fast the machine
    per_batch = summary.train_seconds / max(1, records(tmp_path / "run")[-1]["step"])
    assert 2.0 <= summary.train_seconds <= 2.0 + 2 * per_batch + 0.5
    rows = records(tmp_path / "run")
    assert rows[-1]["stopped"] == "time_budget" and rows[-1]["train_seconds"] >= 2.0
    final = metrics(tmp_path / "run")[-1]
    assert final["event"] == "final" and final["test_protocol"] == "full"
    assert final["test_loss"] == summary.final["test_loss"]
    from charlm.evaluate import TextSource, score_run

    result, _ = score_run(tmp_path / "run", "best", TextSource(split="test"))  # what charlm perplexity reports
    assert result["nats_per_char"] == pytest.approx(final["test_loss"], rel=1e-9)
    assert (tmp_path / "run" / "best.pt").exists()


def test_subsampled_training_evals_say_so_and_the_final_eval_is_full(tmp_path):
    summary = train(tiny(tmp_path, "train.eval_chars=64", "train.eval_every_batches=5"), tmp_path / "run")
    rows = records(tmp_path / "run")
    assert all(r["val_protocol"].startswith("first") and r["val_chars"] <= 64 for r in rows)
    assert any(r["batch"] < 1000 and r["epochs_done"] % 1 for r in rows)  # evals inside the epochs
    final = summary.final
    assert final["val_protocol"] == "full" and final["val_chars"] > 64
    from charlm.evaluate import TextSource, score_run

    result, _ = score_run(tmp_path / "run", "best", TextSource(split="val"))
    assert result["nats_per_char"] == pytest.approx(final["val_loss"], rel=1e-9)


def test_variable_bptt_runs_are_reproducible_and_vary_the_window(tmp_path):
    cfg = tiny(tmp_path, "train.variable_bptt=true", "train.num_steps=12")
    a, b = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    assert a.losses == b.losses
    plain = train(tiny(tmp_path, "train.num_steps=12"), tmp_path / "c")
    assert plain.losses != a.losses


def test_weight_decay_skips_biases(tmp_path):
    from helpers import make_rnn

    from charlm.training.schedule import make_optimizer

    model = make_rnn(9, "lstm", hidden_size=8, num_layers=2, input="embedding", embed_size=8, tie_weights=True)
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.1, optimizer="adamw"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_the_guide_python_example_runs_as_written(builtin_cache, tmp_path, monkeypatch, capsys):
    guide = (REPO / "docs" / "export.md").read_text(encoding="utf-8")  # the Python API's page
    (example,) = [
        block.split("```", 1)[0]
        for block in guide.split("```python\n")[1:]
        if "from charlm.training import train" in block
    ]
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)  # its run folder goes under tmp_path/runs
    exec(compile(example, "docs/export.md", "exec"), {})
    run_dir, best_loss = capsys.readouterr().out.split()
    assert Path(run_dir).parent == Path("runs") and (tmp_path / run_dir / "best.pt").exists()
    assert 0 < float(best_loss) < 10


def test_evals_on_the_clock_come_each_time_training_time_passes_a_multiple(tmp_path):
    # every batch takes more than a nanosecond, so each one passes a multiple of 1e-9 s: an eval after each
    train(tiny(tmp_path, "train.eval_every_seconds=1e-9", "train.epochs=2"), tmp_path / "run")
    rows = records(tmp_path / "run")
    batches = [r["batch"] for r in rows if r["epoch"] == 1]
    assert batches == list(range(1, len(batches) + 1)) and len(batches) > 3
    seconds = [r["train_seconds"] for r in rows]
    assert seconds == sorted(seconds)
    train(tiny(tmp_path, "train.eval_every_seconds=1e9", "train.epochs=2"), tmp_path / "never")
    assert [r["batch"] for r in records(tmp_path / "never")] == [len(batches)] * 2  # the epochs' own evals only


class SeesDeterminism(SilentReporter):
    def start(self, event):
        self.enabled = torch.are_deterministic_algorithms_enabled()


def test_deterministic_option_is_on_during_the_run_only_and_changes_no_cpu_loss(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    options = ("model.dropout=0.2", "train.epochs=2")
    plain = train(tiny(tmp_path, *options), tmp_path / "plain")
    seen = SeesDeterminism()
    strict = train(tiny(tmp_path, *options, "train.deterministic=true"), tmp_path / "strict", seen)
    assert seen.enabled and not torch.are_deterministic_algorithms_enabled()  # restored afterwards
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set for cuBLAS, which reads it once per process
    assert strict.losses == plain.losses
    a, b = load_payload(tmp_path / "plain" / "last.pt")["model"], load_payload(tmp_path / "strict" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_after_cuda_was_used_without_the_cublas_setting_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # as in a process that already used CUDA
    with pytest.raises(UsageError, match=r"export CUBLAS_WORKSPACE_CONFIG=:4096:8, or train in a new process"):
        train(tiny(tmp_path, "train.deterministic=true", "train.device=cuda"), tmp_path / "run")
    assert not (tmp_path / "run").exists() and not torch.are_deterministic_algorithms_enabled()


class BatchCount(SilentReporter):
    def __init__(self):
        self.epoch, self.done = 0, 0

    def epoch_start(self, epoch, num_batches, done=0):
        self.epoch, self.batches = epoch, num_batches

    def batch(self, done, loss):
        self.done = done


def test_the_device_is_synchronised_at_measurement_points_only(tmp_path, monkeypatch):
    from charlm.training import clock

    seen, counter = [], BatchCount()
    monkeypatch.setattr(clock, "synchronize", lambda device: seen.append((device.type, counter.epoch, counter.done)))
    train(tiny(tmp_path, "train.epochs=2", "train.eval_every_batches=4"), tmp_path / "run", counter)
    batches = counter.batches
    assert batches > 9  # several evals inside an epoch, and batches between them
    # after the batch that reports (an eval every 4 batches, the epoch's end), never per batch; the batch is
    # counted before the sync, so the reporter has seen it
    expected = [
        ("cpu", epoch, done) for epoch in (1, 2) for done in range(1, batches + 1) if done % 4 == 0 or done == batches
    ]
    assert seen == expected
    rows = records(tmp_path / "run")
    assert [(r["epoch"], r["batch"]) for r in rows] == [(e, d) for _, e, d in expected]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["model.hidden_size=60000", "model.embed_size=32"], "gru 1x60000"),
        (["model.num_layers=1024", "model.hidden_size=8192", "model.embed_size=32"], "gru 1024x8192"),
        (["model.embed_size=65536", "model.hidden_size=65536", "train.optimizer=sgd"], "with its gradients needs"),
    ],
)
def test_a_model_that_cannot_fit_is_refused_before_it_is_built(tmp_path, monkeypatch, settings, named):
    """Its weights, gradients and Adam's moments against the memory there is (a fixed 16 GB here: any machine),
    before anything is allocated or a folder made (was: "unexpected RuntimeError" from the allocator)."""
    import charlm.files.limits as limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 16 * 10**9)
    with pytest.raises(UsageError, match="more than the 16.0 GB available: lower model.hidden_size") as info:
        train(tiny(tmp_path, *settings), tmp_path / "run")
    assert named in str(info.value)
    assert not (tmp_path / "run").exists()
