"""Why a run stops early, decided in one place: a signal, the time budget, early stopping, a bad loss.

- A signal (SIGINT, SIGTERM, SIGHUP; SIGBREAK on Windows) is a request to stop at the next batch boundary: the
  loop saves a checkpoint and raises Interrupted (exit code 128 + signal). A second signal exits at once: every
  file is written atomically, so stopping anywhere leaves the previous checkpoint whole.
- The time budget and early stopping set TrainState.stopped: the loop evaluates, saves and ends normally.
- A NaN/Inf loss or gradient norm raises Diverged (a RunError) naming the epoch and batch (or, with
  on_nonfinite=skip, skips the batch until max_nonfinite). Under fp16 a non-finite gradient norm is first
  the loss scaler's overflow (it skips that step itself), a fault only once the scale is down to MIN_LOSS_SCALE.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import torch

from charlm.errors import Diverged
from charlm.files.interrupts import STOP_SIGNALS, Interrupted
from charlm.runtime.distributed import Ranks
from charlm.store.layout import LAST
from charlm.store.state import TrainState
from charlm.training.parts import RunParts

NONFINITE_CHECK_EVERY = 50  # batches between checks of the loss for NaN/Inf (each check is a host sync)
# fp16: gradients that overflow at a loss scale above this are the scaler's to handle (it skips the step and
# lowers the scale); still non-finite at this scale or below, no scaling caused them: a non-finite failure
MIN_LOSS_SCALE = 1.0


class StopSignals:
    """Turn the first of STOP_SIGNALS into a request (`signum`) to stop at the next batch boundary."""

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def poll(self) -> None:
        """Called once per batch; one process has nothing to agree on (see AgreedStop)."""

    def close(self) -> None: ...


class AgreedStop:
    """The stop request of StopSignals, seen by all ranks at the same batch.

    A signal reaches the processes at slightly different moments (or only some of them): acting on it
    alone, they would stop at different batches and wait for each other forever. So every batch each
    rank offers its request (the signal number or 0) to a MAX all-reduce on the CPU group, started
    without waiting; the next batch reads the result, long arrived by then. All ranks stop at the same
    batch, one batch after the first one got the signal, with no per-batch wait.
    """

    def __init__(self, signals: StopSignals, ranks: Ranks):
        self.signals, self.ranks = signals, ranks
        self.signum: int | None = None
        self.vote: torch.Tensor | None = None
        self.work = None

    def poll(self) -> None:
        if self.work is not None:
            self.work.wait()
            if int(self.vote):
                self.signum = int(self.vote)
        self.vote = torch.tensor(self.signals.signum or 0, dtype=torch.int32)
        self.work = self.ranks.max_async(self.vote)

    def close(self) -> None:
        """Wait for the last vote: a process must not leave the group with a collective in flight."""
        if self.work is not None:
            self.work.wait()
            self.work = None


def stop_requests(signals: StopSignals, ranks: Ranks) -> StopSignals | AgreedStop:
    """The signals as the loop should see them: agreed across ranks when there are several."""
    return AgreedStop(signals, ranks) if ranks.active else signals


def interrupted(requests: StopSignals | AgreedStop, state: TrainState, run_dir: Path, ranks: Ranks) -> Interrupted:
    """The stop a signal asked for. Every rank stops at this batch (AgreedStop), so they wait for the last vote
    and leave the process group together (distributed.teardown), not racing out of it."""
    requests.close()
    ranks.failure_agreed = True
    signum = requests.signum
    name = signal.Signals(signum).name
    return Interrupted(
        f"{name}: checkpoint saved after {state.epoch} epochs and {state.batch_in_epoch} batches; "
        f"continue with: {resume_command(ranks, run_dir)}",
        signum,
    )


def nonfinite(epoch: int, batch: int, run_dir: Path, what: str) -> Diverged:
    kept = (
        f"the last good checkpoint {Path(run_dir) / LAST} is kept"
        if (Path(run_dir) / LAST).exists()
        else "no checkpoint was written yet"
    )
    return Diverged(
        f"{what} at epoch {epoch}, batch {batch}: lower train.lr or set a smaller train.clip_norm, "
        f"or set train.on_nonfinite=skip; {kept}"
    )


def check_finite(first_bad: torch.Tensor, epoch: int, state: TrainState, run_dir: Path) -> None:
    """Raise if a step of this epoch had a non-finite loss or norm (`first_bad`: its step, or -1)."""
    bad_step = int(first_bad)  # host sync
    if bad_step >= 0:
        batch = bad_step - (state.step - state.batch_in_epoch) + 1
        raise nonfinite(epoch, batch, run_dir, "a NaN/Inf loss or gradient norm")


class NonFinite:
    """NaN/Inf losses and gradient norms. on_nonfinite=stop: the epoch's first bad step is kept on the device
    (no sync) and checked before a decision or a save; skip: the batch is dropped, up to train.max_nonfinite."""

    def __init__(self, parts: RunParts):
        self.parts, self.state, self.ranks = parts, parts.state, parts.ranks
        self.first_bad: torch.Tensor | None = None

    def start_epoch(self) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.ranks.device)  # first bad step, on device

    def note(self, bad: torch.Tensor) -> None:
        """A step is taken: it is the epoch's first bad one if `bad` and none was before (on the device)."""
        self.first_bad = torch.where((self.first_bad < 0) & bad, self.state.step, self.first_bad)

    def check(self, epoch: int) -> None:
        """Raise if a step of this epoch, on any rank, was bad (a host sync)."""
        check_finite(self.ranks.earliest(self.first_bad), epoch, self.state, self.parts.run_dir.path)

    def skip(self, epoch: int, batch: int) -> None:
        """on_nonfinite=skip: drop the batch's gradients and the hidden state that produced NaN."""
        self.state.skipped += 1
        limit = self.parts.config.train.max_nonfinite
        if self.state.skipped > limit:
            raise nonfinite(epoch, batch, self.parts.run_dir.path, f"more than train.max_nonfinite={limit} batches")
        self.parts.optimizer.zero_grad(set_to_none=True)
        self.parts.scaler.update()  # the scaler's next unscale_ needs this step closed
        self.state.hidden = None


def overflow_allowed(scaler: torch.amp.GradScaler) -> bool:
    """fp16: non-finite gradients are an overflow of the scaled ones, which the scaler handles (it skips the
    step and halves the scale), until the scale is down to MIN_LOSS_SCALE: then they are a real fault.
    Reading the scale is a host sync, as is the scaler's own step."""
    return scaler.is_enabled() and scaler.get_scale() > MIN_LOSS_SCALE


def resume_command(ranks: Ranks, run_dir: Path) -> str:
    """The command that continues a stopped run, as this run was started."""
    if not ranks.active:
        return f"charlm train --resume --run-dir {run_dir}"
    if ranks.local_world_size == ranks.world_size:
        return f"charlm train --nproc {ranks.world_size} --resume --run-dir {run_dir}"
    return f"your torchrun command with --resume --run-dir {run_dir}"
