"""Data-parallel training across processes with PyTorch's own engine: torchrun + DistributedDataParallel.

torchrun starts the processes and tells each where it stands through the environment (WORLD_SIZE, RANK,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT). `setup` reads it, joins the process group (NCCL for
CUDA, gloo for the CPU) and returns a `Ranks`: this process's place (topology) and the few collectives
the trainer needs. What the trainer does with them lives with the trainer:

- consecutive sampling: the batch's `batch_size` streams are split into equal blocks, rank r owning
  `share(batch_size)` = streams [r*B/N, (r+1)*B/N) and its own carried hidden state, so N processes
  compute what one process computes with the whole batch (DDP averages the gradients of equal shares);
- random sampling: every rank draws the whole batch's windows with the same seeded generator and keeps
  its share of them; evaluation: each rank scores a share of the eval streams and the sums are added;
- checkpoints hold the whole batch's hidden state, gathered in stream order (training/resume.py), so a
  run resumes with any number of processes that divides the batch; stop requests are agreed by all
  ranks (training/stop.py). The launcher (`--nproc`, `--dry-run`) is in cli/launch.py.

Without torchrun (or with one process) `setup` returns a single-process `Ranks` whose collectives hand
their input back untouched, so the single-process path runs exactly as before.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from charlm.errors import CharlmError, ConfigError, UsageError
from charlm.runtime.device import pick_device


@dataclass
class Ranks:
    """This process's place among the training processes, and the few collectives the trainer needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we joined the process group, so we leave it
    control: object = None  # a gloo group for small CPU messages (None: the default group, already gloo)
    failure_agreed: bool = False  # every rank knows the run stops here (a failure in `together`, or a stop signal
    # agreed at a batch): all are alive to leave the group cleanly

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        if not self.active:
            return str(self.device)
        return f"{self.world_size} x {self.device.type} ({dist.get_backend()})"

    # --- shares of the work -----------------------------------------------------------------------

    def share(self, n: int) -> slice:
        """This rank's block of n items: the batch's streams (or windows), or eval streams. Equal blocks
        when the ranks divide n (a batch always: see check_batch); otherwise some may be one shorter or empty."""
        if not self.active:
            return slice(None)
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around the model for the training forward: it averages gradients during backward."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # --- collectives (no-ops in one process) ------------------------------------------------------

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return tensor
        return self.sum_(tensor.detach().clone()) / self.world_size

    def any(self, flag: torch.Tensor) -> torch.Tensor:
        """True on every rank when it is true on one (a skipped batch must be skipped by all)."""
        if not self.active:
            return flag
        votes = flag.to(torch.int32)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return votes.bool()

    def slowest(self, seconds: float) -> float:
        """The largest of the processes' clocks, so that time-based decisions (a time budget) agree."""
        if not self.active:
            return seconds
        value = torch.tensor(seconds, dtype=torch.float64)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control)
        return float(value)

    def earliest(self, step: torch.Tensor) -> torch.Tensor:
        """The smallest step >= 0 over the ranks, -1 when no rank has one (the first non-finite batch)."""
        if not self.active:
            return step
        none = torch.iinfo(step.dtype).max
        found = torch.where(step < 0, none, step)
        dist.all_reduce(found, op=dist.ReduceOp.MIN)
        return torch.where(found == none, -1, found)

    def gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Every rank's `x`, concatenated in rank order along `dim`."""
        if not self.active:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=dim)

    def gather_objects(self, value) -> list:
        """Every rank's `value` (plain data or CPU tensors), in rank order."""
        if not self.active:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def max_async(self, value: torch.Tensor):
        """Start a MAX all-reduce of a small CPU tensor in place; returns the work to wait() on."""
        return dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.control, async_op=True)

    def from_main(self, value):
        """Rank 0's `value` on every rank (the run folder it named after the clock, say)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    @contextlib.contextmanager
    def local_main_first(self):
        """Each machine's first process goes alone (download, encode the corpus to the cache); the others
        wait for it and then read what it wrote instead of doing the same work at the same time."""
        if not self.active:
            yield
        elif self.local_rank == 0:
            with self.together():
                yield
        else:
            self._settle(None)
            yield

    @contextlib.contextmanager
    def together(self):
        """Run a block that some ranks do alone (rank 0 writing the run folder), then let every rank learn
        whether one failed: all stop with its exit code, and only the rank that failed says why (the
        others would otherwise wait for it, then fail with a confusing lost-connection error)."""
        if not self.active:
            yield
            return
        try:
            yield
        except Exception as error:
            self._settle(error)
            raise
        self._settle(None)

    def _settle(self, error: Exception | None) -> None:
        """Learn every rank's outcome of a `together` block. After a failure, the lowest failing rank reports
        it (its error propagates); every other rank stops quietly with PeerFailed. All of them are alive and
        agree, so they leave the group together (teardown) instead of racing each other out of it."""
        codes = [0] * self.world_size
        dist.all_gather_object(codes, getattr(error, "exit_code", 1) if error is not None else 0, group=self.control)
        failed = [rank for rank, code in enumerate(codes) if code]
        if not failed:
            return
        self.failure_agreed = True
        if self.rank != failed[0]:
            raise PeerFailed(codes[failed[0]]) from error


class PeerFailed(CharlmError):
    """Another rank failed and reports it; this one leaves silently with exit code 0.

    Why 0: torchrun's agent stops every process as soon as one exits non-zero, so a peer exiting with the
    failure's code first could kill the reporting rank before it printed its error, and make the launcher's
    exit code a signal's (143). Exiting 0, a peer lets the reporting rank finish; the job's exit code is
    that rank's (charlm's launcher returns it, torchrun fails the job on it)."""

    quiet = True
    exit_code = 0

    def __init__(self, reported_code: int):
        super().__init__(f"another process failed (exit code {reported_code})")
        self.reported_code = reported_code


# ---------------------------------------------------------------------------------------------------
# Joining and leaving


def world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    """Rank 0 (or no torchrun): the process that writes the run folder and talks to the user."""
    return int(os.environ.get("RANK") or 0) == 0


def check_batch(batch_size: int, processes: int) -> None:
    if batch_size % processes:
        bigger = (batch_size // processes + 1) * processes
        raise ConfigError(
            f"train.batch_size {batch_size} does not split evenly across {processes} processes: "
            f"set train.batch_size to a multiple of {processes} (e.g. {bigger}) or run a number "
            f"of processes that divides {batch_size}"
        )


def setup(device_name: str, batch_size: int) -> Ranks:
    """Join torchrun's process group when there is one: NCCL on CUDA (each process on cuda:LOCAL_RANK),
    gloo on the CPU. Without torchrun, or with one process, a single-process Ranks on the chosen device."""
    processes = world_size()
    if processes <= 1:
        return Ranks(device=pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK") or 0)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or processes)
    check_batch(batch_size, processes)
    device = rank_device(device_name, local_rank, local_world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    available = dist.is_available() and (dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available())
    if not available:
        raise UsageError(
            f"this PyTorch build has no {backend} backend for torch.distributed: install an official "
            "PyTorch build" + (", or set train.device=cpu (gloo)" if backend == "nccl" else "")
        )
    owns_group = not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if owns_group:
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Ranks(rank, processes, local_rank, local_world, device, owns_group, control)


def rank_device(name: str, local_rank: int, local_world: int) -> torch.device:
    device = pick_device(name)  # checks the name and that the device exists
    if device.type == "mps":
        if name != "auto":
            raise UsageError("distributed training runs on cuda (nccl) or cpu (gloo), not mps: set train.device=cpu")
        return torch.device("cpu")
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise UsageError(
            f"train.device={name} picks one GPU, but under torchrun each process uses "
            "cuda:LOCAL_RANK: set train.device=cuda (or auto)"
        )
    count = torch.cuda.device_count()
    if local_world > count:
        raise UsageError(
            f"{local_world} processes on this machine but {count} CUDA GPU(s) visible: start at most "
            f"{count} per machine, or set train.device=cpu for CPU processes"
        )
    return torch.device("cuda", local_rank)


def teardown(ranks: Ranks, clean: bool) -> None:
    """Leave the process group. After a failure that every rank agreed on (Ranks.together), all are alive:
    they leave together as after a clean run. After any other failure the other ranks may never answer: skip
    the goodbyes. (A clean caller has waited for its own asynchronous work first: see
    training.stop.AgreedStop.close.)"""
    if not ranks.active or not ranks.owns_group or not (clean or ranks.failure_agreed):
        return
    # leave together: a process that tore its group down (or exited) while a peer still had gloo work in
    # flight made one of them abort at exit ("terminate called without an active exception", exit 134/143)
    # DDP's reducer holds the group from inside reference cycles: free it while Python is alive
    gc.collect()
    dist.barrier(group=ranks.control)
    dist.destroy_process_group()
