"""The training loop: device, optimizer, schedule, clipping, carried state, eval, previews, checkpoints.

A run can stop at any batch (Ctrl-C, SIGTERM, a crash) and `resume=True` continues it as the same
computation: the checkpoint holds the weights, the optimizer, the step, the position in the epoch,
the carried hidden state, the running sums of the epoch and every random generator.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from charlm import checkpoint as ckpt
from charlm import distributed, runs
from charlm.config import Config, TrainConfig, dump_config, from_dict, parse_duration
from charlm.data import (
    Corpus,
    bptt_lengths,
    consecutive_batches,
    encoded_cache_dir,
    load_corpus,
    min_chars,
    num_consecutive_batches,
    num_random_batches,
    random_batches,
)
from charlm.errors import CorpusError, RunError, UsageError
from charlm.evaluate import evaluate, perplexity
from charlm.generate import generate
from charlm.model import CharRNN, detach_state

NONFINITE_CHECK_EVERY = 50  # batches between checks of the loss for NaN/Inf (each check is a host sync)

# config keys that may differ when a run is resumed: they do not change the computation so far
RESUMABLE_KEYS = {"name", "data.corpus", "train.epochs", "train.device", "train.eval_batch_size",
                  "train.checkpoint_every_batches", "train.keep_last", "train.on_nonfinite", "train.max_nonfinite",
                  "train.time_budget", "train.patience", "train.eval_every_batches", "train.eval_chars"}
RESUMABLE_SECTIONS = {"sample", "log"}
EXPLICIT_ONLY_KEYS = {"train.lr"}  # allowed only when asked for on the command line (--set train.lr=...)
# where the loop stands, saved in every checkpoint and restored on resume (besides tensors and RNGs)
RUN_POSITION = ("epoch", "batch_in_epoch", "step", "best_loss", "best_epoch", "skipped", "epoch_data_rng",
                "epoch_weight", "lr_scale", "evals_since_best", "plateau_count", "train_seconds", "epoch_started_at",
                "stopped")
# a fresh run's position (the tensors, the state and the generators are set up in train())
START = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_loss": math.inf, "best_epoch": 0, "skipped": 0,
         "epoch_weight": 0.0, "lr_scale": 1.0, "evals_since_best": 0, "plateau_count": 0, "train_seconds": 0.0,
         "epoch_started_at": 0.0, "stopped": None}


class Reporter:
    """What the loop tells the outside world. This one is silent; the CLI passes a rich one."""

    def download(self, filename: str, total: int | None):  # a context giving a callback(byte count)
        return contextlib.nullcontext(None)

    def start(self, info: dict) -> None: ...
    def warn(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, num_batches: int, done: int = 0) -> None: ...
    def batch(self, done: int, loss: torch.Tensor) -> None: ...  # loss stays on device: read it rarely
    def epoch_end(self, record: dict) -> None: ...
    def preview(self, epoch: int, samples: list[str]) -> None: ...
    def finish(self, summary: dict) -> None: ...


class Interrupted(RunError):
    """Training stopped by a signal after saving a checkpoint; exit code 128 + signal number."""

    label = "interrupted"

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopSignals:
    """Turn the first SIGINT/SIGTERM into a request to stop at the next batch boundary.

    A second signal exits at once: every file of the run is written atomically, so stopping anywhere
    leaves the previous checkpoint whole.
    """

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def poll(self) -> None:
        """Called once per batch; one process has nothing to agree on (see distributed.AgreedStop)."""


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    # decay weight matrices and embeddings only: decaying biases just pulls them to zero for no gain
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr)
    return torch.optim.AdamW(groups, lr=t.lr)


def lr_at(step: int, total_steps: int, t: TrainConfig, time_fraction: float = 0.0, scale: float = 1.0) -> float:
    """The learning rate of an optimizer step: linear warm-up over warmup_steps, then

    constant: lr; cosine: from lr to min_lr as the run progresses (by steps, or by the clock when a
    time budget ends it sooner: `time_fraction` of the budget used); step and plateau: lr x `scale`,
    the decays the loop has applied, never below min_lr.
    """
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "cosine":
        progress = min(1.0, max((step - t.warmup_steps) / max(1, total_steps - t.warmup_steps), time_fraction))
        return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))
    return max(t.lr * scale, t.min_lr)


def check_corpus(corpus: Corpus, c: Config) -> None:
    t = c.train
    need = min_chars(t.batch_size, t.num_steps, t.sampling)
    if len(corpus.train) < need:
        raise CorpusError(
            f"the train split has {len(corpus.train)} characters, but batch_size {t.batch_size} x num_steps "
            f"{t.num_steps} needs at least {need}: use a longer corpus or lower train.batch_size/train.num_steps")
    if len(corpus.val) == 1 or (c.data.val_fraction > 0 and len(corpus.val) == 0):
        raise CorpusError(f"the val split has {len(corpus.val)} characters: raise data.val_fraction or set it to 0")


def config_changes(saved: Config, new: Config, explicit: set[str]) -> dict:
    """The differences between a run's config and the one it is resumed with; refuse the unsafe ones."""
    old_flat, new_flat = _flatten(saved.to_dict()), _flatten(new.to_dict())
    changed = {k: [old_flat[k], new_flat[k]] for k in old_flat if old_flat[k] != new_flat[k]}
    refused = [k for k in changed if k not in RESUMABLE_KEYS and k.split(".")[0] not in RESUMABLE_SECTIONS
               and not (k in EXPLICIT_ONLY_KEYS and k in explicit)]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]!r} -> {changed[k][1]!r})" for k in refused)
        raise UsageError(f"cannot resume with a changed {shown}: these change the computation; "
                         "resume with the run's own config, or start a new run")
    return changed


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_resume_config(run_dir: Path, config_path: Path | None, overrides: list[str]) -> Config:
    """The config to resume with: the run's own (or --config), plus command-line overrides."""
    from charlm.config import load_config

    return load_config(config_path or Path(run_dir) / ckpt.CONFIG, overrides)


