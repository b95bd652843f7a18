"""The training loop: device, optimizer, schedule, clipping, carried state, eval, previews, checkpoints."""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from charlm import checkpoint as ckpt
from charlm.config import Config, TrainConfig, dump_config
from charlm.data import (
    Corpus,
    consecutive_batches,
    load_corpus,
    min_chars,
    num_consecutive_batches,
    num_random_batches,
    random_batches,
)
from charlm.errors import CorpusError, RunError, UsageError
from charlm.evaluate import evaluate
from charlm.generate import generate
from charlm.model import CharRNN, detach_state


class Reporter:
    """What the loop tells the outside world. This one is silent; the CLI passes a rich one."""

    def download(self, filename: str, total: int | None):  # a context giving a callback(byte count)
        return contextlib.nullcontext(None)

    def start(self, info: dict) -> None: ...
    def warn(self, message: str) -> None: ...
    def epoch_start(self, epoch: int, num_batches: int) -> None: ...
    def batch(self, done: int, loss: torch.Tensor) -> None: ...  # loss stays on device: read it rarely
    def epoch_end(self, record: dict) -> None: ...
    def preview(self, epoch: int, samples: list[str]) -> None: ...
    def finish(self, summary: dict) -> None: ...


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is absent is an error, not a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name} asked for, but no CUDA GPU is visible: use --device cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name} asked for, but MPS is not available: use --device cpu or auto")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    # decay weight matrices and embeddings only: decaying biases just pulls them to zero for no gain
    params = {id(p): p for p in model.parameters()}.values()
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr)
    return torch.optim.AdamW(groups, lr=t.lr)


