"""The run folder before the first batch: the folder to resume and its checkpoint, a new run's files, a resumed
run's metrics trimmed to its checkpoint, the TensorBoard writer. Rank 0 alone calls what writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from charlm.config import Config, dump_config
from charlm.errors import CheckpointError, UsageError
from charlm.events import Reporter
from charlm.files.fsio import atomic_write_text, remove_stale_temp_files
from charlm.store import checkpoint as ckpt
from charlm.store.layout import CONFIG, LAST, METRICS
from charlm.store.run_dir import RunDir
from charlm.training.parts import RunParts
from charlm.training.resume import config_changes


@dataclass
class Request:
    """What the caller asked for, besides the config."""

    run_dir: Path | None = None
    resume: bool = False
    resume_from: str = "last"  # best | last: the checkpoint a resume starts from
    explicit: set[str] = field(default_factory=set)  # config keys given on the command line
    init_from: str | Path | None = None  # fine-tune: a run folder, RUN:last, or an exported model folder


def resumable_folder(request: Request) -> RunDir:
    if request.run_dir is None:
        raise UsageError("--resume needs --run-dir DIR: the run folder to continue")
    folder = RunDir(request.run_dir)
    if not folder.checkpoint(request.resume_from).exists() and not (request.run_dir / LAST).exists():
        raise UsageError(f"nothing to resume in {request.run_dir}: it has no {LAST}; start a new run instead")
    return folder


def load_saved_run(
    folder: RunDir, request: Request, config: Config, reporter: Reporter
) -> tuple[ckpt.Checkpoint, dict]:
    """The checkpoint to resume from, and the config changes it is resumed with (refused if unsafe).

    A damaged last.pt falls back to the newest intact checkpoint of the run, with a warning."""
    wanted = folder.checkpoint(request.resume_from)
    try:
        saved = ckpt.load(wanted)
    except CheckpointError as error:
        if request.resume_from != "last":
            raise
        saved, used = ckpt.newest_intact(folder.checkpoints_newest_first(), error)
        reporter.warn(f"{error}; resuming from {used.name} (step {saved.train_state.step}) instead")
    return saved, config_changes(saved.config, config, request.explicit)


def prepare_run_files(parts: RunParts, *, resumed: bool, changes: dict, parent: dict | None = None) -> None:
    """A new run: a fresh folder, marked as charlm's first, with its config and vocabulary (and, fine-tuned,
    the init_from line that starts metrics.jsonl). A resumed one: metrics trimmed to the checkpoint (evals
    that a crash cut short are recomputed), a resume event, the config as resumed."""
    run_dir, config, state, reporter = parts.run_dir, parts.config, parts.state, parts.reporter
    if not resumed:
        run_dir.ownership.prepare_new()
        run_dir.ownership.mark()
        run_dir.write_run_files(dump_config(config), parts.corpus.vocab.to_json())
        if parent is not None:
            run_dir.metrics.append(parent)
        return
    remove_stale_temp_files(run_dir.path)
    if not run_dir.ownership.is_marked():  # a run folder from before markers existed
        run_dir.ownership.mark()
    records, skipped = run_dir.metrics.read_counted()
    if skipped:
        reporter.warn(f"{run_dir / METRICS}: skipped {skipped} line(s) that are not charlm records")
    kept = [r for r in records if r.get("step", 0) <= state.step and r.get("event") != "final"]
    run_dir.metrics.rewrite(kept)
    run_dir.metrics.append(
        {
            "event": "resume",
            "epoch": state.epoch,
            "step": state.step,
            "batch_in_epoch": state.batch_in_epoch,
            "changed": changes,
        }
    )
    atomic_write_text(run_dir / CONFIG, dump_config(config))


def tensorboard(run_dir: RunDir):
    """log.tensorboard: a SummaryWriter on RUN_DIR/tb/."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "log.tensorboard needs the tensorboard package: pip install tensorboard, or set log.tensorboard=false"
        ) from None
    return SummaryWriter(str(run_dir / "tb"))