def train(config: Config, run_dir: Path | None = None, reporter: Reporter | None = None, resume: bool = False,
          explicit: set[str] | None = None) -> dict:
    """Train a model as `config` says, writing everything to `run_dir`. Returns a summary.

    With resume=True, continue the run in `run_dir` from its last.pt; `explicit` names the config keys
    given on the command line (an lr change is accepted only from there). Under torchrun every process
    calls this; rank 0 alone writes the run folder (see distributed.py).
    """
    reporter = reporter or Reporter()
    ranks = distributed.setup(config.train.device, config.train.batch_size)
    clean = False
    try:
        summary = _train(config, run_dir, reporter, resume, explicit, ranks)
        clean = True
        return summary
    finally:
        distributed.teardown(ranks, clean)


def _train(config: Config, run_dir: Path | None, reporter: Reporter, resume: bool, explicit: set[str] | None,
           ranks: distributed.Ranks) -> dict:
    t, s = config.train, config.sample
    device, main = ranks.device, ranks.is_main
    saved = None
    if resume:
        if run_dir is None:
            raise UsageError("--resume needs --run-dir DIR: the run folder to continue")
        run_dir = Path(run_dir)
        if not (run_dir / ckpt.LAST).exists():
            raise UsageError(f"nothing to resume in {run_dir}: it has no {ckpt.LAST}; start a new run instead")
        saved = ckpt.load_checkpoint(run_dir / ckpt.LAST)
        changes = config_changes(from_dict(saved["config"]), config, explicit or set())
    with ranks.local_main_first():  # several processes share one memory-mapped copy of the encoded corpus
        corpus = load_corpus(config.data, progress=reporter.download,
                             cache=encoded_cache_dir() if ranks.active else None)
    if saved is not None and corpus.sha256 != saved["corpus_sha256"]:
        raise UsageError(f"cannot resume: corpus {config.data.corpus} is not the text this run was trained on "
                         "(its checksum differs); resume with the original corpus")
    check_corpus(corpus, config)

    torch.manual_seed(t.seed)
    model = CharRNN.from_config(config.model, len(corpus.vocab)).to(device)
    optimizer = make_optimizer(model, t)
    ranks.seed_ranks(t.seed)
    data_generator = torch.Generator().manual_seed(t.seed)  # the only source of data randomness

    if t.sampling == "consecutive":
        batches_per_epoch = num_consecutive_batches(len(corpus.train), t.batch_size, t.num_steps)
    else:
        batches_per_epoch = num_random_batches(len(corpus.train), t.batch_size, t.num_steps)
    total_steps = t.epochs * batches_per_epoch  # with variable_bptt, the expected count
    budget = parse_duration(t.time_budget) if t.time_budget is not None else None

    run = {**START, "state": None, "loss_sum": torch.zeros((), device=device),
           "norm_sum": torch.zeros((), device=device), "epoch_data_rng": data_generator.get_state()}
    if saved is None:
        run_dir = ranks.from_main(Path(run_dir) if run_dir is not None else ckpt.new_run_dir(config.name))
    else:
        _restore(saved, run, model, optimizer, data_generator, device, ranks)
        run["stopped"] = None  # a run stopped by its budget or early stopping continues when resumed
    with ranks.together():  # rank 0 prepares the folder; if that fails, every rank stops
        if main:
            _prepare_run_files(run_dir, saved, config, corpus, run, changes if saved is not None else {})

    prefixes = [p for p in s.prefixes if not corpus.vocab.missing(p)]
    for p in s.prefixes:
        if p not in prefixes:
            reporter.warn(f"preview prefix {p!r} has characters the corpus lacks: skipped")
    reporter.start({
        "run_dir": str(run_dir), "device": ranks.describe(), "corpus": corpus.name, "vocab_size": len(corpus.vocab),
        "train_chars": len(corpus.train), "val_chars": len(corpus.val), "test_chars": len(corpus.test),
        "parameters": model.num_parameters(), "batches_per_epoch": batches_per_epoch, "epochs": t.epochs,
        "chars_per_batch": t.batch_size * t.num_steps, "resumed_at": (run["epoch"], run["batch_in_epoch"])
        if saved is not None else None, "time_budget": budget,
    })

    def save(is_best: bool = False) -> None:
        # every rank takes part: the carried state and the loss sum are gathered, then rank 0 writes
        state, loss_sum = ranks.gather_streams(run["state"]), ranks.mean(run["loss_sum"])
        rank_states = ranks.rank_states(run["loss_sum"])
        with ranks.together():  # a failed write (a full disk) stops every rank, not rank 0 alone
            if main:
                ckpt.save_training_checkpoint(run_dir, payload(state, loss_sum, rank_states), is_best, t.keep_last)

    def payload(state, loss_sum, rank_states) -> dict:
        return {
            "model": model.state_dict(), "model_args": model.args, "vocab": corpus.vocab.chars,
            "config": config.to_dict(), "optimizer": optimizer.state_dict(), "corpus_sha256": corpus.sha256,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            **{k: run[k] for k in RUN_POSITION},
            "state": state, "loss_sum": loss_sum, "norm_sum": run["norm_sum"],
            "metrics": run.get("record", {}), **({"ranks": rank_states} if rank_states is not None else {}),
        }

    val_ids = corpus.val.to(device)
    train_ids = corpus.train.to(device)

    def eval_point(epoch: int, epoch_batches: int, end_of_epoch: bool) -> None:
        """Score the model, keep the best, decide on plateau decay and early stopping, save."""
        record = _eval_record(epoch, epoch_batches, config, model, val_ids, run, device, ranks)
        monitored = record.get("val_loss", record["train_loss"])
        if monitored < run["best_loss"]:
            is_best, run["best_loss"], run["best_epoch"], run["evals_since_best"] = True, monitored, epoch, 0
            run["plateau_count"] = 0
        else:
            is_best = False
            run["evals_since_best"] += 1
            run["plateau_count"] += 1
            if t.schedule == "plateau" and run["plateau_count"] > t.plateau_patience:
                run["lr_scale"] *= t.decay_factor
                run["plateau_count"] = 0
        if t.patience and run["evals_since_best"] >= t.patience:
            run["stopped"] = "early_stopping"
        record["stopped"] = run["stopped"]
        now = time.perf_counter()
        record["seconds"], wall["mark"] = now - wall["mark"], now  # wall time since the previous eval point
        # metrics first: a crash before the checkpoint means the eval is redone and its line rewritten
        if main:
            ckpt.append_line(run_dir / ckpt.METRICS, record)
        if board is not None:
            for key in ("train_loss", "val_loss", "lr", "grad_norm", "chars_per_s"):
                if key in record:
                    board.add_scalar(key, record[key], run["step"])
        run["record"] = record
        save(is_best)
        reporter.epoch_end(record)
        last = epoch == t.epochs or run["stopped"] is not None
        if main and end_of_epoch and s.preview_every and prefixes and (epoch % s.preview_every == 0 or last):
            samples = [generate(model, corpus.vocab, p, s.length, device=device)[0] for p in prefixes]
            reporter.preview(epoch, samples)

    started = time.perf_counter()
    wall = {"mark": started}
    if main:
        runs.write_status(run_dir, "running", device=ranks.describe())
    board = _tensorboard(run_dir) if config.log.tensorboard and main else None
    net = ranks.wrap(model)  # DDP for the training forward and backward; eval and previews use the model
    try:
        with StopSignals() as signals:
            stop = ranks.agree(signals)
            for epoch in range(run["epoch"] + 1, t.epochs + 1):
                epoch_batches, completed = _train_epoch(epoch, config, net, optimizer, train_ids, data_generator,
                                                        run, total_steps, batches_per_epoch, budget, reporter, stop,
                                                        save, device, run_dir, eval_point, ranks)
                if not completed:  # the time budget ran out, or early stopping, inside the epoch
                    break
                run["epoch"], run["batch_in_epoch"] = epoch, 0
                run["epoch_data_rng"] = data_generator.get_state()  # where the next epoch's draws start
                eval_point(epoch, epoch_batches, end_of_epoch=True)
                if stop.signum is not None:
                    raise _interrupted(stop.signum, run, run_dir, ranks)
                if run["stopped"] is not None:
                    break
            final = _final_eval(run_dir, config, model, corpus, run, device, ranks)
    except (torch.cuda.OutOfMemoryError, MemoryError):
        _mark_interrupted(run_dir, main)
        raise RunError(f"out of memory in epoch {run['epoch'] + 1}: lower train.batch_size or model.hidden_size; "
                       f"the last checkpoint in {run_dir} is intact (resume with --resume)") from None
    except BaseException:
        _mark_interrupted(run_dir, main)
        raise
    finally:
        if board is not None:
            board.close()

    seconds = time.perf_counter() - started
    if main:
        runs.write_status(run_dir, "finished", device=ranks.describe())
    monitored = "val_loss" if len(corpus.val) else "train_loss"
    records = [r for r in ckpt.read_metrics(run_dir) if "event" not in r] if main else []
    summary = {"run_dir": str(run_dir), "epochs": t.epochs, "epochs_run": run["epoch"],
               "best_epoch": run["best_epoch"], "best_loss": run["best_loss"], "seconds": seconds,
               "train_seconds": run["train_seconds"], "last": run.get("record", {}), "monitored": monitored,
               "losses": [r[monitored] for r in records], "stopped": run["stopped"], "final": final}
    reporter.finish(summary)
    return summary