def lr_at(step: int, total_steps: int, t: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to min_lr at total_steps."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))


def new_run_dir(name: str, root: Path = ckpt.RUNS_ROOT) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = root / f"{name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = root / f"{name}-{stamp}-{suffix}"
    return run_dir


def prepare_run_dir(run_dir: Path) -> None:
    if (run_dir / ckpt.LAST).exists() or (run_dir / ckpt.METRICS).exists():
        raise UsageError(f"run folder {run_dir} already holds a run: pass a new --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create run folder {run_dir} ({e.strerror}): choose a writable --run-dir") from None


def check_corpus(corpus: Corpus, c: Config) -> None:
    t = c.train
    need = min_chars(t.batch_size, t.num_steps, t.sampling)
    if len(corpus.train) < need:
        raise CorpusError(
            f"the train split has {len(corpus.train)} characters, but batch_size {t.batch_size} x num_steps "
            f"{t.num_steps} needs at least {need}: use a longer corpus or lower train.batch_size/train.num_steps")
    if len(corpus.val) == 1 or (c.data.val_fraction > 0 and len(corpus.val) == 0):
        raise CorpusError(f"the val split has {len(corpus.val)} characters: raise data.val_fraction or set it to 0")


def train(config: Config, run_dir: Path | None = None, reporter: Reporter | None = None) -> dict:
    """Train a model as `config` says, writing everything to `run_dir`. Returns a summary."""
    reporter = reporter or Reporter()
    t, s = config.train, config.sample
    device = pick_device(t.device)
    corpus = load_corpus(config.data, progress=reporter.download)
    check_corpus(corpus, config)

    torch.manual_seed(t.seed)
    model = CharRNN.from_config(config.model, len(corpus.vocab)).to(device)
    optimizer = make_optimizer(model, t)
    data_generator = torch.Generator().manual_seed(t.seed)  # the only source of data randomness

    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config.name)
    prepare_run_dir(run_dir)
    ckpt.write_run_files(run_dir, dump_config(config), corpus.vocab)

    prefixes = [p for p in s.prefixes if not corpus.vocab.missing(p)]
    for p in s.prefixes:
        if p not in prefixes:
            reporter.warn(f"preview prefix {p!r} has characters the corpus lacks: skipped")

    if t.sampling == "consecutive":
        batches_per_epoch = num_consecutive_batches(len(corpus.train), t.batch_size, t.num_steps)
    else:
        batches_per_epoch = num_random_batches(len(corpus.train), t.batch_size, t.num_steps)
    total_steps = t.epochs * batches_per_epoch
    reporter.start({
        "run_dir": str(run_dir), "device": str(device), "corpus": corpus.name, "vocab_size": len(corpus.vocab),
        "train_chars": len(corpus.train), "val_chars": len(corpus.val), "test_chars": len(corpus.test),
        "parameters": model.num_parameters(), "batches_per_epoch": batches_per_epoch, "epochs": t.epochs,
        "chars_per_batch": t.batch_size * t.num_steps,
    })

    train_ids = corpus.train.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16)
    params = [p for p in model.parameters()]
    clip = t.clip_norm if t.clip_norm is not None else float("inf")  # inf: measure the norm, clip nothing
    chars_per_batch = t.batch_size * t.num_steps
    best_loss, best_epoch, step, state = float("inf"), 0, 0, None
    started = time.perf_counter()
    record: dict = {}

    for epoch in range(1, t.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        if t.sampling == "consecutive":
            offset = 0
            if t.random_offset:  # never so far that the epoch loses its last batch
                spare = len(train_ids) - min_chars(t.batch_size, t.num_steps, t.sampling)
                offset = int(torch.randint(0, min(t.num_steps, spare + 1), (1,), generator=data_generator))
            batches = consecutive_batches(train_ids, t.batch_size, t.num_steps, offset)
            num_batches = num_consecutive_batches(len(train_ids), t.batch_size, t.num_steps, offset)
        else:
            batches = random_batches(train_ids, t.batch_size, t.num_steps, data_generator)
            num_batches = batches_per_epoch
        if not t.carry_state_across_epochs:
            state = None
        reporter.epoch_start(epoch, num_batches)
        loss_sum = torch.zeros((), device=device)
        norm_sum = torch.zeros((), device=device)
        for i, (x, y) in enumerate(batches):
            # consecutive: carry the state but cut its graph; random: every window starts from zeros
            state = detach_state(state) if t.sampling == "consecutive" else None
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, t)
            with autocast:
                logits, state = model(x, state)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.T.reshape(-1).long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm_sum += torch.nn.utils.clip_grad_norm_(params, clip)  # the norm before clipping
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            reporter.batch(i + 1, loss)
        train_seconds = time.perf_counter() - epoch_started

        train_loss = loss_sum.item() / num_batches  # the one host sync of the epoch
        if not math.isfinite(train_loss):
            raise RunError(f"the training loss became {train_loss} in epoch {epoch}: lower train.lr or set "
                           "train.clip_norm; the last good checkpoint is kept in " + str(run_dir))
        record = {"epoch": epoch, "step": step, "lr": lr_at(step - 1, total_steps, t),
                  "train_loss": train_loss, "train_ppl": math.exp(min(train_loss, 700)),
                  "grad_norm": norm_sum.item() / num_batches}
        if len(corpus.val):
            val = evaluate(model, corpus.val, t.eval_batch_size, t.num_steps, device)
            record.update(val_loss=val["nats_per_char"], val_ppl=val["perplexity"], val_bpc=val["bits_per_char"])
        monitored = record.get("val_loss", train_loss)
        record.update(chars_per_s=num_batches * chars_per_batch / train_seconds, train_seconds=train_seconds,
                      seconds=time.perf_counter() - epoch_started)
        ckpt.append_line(run_dir / ckpt.METRICS, record)

        payload = {
            "model": model.state_dict(), "model_args": model.args, "vocab": corpus.vocab.chars,
            "config": config.to_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
            "metrics": record, "corpus_sha256": corpus.sha256, "torch_rng": torch.get_rng_state(),
            "data_rng": data_generator.get_state(), "best_val_loss": min(best_loss, monitored),
        }
        ckpt.save_checkpoint(run_dir / ckpt.LAST, payload)
        if monitored < best_loss:
            best_loss, best_epoch = monitored, epoch
            ckpt.save_checkpoint(run_dir / ckpt.BEST, payload)
        reporter.epoch_end(record)

        if s.preview_every and prefixes and (epoch % s.preview_every == 0 or epoch == t.epochs):
            reporter.preview(epoch, [generate(model, corpus.vocab, p, s.length, device=device)[0] for p in prefixes])

    summary = {"run_dir": str(run_dir), "epochs": t.epochs, "best_epoch": best_epoch, "best_loss": best_loss,
               "seconds": time.perf_counter() - started, "last": record,
               "monitored": "val_loss" if len(corpus.val) else "train_loss"}
    reporter.finish(summary)
    return summary
