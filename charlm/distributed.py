"""Data-parallel training across processes with PyTorch's own engine: torchrun + DistributedDataParallel.

torchrun starts the processes and tells each where it stands through the environment (WORLD_SIZE, RANK,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT). `setup` reads it, joins the process group (NCCL for
CUDA, gloo for the CPU) and returns a `Ranks` that knows this process's share of the work:

- consecutive sampling: the batch's `batch_size` streams are split into equal blocks, rank r owning
  streams [r*B/N, (r+1)*B/N) and its own carried hidden state, so N processes compute what one process
  computes with the whole batch (DDP averages the gradients of equal shares: the mean over all chars);
- random sampling: every rank draws the whole batch's windows with the same seeded generator and keeps
  its block of them;
- evaluation: each rank scores a block of the eval streams and the summed losses are added up;
- checkpoints hold the whole batch's hidden state, gathered in stream order, so a run resumes with any
  number of processes that divides the batch.

Without torchrun (or with one process) `setup` returns a single-process `Ranks` whose methods hand
their input back untouched, so the single-process path runs exactly as before.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from charlm.device import pick_device
from charlm.errors import CharlmError, ConfigError, UsageError

RDZV_PORT = 29500  # the conventional torchrun port, shown in the multi-node command


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
    stops: list = field(default_factory=list)

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

    def streams(self, batch_size: int) -> slice:
        """This rank's block of the batch's streams (or windows)."""
        if not self.active:
            return slice(None)
        per_rank = batch_size // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def share(self, n: int) -> slice:
        """This rank's block of n items when n need not divide evenly (eval streams); may be empty."""
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

    def gather_streams(self, state):
        """The whole batch's hidden state: every rank's streams, in stream order (batch is dim 1)."""
        if not self.active or state is None:
            return state
        if isinstance(state, (tuple, list)):
            return tuple(self._gather(s) for s in state)
        return self._gather(state)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=1)

    def local_streams(self, state, batch_size: int):
        """This rank's streams of a whole-batch hidden state (from a checkpoint)."""
        if not self.active or state is None:
            return state
        rows = self.streams(batch_size)
        if isinstance(state, (tuple, list)):
            return tuple(s[:, rows].contiguous() for s in state)
        return state[:, rows].contiguous()

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
        codes = [0] * self.world_size
        dist.all_gather_object(codes, getattr(error, "exit_code", 1) if error is not None else 0, group=self.control)
        failed = [code for code in codes if code]
        if failed and error is None:
            # wait for the failed rank to leave (its connection closes): it prints its error before the
            # launcher, seeing this rank exit, could stop it
            with contextlib.suppress(RuntimeError):
                dist.barrier(group=self.control)
            raise PeerFailed(failed[0])

    # --- random generators ------------------------------------------------------------------------

    def seed_ranks(self, seed: int) -> None:
        """Rank 0 keeps the generator of a single process; the others get their own, so that their dropout
        masks differ (data order and offsets come from the data generator, which all ranks share)."""
        if self.rank > 0:
            torch.manual_seed(seed + (self.rank << 32))

    def rank_states(self, loss_sum: torch.Tensor) -> list | None:
        """Every rank's own running state: its torch (and CUDA) generator and its sum of the epoch's losses.

        Saved besides the world-size-free values (the whole batch's hidden state, the mean loss sum), so
        that a resume with the same number of processes is the same computation to the last bit.
        None in one process.
        """
        if not self.active:
            return None
        mine = {"torch_rng": torch.get_rng_state(), "loss_sum": loss_sum.detach().cpu(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        states = [None] * self.world_size
        dist.all_gather_object(states, mine, group=self.control)
        return states

    def restore_rank_state(self, states: list | None, seed: int, step: int) -> torch.Tensor | None:
        """Take back this rank's generator and return its loss sum, when the run had as many processes.

        Otherwise rank 0 keeps the single-process generator already restored, the others start fresh
        streams (only dropout masks use them), and the mean loss sum stands (None is returned).
        """
        if not self.active:
            return None
        if states is None or len(states) != self.world_size:
            if self.rank > 0:
                torch.manual_seed(seed + (self.rank << 32) + step)
            return None
        mine = states[self.rank]
        torch.set_rng_state(mine["torch_rng"])
        if self.device.type == "cuda" and mine["cuda_rng"] is not None:
            torch.cuda.set_rng_state(mine["cuda_rng"], self.device)
        return mine["loss_sum"]

    # --- stopping together ------------------------------------------------------------------------

    def agree(self, signals):
        """Wrap StopSignals so that every rank acts on a stop request at the same batch."""
        if not self.active:
            return signals
        stop = AgreedStop(signals, self.control)
        self.stops.append(stop)
        return stop

    def resume_command(self, run_dir: Path) -> str:
        if not self.active:
            return f"charlm train --resume --run-dir {run_dir}"
        if self.local_world_size == self.world_size:
            return f"charlm train --nproc {self.world_size} --resume --run-dir {run_dir}"
        return f"your torchrun command with --resume --run-dir {run_dir}"


class PeerFailed(CharlmError):
    """Another rank failed and reported it; this one stops with the same exit code, silently."""

    quiet = True

    def __init__(self, exit_code: int):
        super().__init__(f"another process failed (exit code {exit_code})")
        self.exit_code = exit_code


class AgreedStop:
    """The stop request of StopSignals, seen by all ranks at the same batch.

    A signal reaches the processes at slightly different moments (or only some of them): acting on it
    alone, they would stop at different batches and wait for each other forever. So every batch each
    rank offers its request (the signal number or 0) to a MAX all-reduce on the CPU group, started
    without waiting; the next batch reads the result, long arrived by then. All ranks stop at the same
    batch, one batch after the first one got the signal, with no per-batch wait.
    """

    def __init__(self, signals, group):
        self.signals, self.group = signals, group
        self.signum: int | None = None
        self.vote: torch.Tensor | None = None
        self.work = None

    def poll(self) -> None:
        if self.work is not None:
            self.work.wait()
            if int(self.vote):
                self.signum = int(self.vote)
        self.vote = torch.tensor(self.signals.signum or 0, dtype=torch.int32)
        self.work = dist.all_reduce(self.vote, op=dist.ReduceOp.MAX, group=self.group, async_op=True)

    def close(self) -> None:
        if self.work is not None:
            self.work.wait()
            self.work = None


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
        raise ConfigError(f"train.batch_size {batch_size} does not split evenly across {processes} processes: "
                          f"set train.batch_size to a multiple of {processes} (e.g. {bigger}) or run a number "
                          f"of processes that divides {batch_size}")


def setup(device_name: str, batch_size: int) -> Ranks:
    """Join torchrun's process group when there is one: NCCL on CUDA (each process on cuda:LOCAL_RANK),
    gloo on the CPU. Without torchrun, or with one process, a single-process Ranks on the chosen device."""
    processes = world_size()
    if processes <= 1:
        return Ranks(device=pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK") or 0)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE") or processes)
    check_batch(batch_size, processes)
    device = _rank_device(device_name, local_rank, local_world)
    backend = "nccl" if device.type == "cuda" else "gloo"
    available = dist.is_available() and (dist.is_nccl_available() if backend == "nccl" else dist.is_gloo_available())
    if not available:
        raise UsageError(f"this PyTorch build has no {backend} backend for torch.distributed: install an official "
                         "PyTorch build" + (", or set train.device=cpu (gloo)" if backend == "nccl" else ""))
    owns_group = not dist.is_initialized()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if owns_group:
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return Ranks(rank, processes, local_rank, local_world, device, owns_group, control)


def _rank_device(name: str, local_rank: int, local_world: int) -> torch.device:
    device = pick_device(name)  # checks the name and that the device exists
    if device.type == "mps":
        if name != "auto":
            raise UsageError("distributed training runs on cuda (nccl) or cpu (gloo), not mps: set train.device=cpu")
        return torch.device("cpu")
    if device.type != "cuda":
        return device
    if device.index is not None:
        raise UsageError(f"train.device={name} picks one GPU, but under torchrun each process uses "
                         "cuda:LOCAL_RANK: set train.device=cuda (or auto)")
    count = torch.cuda.device_count()
    if local_world > count:
        raise UsageError(f"{local_world} processes on this machine but {count} CUDA GPU(s) visible: start at most "
                         f"{count} per machine, or set train.device=cpu for CPU processes")
    return torch.device("cuda", local_rank)


def teardown(ranks: Ranks, clean: bool) -> None:
    """Leave the process group. After a failure the other ranks may never answer: skip the goodbyes."""
    if not ranks.active:
        return
    if clean:
        for stop in ranks.stops:
            stop.close()
        if ranks.owns_group:
            # leave together: a process that tore its group down while a peer still had gloo work in
            # flight made that peer abort at exit ("terminate called without an active exception")
            # DDP's reducer holds the group from inside reference cycles: free it while Python is alive
            gc.collect()
            dist.barrier(group=ranks.control)
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------
# Launching: `charlm train --nproc N` is torchrun's launcher with a standalone rendezvous


def train_args(config: Path | None, run_dir: Path | None, resume: bool, settings: list[str]) -> list[str]:
    """The `charlm train` arguments each process gets (every other flag is already a --set)."""
    args = ["train"]
    if config is not None:
        args += ["--config", str(config)]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    if resume:
        args.append("--resume")
    for setting in settings:
        args += ["--set", setting]
    return args


def default_nproc() -> int:
    """One process per visible GPU, or two CPU processes as an example."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 2


def check_launch(nproc: int, device_name: str, batch_size: int) -> None:
    """What --nproc can check before starting anything, so that bad input is one line, not N."""
    if nproc < 1:
        raise UsageError(f"--nproc {nproc} is not valid: give the number of processes, at least 1")
    if world_size() > 1:
        raise UsageError("--nproc starts torchrun itself: drop it when running under torchrun")
    check_batch(batch_size, nproc)
    _rank_device(device_name, 0, nproc)


def launch(nproc: int, args: list[str]) -> int:
    """Run `charlm ARGS` in `nproc` processes on this machine with torchrun's own launcher (elastic agent,
    standalone rendezvous on a free port); return the exit code. The processes report their own errors."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would print a banner to say it sets this: split the cores between the processes ourselves
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    # the failing process says what went wrong in one line; the agent's log would repeat it as a report
    # (its loggers get their own levels, so the parent's level is not enough)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    options = get_args_parser().parse_args(["--standalone", "--nproc_per_node", str(nproc), "-m", "charlm", *args])
    try:
        run(options)
    except ChildFailedError as e:
        # a process that failed exits with its code; the launcher then stops the others by a signal
        codes = [failure.exitcode for _, failure in sorted(e.failures.items())]
        return next((code for code in codes if code > 0), 128 - min(codes))
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


def launch_commands(nproc: int, args: list[str], name: str, batch_size: int) -> str:
    """The commands that start a run on one machine and on several (shown by `charlm train --dry-run`)."""
    given = " ".join(shlex.quote(a) for a in args)
    # several machines must name the run folder: every process reads its checkpoint to resume
    named = given if "--run-dir" in args else f"{given} --run-dir runs/{shlex.quote(name)}"
    share = (f"{batch_size // nproc} of the {batch_size} streams each" if batch_size % nproc == 0
             else f"train.batch_size {batch_size} must be a multiple of {nproc}")
    return "\n".join([
        f"# this machine, {nproc} processes ({share}):",
        f"charlm {given} --nproc {nproc}",
        f"torchrun --standalone --nproc_per_node {nproc} -m charlm {given}",
        f"# NNODES machines x {nproc} processes (train.batch_size a multiple of NNODES x {nproc}): run on every",
        "# machine, HOST:PORT being the first machine's address; runs/ and the corpus reachable from all:",
        f"torchrun --nnodes NNODES --nproc_per_node {nproc} --rdzv_backend c10d --rdzv_endpoint HOST:{RDZV_PORT} "
        f"--rdzv_id {shlex.quote(name)} -m charlm {named}",
    ])