def _prepare_run_files(run_dir: Path, saved: dict | None, config: Config, corpus: Corpus, run: dict,
                       changes: dict) -> None:
    if saved is None:
        ckpt.prepare_run_dir(run_dir)
        ckpt.write_run_files(run_dir, dump_config(config), corpus.vocab)
        return
    ckpt.remove_stale_temp_files(run_dir)
    # metrics written after the checkpoint (evals the crash cut short) are recomputed: drop them
    kept = [r for r in ckpt.read_metrics(run_dir) if r.get("step", 0) <= run["step"] and r.get("event") != "final"]
    ckpt.rewrite_metrics(run_dir, kept)
    ckpt.append_line(run_dir / ckpt.METRICS, {"event": "resume", "epoch": run["epoch"], "step": run["step"],
                                               "batch_in_epoch": run["batch_in_epoch"], "changed": changes})
    ckpt.atomic_write_text(run_dir / ckpt.CONFIG, dump_config(config))


def _mark_interrupted(run_dir: Path, main: bool = True) -> None:
    if not main:
        return
    with contextlib.suppress(RunError):  # a full disk may refuse even this: the checkpoint is what matters
        runs.write_status(run_dir, "interrupted")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("log.tensorboard needs the tensorboard package: pip install tensorboard, "
                         "or set log.tensorboard=false") from None
    return SummaryWriter(str(run_dir / "tb"))


