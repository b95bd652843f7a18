"""`charlm train --nproc N`: torchrun's own launcher with a standalone rendezvous, and the commands that
`charlm train --dry-run` prints for one machine and for several. Only the CLI uses this module; the
processes it starts join the process group in distributed.setup.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path

import torch

from charlm.errors import UsageError
from charlm.runtime.distributed import check_batch, rank_device, world_size

RDZV_PORT = 29500  # the conventional torchrun port, shown in the multi-node command


def train_args(
    config: Path | None,
    run_dir: Path | None,
    *,
    resume: bool,
    settings: list[str],
    resume_from: str | None = None,
    init_from: str | None = None,
) -> list[str]:
    """The `charlm train` arguments each process gets (every other flag is already a --set)."""
    args = ["train"]
    if config is not None:
        args += ["--config", str(config)]
    if init_from is not None:
        args += ["--init-from", init_from]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    if resume_from is not None:
        args += ["--resume-from", resume_from]
    elif resume:
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
    rank_device(device_name, 0, nproc)


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
    # torchrun's --standalone, on the loopback address by number: no name to resolve on a machine offline
    rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", uuid.uuid4().hex]
    options = get_args_parser().parse_args([*rendezvous, "--nproc_per_node", str(nproc), "-m", "charlm", *args])
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
    share = (
        f"{batch_size // nproc} of the {batch_size} streams each"
        if batch_size % nproc == 0
        else f"train.batch_size {batch_size} must be a multiple of {nproc}"
    )
    return "\n".join(
        [
            f"# this machine, {nproc} processes ({share}):",
            f"charlm {given} --nproc {nproc}",
            f"torchrun --standalone --nproc_per_node {nproc} -m charlm {given}",
            f"# NNODES machines x {nproc} processes (train.batch_size a multiple of NNODES x {nproc}): run on every",
            "# machine, HOST:PORT being the first machine's address; runs/ and the corpus reachable from all:",
            f"torchrun --nnodes NNODES --nproc_per_node {nproc} --rdzv_backend c10d --rdzv_endpoint HOST:{RDZV_PORT} "
            f"--rdzv_id {shlex.quote(name)} -m charlm {named}",
        ]
    )
