"""The Trainer: epochs of batches, each batch one optimizer step; evals, checkpoints and stops between them.

Read `Trainer.run` first, then `train_epoch`, `train_step` (the whole step in one block) and
`between_batches` (every decision taken between two batches: checks, evals, checkpoints, stops).
What the run measures (and what follows an eval) is evals.py's, what it writes output.py's, its training time
clock.py's, its non-finite steps stop.py's.
Setting a run up (corpus, model, optimizer, a new or resumed state, the run folder) is in setup.py.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlm.config import parse_duration
from charlm.data import make_batches
from charlm.events import RunSummary
from charlm.model import detach_hidden
from charlm.runtime import capability
from charlm.training import schedule, stop
from charlm.training.clock import Clock
from charlm.training.evals import Evals
from charlm.training.output import RunOutput
from charlm.training.parts import RunParts


@dataclass
class Trainer:
    """One run being trained (its parts: setup.py builds them) and the helpers the loop calls between steps."""

    parts: RunParts

    def __post_init__(self):
        p, t = self.parts, self.parts.config.train
        self.model = p.ranks.wrap(p.raw_model)  # the model that trains: DistributedDataParallel under torchrun
        self.t, self.state, self.ranks, self.device, self.reporter = t, p.state, p.ranks, p.ranks.device, p.reporter
        self.batches = make_batches(p.corpus.train.to(self.device), t)
        self.reset_id = p.corpus.vocab.eod if t.reset_state_at_documents else None  # zero the state at <eod>
        self.total_steps = t.epochs * len(self.batches)  # with variable_bptt, the expected count
        budget = parse_duration(t.time_budget) if t.time_budget is not None else None
        self.clock = Clock(state=p.state, ranks=p.ranks, budget=budget, every=t.eval_every_seconds)
        self.output, self.nonfinite = RunOutput(p), stop.NonFinite(p)
        self.evals = Evals(p, self.output, self.clock)
        self.params = list(p.raw_model.parameters())
        self.clip = t.clip_norm if t.clip_norm is not None else math.inf  # inf: measure the norm, clip nothing
        dtype = capability.autocast_dtype(t.precision)
        self.autocast = torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
        # set as the run goes: the stop requests (run) and the epoch's batch count (train_epoch)
        self.stop: stop.StopSignals | stop.AgreedStop | None = None
        self.epoch_batches = 0

    def run(self) -> RunSummary:
        """Train the epochs left, then score the best checkpoint on whole splits; report and return a summary."""
        started = self.clock.begin()
        self.output.running()
        with self.output.marked_if_it_fails(), stop.StopSignals() as signals:
            self.stop = stop.stop_requests(signals, self.ranks)
            for epoch in range(self.state.epoch + 1, self.t.epochs + 1):
                if not self.train_epoch(epoch):
                    break  # the time budget ran out, or early stopping, inside the epoch
                self.state.epoch, self.state.batch_in_epoch = epoch, 0
                self.state.epoch_data_rng = self.parts.data_generator.get_state()  # where the next epoch's draws start
                if epoch % self.t.eval_every_epochs == 0 or epoch == self.t.epochs or self.state.stopped is not None:
                    self.evals.evaluate_and_save(epoch, self.epoch_batches, end_of_epoch=True)
                elif self.stop.signum is not None:
                    self.output.save()  # no eval due, but a stopped run resumes from here
                if self.stop.signum is not None:
                    raise stop.interrupted(self.stop, self.state, self.parts.run_dir.path, self.ranks)
                if self.state.stopped is not None:
                    break
            final = self.evals.final(self.stop)
            if self.stop.signum is not None:  # it came during the final eval: a stopped run, resumed as any
                raise stop.interrupted(self.stop, self.state, self.parts.run_dir.path, self.ranks)
            self.stop.close()
            self.output.finished()  # inside: a signal from here on is a request no one reads, not an exit
        summary = self.output.summary(time.perf_counter() - started, final)
        self.reporter.finish(summary)
        return summary

    def train_epoch(self, epoch: int) -> bool:
        """Run the epoch's remaining batches. False when the run stops inside it (time budget, early stop)."""
        state = self.state
        # the data generator's state at the start of the epoch replays the same offset / order on resume
        self.parts.data_generator.set_state(state.epoch_data_rng)
        batches, self.epoch_batches = self.batches.epoch(self.parts.data_generator, self.ranks.share(self.t.batch_size))
        if state.batch_in_epoch == 0:
            state.start_epoch()
            if not self.t.carry_state_across_epochs:
                state.hidden = None
            schedule.start_epoch_decay(state, epoch, self.t)
        self.reporter.epoch_start(epoch, self.epoch_batches, state.batch_in_epoch)
        self.nonfinite.start_epoch()
        self.model.train()
        self.clock.restart()
        for i, (x, y) in enumerate(
            itertools.islice(batches, state.batch_in_epoch, self.epoch_batches), start=state.batch_in_epoch
        ):
            self.stop.poll()
            loss = self.train_step(x, y, epoch, i + 1)
            state.batch_in_epoch = i + 1
            before = state.train_seconds
            self.clock.read()
            self.reporter.batch(i + 1, loss)
            if not self.between_batches(epoch, i + 1, before):
                return False
        if self.clock.out_of_time():
            state.stopped = "time_budget"  # the last batch of the epoch used the budget up: evaluate and stop
        return True

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int) -> torch.Tensor:
        """One optimizer step: forward, loss, backward, clip, step. Returns the loss (left on the device)."""
        t, state, optimizer, scaler = self.t, self.state, self.parts.optimizer, self.parts.scaler
        # consecutive sampling carries the hidden state but cuts its graph; random starts every batch at zeros
        hidden = detach_hidden(state.hidden) if self.batches.carries_hidden else None
        weight = x.shape[1] / t.num_steps  # a window of another length weighs (and steps) in proportion
        time_fraction = self.clock.fraction()  # as of the previous batch
        lr = schedule.lr_at(state.step, self.total_steps, t, time_fraction=time_fraction, scale=state.lr_scale) * weight
        for group in optimizer.param_groups:
            group["lr"] = lr
        with self.autocast:
            starts = x == self.reset_id if self.reset_id is not None else None  # documents start from zeros
            logits, hidden = self.model(x, hidden, starts=starts)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), y.T.reshape(-1).long(), label_smoothing=t.label_smoothing
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # fp16: clip and measure the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)  # the norm before clipping
        bad = ~(torch.isfinite(loss) & (torch.isfinite(norm) | stop.overflow_allowed(scaler)))
        if t.on_nonfinite == "skip" and bool(self.ranks.any(bad)):  # decided before the step: a sync per batch
            self.nonfinite.skip(epoch, batch)
        else:
            self.nonfinite.note(bad)
            scaler.step(optimizer)  # fp16: skipped (and the scale lowered) when the gradients overflowed
            scaler.update()
            state.loss_sum += loss.detach() * weight
            if scaler.is_enabled():  # a step the scaler skipped adds no norm (a few in thousands: ~0 bias)
                norm = torch.nan_to_num(norm, nan=0.0, posinf=0.0)
            state.norm_sum += norm * weight
            state.epoch_weight += weight
            state.hidden = detach_hidden(hidden)
        state.step += 1
        state.lr = lr
        return loss

    def between_batches(self, epoch: int, done: int, seconds_before: float) -> bool:
        """Every decision between two batches, in one place. False: leave the epoch (the run stops).
        `seconds_before`: the training time before this batch (an eval is due on the clock when the batch
        took it past a multiple of train.eval_every_seconds)."""
        t, state = self.t, self.state
        last = done == self.epoch_batches
        out_of_time = self.clock.out_of_time()
        signalled = self.stop.signum is not None
        clock_due = self.clock.eval_due(seconds_before)
        eval_due = ((bool(t.eval_every_batches) and done % t.eval_every_batches == 0) or clock_due) and not last
        checkpoint_due = bool(t.checkpoint_every_batches) and done % t.checkpoint_every_batches == 0 and not last
        measured = checkpoint_due or eval_due or out_of_time or signalled or last  # train_seconds is recorded
        if measured:
            self.clock.read(synchronized=True)
        # the non-finite check is a host sync: only before a decision or a save, and every so often
        if measured or done % stop.NONFINITE_CHECK_EVERY == 0:
            self.nonfinite.check(epoch)
        if last:
            return True  # the end of the epoch is handled by run()
        if out_of_time:
            state.stopped = "time_budget"
        if out_of_time or eval_due:
            self.evals.evaluate_and_save(epoch, self.epoch_batches, end_of_epoch=False)
            if state.stopped is not None:
                return False
            self.clock.restart()  # evals are not training
        elif checkpoint_due or signalled:
            self.output.save()
        if signalled:
            raise stop.interrupted(self.stop, self.state, self.parts.run_dir.path, self.ranks)
        return True