def _restore(saved: dict, run: dict, model, optimizer, data_generator: torch.Generator, device,
             ranks: distributed.Ranks) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    for key in RUN_POSITION:
        run[key] = saved.get(key, START.get(key))  # keys added since an older checkpoint start fresh
    run["loss_sum"] = saved["loss_sum"].to(device)  # the ranks' mean: exact in one process
    run["norm_sum"] = saved["norm_sum"].to(device)
    state = ranks.local_streams(saved["state"], saved["config"]["train"]["batch_size"])  # saved: the whole batch's
    run["state"] = tuple(x.to(device) for x in state) if isinstance(state, (tuple, list)) else (
        state.to(device) if state is not None else None)
    run["record"] = saved.get("metrics", {})
    torch.set_rng_state(saved["torch_rng"])
    if device.type == "cuda" and saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    data_generator.set_state(saved["epoch_data_rng"])
    own_loss_sum = ranks.restore_rank_state(saved.get("ranks"), saved["config"]["train"]["seed"], saved["step"])
    if own_loss_sum is not None:
        run["loss_sum"] = own_loss_sum.to(device)


def _interrupted(signum: int, run: dict, run_dir: Path, ranks: distributed.Ranks) -> Interrupted:
    name = signal.Signals(signum).name
    return Interrupted(f"{name}: checkpoint saved after {run['epoch']} epochs and {run['batch_in_epoch']} batches; "
                       f"continue with: {ranks.resume_command(run_dir)}", signum)


