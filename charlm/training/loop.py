"""The Trainer: epochs of batches, each batch one optimizer step; evals, checkpoints and stops between them.

Read `Trainer.run` first, then `train_epoch`, `train_step` (the whole step in one block) and
`between_batches` (every decision taken between two batches: checks, evals, checkpoints, stops).
Setting a run up (corpus, model, optimizer, a new or resumed state, the run folder) is in setup.py.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.config import Config, parse_duration
from charlm.data import Corpus, make_batches
from charlm.errors import RunError
from charlm.evaluate import evaluate
from charlm.events import EvalRecord, Reporter, RunSummary
from charlm.generation.sampling import generate
from charlm.model import CharRNN, detach_hidden, match_layout, separate_layers
from charlm.runtime import capability
from charlm.runtime.device import synchronize
from charlm.runtime.distributed import Ranks
from charlm.store import checkpoint as ckpt
from charlm.store.layout import BEST
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState
from charlm.training import resume, schedule, stop
from charlm.units import perplexity


@dataclass
class Trainer:
    """One run being trained: its config and data, the model (raw and, under DDP, wrapped), where it stands."""

    config: Config
    run_dir: RunDir
    corpus: Corpus
    raw_model: CharRNN  # evals, previews and checkpoints use it
    model: torch.nn.Module  # the model that trains: DistributedDataParallel(raw_model) under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # fp16's loss scaling; disabled (a pass-through) in every other precision
    data_generator: torch.Generator  # the only source of data randomness (offsets, window lengths, order)
    state: TrainState
    ranks: Ranks
    reporter: Reporter
    prefixes: list[str]  # preview prefixes the vocabulary can encode
    board: object = None  # a TensorBoard SummaryWriter (log.tensorboard)

    def __post_init__(self):
        t = self.config.train
        self.t, self.device, self.main = t, self.ranks.device, self.ranks.is_main
        self.batches = make_batches(self.corpus.train.to(self.device), t)
        self.total_steps = t.epochs * len(self.batches)  # with variable_bptt, the expected count
        self.budget = parse_duration(t.time_budget) if t.time_budget is not None else None
        self.val_ids = self.corpus.val.to(self.device)
        self.params = list(self.raw_model.parameters())
        self.clip = t.clip_norm if t.clip_norm is not None else math.inf  # inf: measure the norm, clip nothing
        dtype = capability.autocast_dtype(t.precision)
        self.autocast = torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        # set as the run goes: the stop requests (run), the epoch's batch count and its first non-finite
        # step (train_epoch), the training clock that excludes evals, and when the last eval ended
        self.stop: stop.StopSignals | stop.AgreedStop | None = None
        self.epoch_batches = 0
        self.first_bad: torch.Tensor | None = None
        self.clock_start = self.seconds_before = self.last_eval_at = 0.0

    def run(self) -> RunSummary:
        """Train the epochs left, then score the best checkpoint on whole splits; report and return a summary."""
        started = self.last_eval_at = time.perf_counter()
        if self.main:
            self.run_dir.status.write(
                "running",
                device=self.ranks.describe(),
                parameters=self.raw_model.num_parameters(),
                non_embedding_parameters=self.raw_model.num_parameters(embedding=False),
            )
        with self.marked_if_it_fails(), stop.StopSignals() as signals:
            self.stop = stop.stop_requests(signals, self.ranks)
            for epoch in range(self.state.epoch + 1, self.t.epochs + 1):
                if not self.train_epoch(epoch):
                    break  # the time budget ran out, or early stopping, inside the epoch
                self.state.epoch, self.state.batch_in_epoch = epoch, 0
                self.state.epoch_data_rng = self.data_generator.get_state()  # where the next epoch's draws start
                if epoch % self.t.eval_every_epochs == 0 or epoch == self.t.epochs or self.state.stopped is not None:
                    self.evaluate_and_save(epoch, end_of_epoch=True)
                elif self.stop.signum is not None:
                    self.save()  # no eval due, but a stopped run resumes from here
                if self.stop.signum is not None:
                    raise self.interrupted()
                if self.state.stopped is not None:
                    break
            final = self.final_eval()
            self.stop.close()
        if self.main:
            self.run_dir.status.write("finished", device=self.ranks.describe())
        summary = self.summary(time.perf_counter() - started, final)
        self.reporter.finish(summary)
        return summary

    def train_epoch(self, epoch: int) -> bool:
        """Run the epoch's remaining batches. False when the run stops inside it (time budget, early stop)."""
        state = self.state
        # the data generator's state at the start of the epoch replays the same offset / order on resume
        self.data_generator.set_state(state.epoch_data_rng)
        batches, self.epoch_batches = self.batches.epoch(self.data_generator, self.ranks.share(self.t.batch_size))
        if state.batch_in_epoch == 0:
            state.start_epoch()
            if not self.t.carry_state_across_epochs:
                state.hidden = None
            schedule.start_epoch_decay(state, epoch, self.t)
        self.reporter.epoch_start(epoch, self.epoch_batches, state.batch_in_epoch)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)  # first non-finite step, on device
        self.model.train()
        self.clock_start, self.seconds_before = time.perf_counter(), state.train_seconds
        for i, (x, y) in enumerate(
            itertools.islice(batches, state.batch_in_epoch, self.epoch_batches), start=state.batch_in_epoch
        ):
            self.stop.poll()
            loss = self.train_step(x, y, epoch, i + 1)
            state.batch_in_epoch = i + 1
            before = state.train_seconds
            self.read_clock()
            self.reporter.batch(i + 1, loss)
            if not self.between_batches(epoch, i + 1, before):
                return False
        if self.budget is not None and state.train_seconds >= self.budget:
            state.stopped = "time_budget"  # the last batch of the epoch used the budget up: evaluate and stop
        return True

    def read_clock(self, synchronized: bool = False) -> None:
        """Training time so far. Between batches the host clock alone (no sync: the host runs ahead of a GPU by
        the batches queued on it); at a measurement point (`synchronized`: an eval, a checkpoint, the budget's
        end, an epoch's end) the device first finishes its queue, so the time and chars/s recorded are the
        device's, not the host's queueing."""
        if synchronized:
            synchronize(self.device)
        self.state.train_seconds = self.seconds_before + time.perf_counter() - self.clock_start
        if self.budget is not None or self.t.eval_every_seconds:
            # every process must use the same lr, evaluate and stop together: the slowest decides
            self.state.train_seconds = self.ranks.slowest(self.state.train_seconds)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """One optimizer step: forward, loss, backward, clip, step. Returns the loss (left on the device)."""
        t, state = self.t, self.state
        # consecutive sampling carries the hidden state but cuts its graph; random starts every batch at zeros
        hidden = detach_hidden(state.hidden) if self.batches.carries_hidden else None
        weight = x.shape[1] / t.num_steps  # a window of another length weighs (and steps) in proportion
        time_fraction = state.train_seconds / self.budget if self.budget else 0.0  # as of the previous batch
        lr = schedule.lr_at(state.step, self.total_steps, t, time_fraction, state.lr_scale) * weight
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast:
            logits, hidden = self.model(x, hidden)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.T.reshape(-1).long(), label_smoothing=t.label_smoothing
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # fp16: clip and measure the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)  # the norm before clipping
        bad = ~(torch.isfinite(loss) & (torch.isfinite(norm) | self.overflow_allowed()))
        if t.on_nonfinite == "skip" and bool(self.ranks.any(bad)):  # decided before the step: a sync per batch
            self.skip_batch(epoch, batch)
        else:
            self.first_bad = torch.where((self.first_bad < 0) & bad, state.step, self.first_bad)
            self.scaler.step(self.optimizer)  # fp16: skipped (and the scale lowered) when the gradients overflowed
            self.scaler.update()
            state.loss_sum += loss.detach() * weight
            if self.scaler.is_enabled():  # a step the scaler skipped adds no norm (a few in thousands: ~0 bias)
                norm = torch.nan_to_num(norm, nan=0.0, posinf=0.0)
            state.norm_sum += norm * weight
            state.epoch_weight += weight
            state.hidden = detach_hidden(hidden)
        state.step += 1
        state.lr = lr
        return loss

    def overflow_allowed(self) -> bool:
        """fp16: non-finite gradients are an overflow of the scaled ones, which the scaler handles (it skips the
        step and halves the scale), until the scale is down to MIN_LOSS_SCALE: then they are a real fault.
        Reading the scale is a host sync, as is the scaler's own step."""
        return self.scaler.is_enabled() and self.scaler.get_scale() > stop.MIN_LOSS_SCALE

    def skip_batch(self, epoch: int, batch: int) -> None:
        """on_nonfinite=skip: drop the batch's gradients and the hidden state that produced NaN."""
        self.state.skipped += 1
        if self.state.skipped > self.t.max_nonfinite:
            raise stop.nonfinite(
                epoch, batch, self.run_dir.path, f"more than train.max_nonfinite={self.t.max_nonfinite} batches"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()  # the scaler's next unscale_ needs this step closed
        self.state.hidden = None

    def between_batches(self, epoch: int, done: int, seconds_before: float) -> bool:
        """Every decision between two batches, in one place. False: leave the epoch (the run stops).
        `seconds_before`: the training time before this batch (an eval is due on the clock when the batch
        took it past a multiple of train.eval_every_seconds)."""
        t, state = self.t, self.state
        last = done == self.epoch_batches
        out_of_time = self.budget is not None and state.train_seconds >= self.budget
        signalled = self.stop.signum is not None
        every = t.eval_every_seconds
        clock_due = bool(every) and state.train_seconds // every > seconds_before // every
        eval_due = ((bool(t.eval_every_batches) and done % t.eval_every_batches == 0) or clock_due) and not last
        checkpoint_due = bool(t.checkpoint_every_batches) and done % t.checkpoint_every_batches == 0 and not last
        measured = checkpoint_due or eval_due or out_of_time or signalled or last  # train_seconds is recorded
        if measured:
            self.read_clock(synchronized=True)
        # the non-finite check is a host sync: only before a decision or a save, and every so often
        if measured or done % stop.NONFINITE_CHECK_EVERY == 0:
            stop.check_finite(self.ranks.earliest(self.first_bad), epoch, state, self.run_dir.path)
        if last:
            return True  # the end of the epoch is handled by run()
        if out_of_time:
            state.stopped = "time_budget"
        if out_of_time or eval_due:
            self.evaluate_and_save(epoch, end_of_epoch=False)
            if state.stopped is not None:
                return False
            self.clock_start, self.seconds_before = time.perf_counter(), state.train_seconds  # evals are not training
        elif checkpoint_due or signalled:
            self.save()
        if signalled:
            raise self.interrupted()
        return True

    def interrupted(self) -> stop.Interrupted:
        """The stop a signal asked for. Every rank stops at this batch (AgreedStop), so they wait for the last
        vote and leave the process group together (distributed.teardown), not racing out of it."""
        self.stop.close()
        self.ranks.failure_agreed = True
        return stop.interrupted(self.stop.signum, self.state, self.run_dir.path, self.ranks)

    def evaluate_and_save(self, epoch: int, end_of_epoch: bool) -> None:
        """Score the model, keep the best, decide on plateau decay and early stopping, save, report."""
        record = self.eval_record(epoch)
        is_best = schedule.after_eval(self.state, record.monitored_loss, epoch, self.t)
        now = time.perf_counter()
        record.stopped, record.seconds, self.last_eval_at = self.state.stopped, now - self.last_eval_at, now
        line = record.to_json()
        if self.main:  # metrics first: a crash before the checkpoint means the eval is redone and its line rewritten
            self.run_dir.metrics.append(line)
        if self.board is not None:
            for key in ("train_loss", "val_loss", "lr", "grad_norm", "chars_per_s"):
                if key in line:
                    self.board.add_scalar(key, line[key], self.state.step)
        self.state.last_record = line
        self.save(is_best)
        self.reporter.epoch_end(record)
        s = self.config.sample
        last = epoch == self.t.epochs or self.state.stopped is not None
        if self.main and end_of_epoch and s.preview_every and self.prefixes and (epoch % s.preview_every == 0 or last):
            samples = [
                generate(self.raw_model, self.corpus.vocab, p, s.length, device=self.device)[0] for p in self.prefixes
            ]
            self.reporter.preview(epoch, samples)

    def eval_record(self, epoch: int) -> EvalRecord:
        """The epoch so far (train loss, gradient norm, speed) and the val loss."""
        t, state = self.t, self.state
        weight = max(state.epoch_weight, 1e-9)
        train_loss = self.ranks.mean(state.loss_sum).item() / weight  # the one host sync of the epoch
        batch = state.batch_in_epoch or self.epoch_batches  # 0 once an epoch is complete
        chars = state.epoch_weight * t.batch_size * t.num_steps
        record = EvalRecord(
            epoch=epoch,
            batch=batch,
            epochs_done=round(epoch - 1 + batch / self.epoch_batches, 4),
            step=state.step,
            lr=state.lr if state.lr is not None else t.lr,
            train_loss=train_loss,
            train_ppl=perplexity(train_loss),
            grad_norm=state.norm_sum.item() / weight,
            skipped_batches=state.skipped or None,
            chars_per_s=chars / max(state.train_seconds - state.epoch_started_at, 1e-9),
            train_seconds=state.train_seconds,
        )
        if len(self.val_ids):
            val = evaluate(
                self.raw_model,
                self.val_ids,
                t.eval_batch_size,
                t.num_steps,
                self.device,
                max_chars=t.eval_chars,
                ranks=self.ranks,
            )
            record.val_loss, record.val_ppl, record.val_bpc = (
                val["nats_per_char"],
                val["perplexity"],
                val["bits_per_char"],
            )
            record.val_chars, record.val_protocol = val["chars"], val["protocol"]
        return record

    def save(self, is_best: bool = False) -> None:
        """Checkpoint the run. Every rank takes part (the hidden state and loss sum are gathered); rank 0 writes."""
        state = self.state
        checkpoint = ckpt.Checkpoint(
            model=self.saved_weights(),
            model_config=self.config.model,
            vocab=self.corpus.vocab.chars,
            config=self.config,
            corpus_sha256=self.corpus.sha256,
            train_state=resume.checkpoint_state(state, self.ranks),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            ranks=resume.rank_states(self.ranks, state.loss_sum),
        )
        with self.ranks.together():  # a failed write (a full disk) stops every rank, not rank 0 alone
            if self.main:
                self.run_dir.save_checkpoint(
                    ckpt.serialize(checkpoint), is_best, self.t.keep_last, (state.epoch, state.batch_in_epoch)
                )

    def saved_weights(self) -> dict:
        """The weights in the layout CharRNN(config.model) has, which every reader of a checkpoint builds (the
        model may run its layers apart for train.deterministic: see CharRNN)."""
        return match_layout(self.raw_model.state_dict(), separate_layers(self.config.model))

    def final_eval(self) -> dict:
        """The best checkpoint on the whole val split (when training evals were subsampled) and the test split.

        Appended to metrics.jsonl as {"event": "final", ...}; empty when there is nothing new to measure.
        """
        t, corpus = self.t, self.corpus
        splits = [
            name
            for name, ids in (("val", corpus.val), ("test", corpus.test))
            if len(ids) > 1 and (name == "test" or t.eval_chars is not None)
        ]
        if not splits or not (self.run_dir / BEST).exists():
            return {}
        # every process reads it (as on resume, the run folder is shared); rank 0 finished writing it in save()
        best = ckpt.load(self.run_dir / BEST)
        self.raw_model.load_state_dict(match_layout(best.model, self.raw_model.per_layer))
        final = {"event": "final", "checkpoint": "best", "epoch": self.state.best_epoch, "step": best.train_state.step}
        for name in splits:
            result = evaluate(
                self.raw_model, corpus.split(name), t.eval_batch_size, t.num_steps, self.device, ranks=self.ranks
            )
            final.update(
                {
                    f"{name}_loss": result["nats_per_char"],
                    f"{name}_ppl": result["perplexity"],
                    f"{name}_bpc": result["bits_per_char"],
                    f"{name}_chars": result["chars"],
                    f"{name}_protocol": result["protocol"],
                }
            )
        if self.main:
            self.run_dir.metrics.append(final)
        return final

    def summary(self, seconds: float, final: dict) -> RunSummary:
        monitored = "val_loss" if len(self.corpus.val) else "train_loss"
        records = [r for r in self.run_dir.metrics.read() if "event" not in r] if self.main else []
        state = self.state
        return RunSummary(
            run_dir=str(self.run_dir),
            epochs=self.t.epochs,
            epochs_run=state.epoch,
            best_epoch=state.best_epoch,
            best_loss=state.best_loss,
            seconds=seconds,
            train_seconds=state.train_seconds,
            monitored=monitored,
            last=state.last_record,
            losses=[r[monitored] for r in records],
            stopped=state.stopped,
            final=final,
        )

    @contextlib.contextmanager
    def marked_if_it_fails(self):
        """A run that fails or is stopped says so in status.json (a killed one is seen by its dead pid)."""
        try:
            yield
        except (torch.cuda.OutOfMemoryError, MemoryError):
            self.mark_interrupted()
            raise RunError(
                f"out of memory in epoch {self.state.epoch + 1}: lower train.batch_size or "
                f"model.hidden_size; the last checkpoint in {self.run_dir} is intact (resume with "
                "--resume)"
            ) from None
        except BaseException:
            self.mark_interrupted()
            raise
        finally:
            if self.board is not None:
                self.board.close()

    def mark_interrupted(self) -> None:
        if self.main:
            self.run_dir.status.mark_interrupted()