def _epoch_batches(t: TrainConfig, train_ids: torch.Tensor, data_generator: torch.Generator, spare: int,
                   rows: slice):
    """The epoch's batches (this process's `rows` of them) and their count, drawn from the data generator
    (so a resume replays them)."""
    if t.sampling == "random":
        return (random_batches(train_ids, t.batch_size, t.num_steps, data_generator, rows),
                num_random_batches(len(train_ids), t.batch_size, t.num_steps))
    offset = 0
    if t.random_offset:
        offset = int(torch.randint(0, min(t.num_steps, spare + 1), (1,), generator=data_generator))
    lengths = None
    if t.variable_bptt:
        stream_len = (len(train_ids) - offset) // t.batch_size
        lengths = bptt_lengths(stream_len, t.num_steps, data_generator)
        return consecutive_batches(train_ids, t.batch_size, t.num_steps, offset, rows, lengths), len(lengths)
    return (consecutive_batches(train_ids, t.batch_size, t.num_steps, offset, rows=rows),
            num_consecutive_batches(len(train_ids), t.batch_size, t.num_steps, offset))


def _train_epoch(epoch, config, model, optimizer, train_ids, data_generator, run, total_steps, batches_per_epoch,
                 budget, reporter, stop, save, device, run_dir, eval_point, ranks) -> tuple[int, bool]:
    """Run the epoch's remaining batches, evaluating every eval_every_batches.

    Returns (the epoch's batch count, whether it ran to its end). It stops early, with run["stopped"]
    set, when the time budget runs out or early stopping says so.
    """
    t = config.train
    # the data generator's state at the start of the epoch replays the same offset / order on resume
    data_generator.set_state(run["epoch_data_rng"])
    # characters a random offset may skip without costing the epoch a batch (the count stays fixed)
    spare = len(train_ids) - t.batch_size * (batches_per_epoch * t.num_steps + 1)
    batches, epoch_batches = _epoch_batches(t, train_ids, data_generator, spare, ranks.streams(t.batch_size))
    batches = itertools.islice(batches, run["batch_in_epoch"], epoch_batches)
    if run["batch_in_epoch"] == 0:
        run["loss_sum"].zero_()
        run["norm_sum"].zero_()
        run["skipped"], run["epoch_weight"], run["epoch_started_at"] = 0, 0.0, run["train_seconds"]
        if not t.carry_state_across_epochs:
            run["state"] = None
        if t.schedule == "step":
            run["lr_scale"] = t.decay_factor ** ((epoch - 1) // t.decay_every)
    reporter.epoch_start(epoch, epoch_batches, run["batch_in_epoch"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16)
    params = list(model.parameters())
    clip = t.clip_norm if t.clip_norm is not None else math.inf  # inf: measure the norm, clip nothing
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # the first non-finite step, found on device
    model.train()
    timer = time.perf_counter()
    seconds_before = run["train_seconds"]
    for i, (x, y) in enumerate(batches, start=run["batch_in_epoch"]):
        stop.poll()
        # consecutive: carry the state but cut its graph; random: every window starts from zeros
        state = detach_state(run["state"]) if t.sampling == "consecutive" else None
        # a window of another length than num_steps weighs (and, AWD-style, steps) in proportion to its length
        weight = x.shape[1] / t.num_steps
        time_fraction = run["train_seconds"] / budget if budget else 0.0  # as of the previous batch
        lr = lr_at(run["step"], total_steps, t, time_fraction, run["lr_scale"]) * weight
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.T.reshape(-1).long(),
                                   label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, clip)  # the norm before clipping
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        if t.on_nonfinite == "skip" and bool(ranks.any(bad)):  # skip decides before the step: one host sync per batch
            run["skipped"] += 1
            if run["skipped"] > t.max_nonfinite:
                raise _nonfinite(epoch, i + 1, run, run_dir, f"more than train.max_nonfinite={t.max_nonfinite} batches")
            optimizer.zero_grad(set_to_none=True)
            run["state"] = None  # the state that produced NaN is not worth carrying
        else:
            first_bad = torch.where((first_bad < 0) & bad, run["step"], first_bad)
            optimizer.step()
            run["loss_sum"] += loss.detach() * weight
            run["norm_sum"] += norm * weight
            run["epoch_weight"] += weight
            run["state"] = detach_state(state)
        run["step"] += 1
        run["batch_in_epoch"] = i + 1
        run["lr"] = lr
        run["train_seconds"] = seconds_before + time.perf_counter() - timer
        if budget is not None:  # every process must use the same lr and stop at the same batch: the slowest decides
            run["train_seconds"] = ranks.slowest(run["train_seconds"])
        reporter.batch(i + 1, loss)
        last_batch = i + 1 == epoch_batches
        out_of_time = budget is not None and run["train_seconds"] >= budget
        eval_due = t.eval_every_batches and (i + 1) % t.eval_every_batches == 0 and not last_batch
        checkpoint_due = t.checkpoint_every_batches and (i + 1) % t.checkpoint_every_batches == 0 and not last_batch
        if (checkpoint_due or eval_due or out_of_time or stop.signum is not None or last_batch
                or (i + 1) % NONFINITE_CHECK_EVERY == 0):
            _check_finite(ranks.earliest(first_bad), epoch, run, run_dir)
        if out_of_time and not last_batch:
            run["stopped"] = "time_budget"
            eval_point(epoch, epoch_batches, end_of_epoch=False)
            return epoch_batches, False
        if eval_due:
            eval_point(epoch, epoch_batches, end_of_epoch=False)
            if run["stopped"] is not None:
                return epoch_batches, False
            timer, seconds_before = time.perf_counter(), run["train_seconds"]  # the eval's time is not training
        elif (checkpoint_due or stop.signum is not None) and not last_batch:
            save()
        if stop.signum is not None and not last_batch:
            raise _interrupted(stop.signum, run, run_dir, ranks)
    if budget is not None and run["train_seconds"] >= budget:
        run["stopped"] = "time_budget"  # the last batch of the epoch used the budget up: evaluate and stop
    return epoch_batches, True


def _check_finite(first_bad, epoch, run, run_dir) -> None:
    bad_step = int(first_bad)  # host sync
    if bad_step >= 0:
        batch = bad_step - (run["step"] - run["batch_in_epoch"]) + 1
        raise _nonfinite(epoch, batch, run, run_dir, "a NaN/Inf loss or gradient norm")


def _nonfinite(epoch: int, batch: int, run: dict, run_dir: Path, what: str) -> RunError:
    kept = (f"the last good checkpoint {run_dir / ckpt.LAST} is kept" if (run_dir / ckpt.LAST).exists()
            else "no checkpoint was written yet")
    return RunError(f"{what} at epoch {epoch}, batch {batch}: lower train.lr or set a smaller train.clip_norm, "
                    f"or set train.on_nonfinite=skip; {kept}")


def _eval_record(epoch, epoch_batches, config, model, val_ids, run, device, ranks) -> dict:
    """One line of metrics.jsonl: the epoch so far (train loss, gradient norm, speed) and the val loss."""
    t = config.train
    weight = max(run["epoch_weight"], 1e-9)
    train_loss = ranks.mean(run["loss_sum"]).item() / weight  # the one host sync of the epoch
    batch = run["batch_in_epoch"] or epoch_batches  # 0 once an epoch is complete
    record = {"epoch": epoch, "batch": batch, "epochs_done": round(epoch - 1 + batch / epoch_batches, 4),
              "step": run["step"], "lr": run.get("lr", t.lr), "train_loss": train_loss,
              "train_ppl": perplexity(train_loss), "grad_norm": run["norm_sum"].item() / weight}
    if run["skipped"]:
        record["skipped_batches"] = run["skipped"]
    if len(val_ids):
        val = evaluate(model, val_ids, t.eval_batch_size, t.num_steps, device, max_chars=t.eval_chars, ranks=ranks)
        record.update(val_loss=val["nats_per_char"], val_ppl=val["perplexity"], val_bpc=val["bits_per_char"],
                      val_chars=val["chars"], val_protocol=val["protocol"])
    chars = run["epoch_weight"] * t.batch_size * t.num_steps
    record.update(chars_per_s=chars / max(run["train_seconds"] - run["epoch_started_at"], 1e-9),
                  train_seconds=run["train_seconds"])
    return record


def _final_eval(run_dir: Path, config: Config, model, corpus: Corpus, run: dict, device, ranks) -> dict:
    """The best checkpoint on the whole val split (when training evals were subsampled) and the test split.

    Appended to metrics.jsonl as {"event": "final", ...}; empty when there is nothing new to measure.
    """
    t = config.train
    splits = [name for name, ids in (("val", corpus.val), ("test", corpus.test))
              if len(ids) > 1 and (name == "test" or t.eval_chars is not None)]
    if not splits or not (run_dir / ckpt.BEST).exists():
        return {}
    # every process reads it (as on resume, the run folder is shared); rank 0 finished writing it in save()
    best = ckpt.load_checkpoint(run_dir / ckpt.BEST)
    model.load_state_dict(best["model"])
    final = {"event": "final", "checkpoint": "best", "epoch": run["best_epoch"], "step": best["step"]}
    for name in splits:
        result = evaluate(model, corpus.split(name), t.eval_batch_size, t.num_steps, device, ranks=ranks)
        final.update({f"{name}_loss": result["nats_per_char"], f"{name}_ppl": result["perplexity"],
                      f"{name}_bpc": result["bits_per_char"], f"{name}_chars": result["chars"],
                      f"{name}_protocol": result["protocol"]})
    if ranks.is_main:
        ckpt.append_line(run_dir / ckpt.METRICS, final)
    return final
