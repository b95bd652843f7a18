"""`train()`: set a run up (new, fine-tuned or resumed) and hand it to the Trainer.

    config ─► corpus (load, check) ─► model + optimizer (seeded) ─► TrainState (fresh, or from last.pt)
           ─► run folder (new files, or metrics trimmed to the checkpoint) ─► Trainer.run() ─► RunSummary

A fine-tuned run (init_from.py) differs only in its corpus's vocabulary (the parent's, extended) and
its initial weights (the parent's, grown); a resumed run keeps the vocabulary its checkpoint holds.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from charlm.config import Config, dump_config, parse_duration
from charlm.data import Corpus, Vocab, encoded_cache_dir, load_corpus, make_batches
from charlm.errors import CheckpointError, CorpusError, UsageError
from charlm.events import Reporter, RunStart, RunSummary, SilentReporter
from charlm.files.fsio import atomic_write_text, remove_stale_temp_files
from charlm.model import CharRNN
from charlm.runtime import capability, distributed
from charlm.store import checkpoint as ckpt
from charlm.store.layout import CONFIG, LAST, METRICS
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState
from charlm.training import schedule
from charlm.training.init_from import WITH_RESUME, Parent, check_shape, load_parent
from charlm.training.loop import Trainer
from charlm.training.resume import config_changes, restore, seed_rank


@dataclass
class Request:
    """What the caller asked for, besides the config."""

    run_dir: Path | None = None
    resume: bool = False
    resume_from: str = "last"  # best | last: the checkpoint a resume starts from
    explicit: set[str] = field(default_factory=set)  # config keys given on the command line
    init_from: str | Path | None = None  # fine-tune: a run folder, RUN:last, or an exported model folder


def train(
    config: Config,
    run_dir: Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    explicit: set[str] | None = None,
    resume_from: str = "last",
    init_from: str | Path | None = None,
) -> RunSummary:
    """Train a model as `config` says, writing everything to `run_dir` (default runs/NAME-TIME).

    With resume=True, continue the run in `run_dir` from its last.pt (or `resume_from="best"`: its best.pt);
    `explicit` names the config keys given on the command line (an lr change is accepted only from there).
    With `init_from` (a run folder, RUN:last, or an exported model folder), start from that model's weights
    on config's corpus (see init_from.py). The run folder is locked while training: a second trainer there
    is refused. Under torchrun every process calls this; rank 0 alone writes the run folder and holds its
    lock (see distributed.py).
    """
    if init_from is not None and resume:
        raise UsageError(WITH_RESUME)
    # before any CUDA work: cuBLAS reads its workspace setting once
    with deterministic_algorithms(config.train.deterministic, config.train.device):
        ranks = distributed.setup(config.train.device, config.train.batch_size)
        request = Request(
            Path(run_dir) if run_dir is not None else None, resume, resume_from, explicit or set(), init_from
        )
        clean = False
        try:
            with contextlib.ExitStack() as held:
                trainer = start(config, request, reporter or SilentReporter(), ranks, held)
                summary = trainer.run()
            clean = True
            return summary
        finally:
            distributed.teardown(ranks, clean)


CUBLAS_WORKSPACE = ":4096:8"  # PyTorch's reproducibility notes: cuBLAS is deterministic with a fixed workspace


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: str):
    """train.deterministic: PyTorch's deterministic algorithms for the run (restored afterwards), and on CUDA the
    fixed cuBLAS workspace they need. cuBLAS reads CUBLAS_WORKSPACE_CONFIG once per process, at its first use,
    so it is set here (unless set already) before any CUDA work, and left set. Off: nothing is touched."""
    if not enabled:
        yield
        return
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_initialized() and device != "cpu":
            raise UsageError(
                "train.deterministic needs CUBLAS_WORKSPACE_CONFIG set before this process first uses "
                f"CUDA: export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}, or train in a new process"
            )
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def start(
    config: Config, request: Request, reporter: Reporter, ranks: distributed.Ranks, held: contextlib.ExitStack
) -> Trainer:
    """Everything before the first batch: load, check, build, restore, prepare the folder, report the start.
    The folder's lock goes on `held`: before reading a checkpoint to resume, or, for a new run, once every
    input has been checked (bad input leaves no folder behind)."""
    precision = resolved_precision(config, ranks.device)
    # the run's config says what auto chose: a resume (on any machine) computes in it, or is refused
    config = replace(config, train=replace(config.train, precision=precision.name))
    t = config.train
    saved, changes, lock = None, {}, None
    if request.resume:
        folder = resumable_folder(request)
        with ranks.together():
            if ranks.is_main:
                lock = held.enter_context(folder.ownership.lock())
        saved, changes = load_saved_run(folder, request, config, reporter)
    parent = load_parent(request.init_from) if request.init_from is not None else None
    if parent is not None:
        check_shape(parent, config.model)
    corpus = load_run_corpus(config, reporter, ranks, saved, parent)
    check_corpus(corpus, config)

    torch.manual_seed(t.seed)
    model = CharRNN(config.model, len(corpus.vocab), layer_by_layer=t.deterministic).to(ranks.device)
    if parent is not None:
        parent.load_weights(model)
    optimizer = schedule.make_optimizer(model, t)
    scaler = torch.amp.GradScaler(ranks.device.type, enabled=precision.scaled)  # fp16's loss scaling
    seed_rank(ranks, t.seed)
    data_generator = torch.Generator().manual_seed(t.seed)
    if saved is None:
        state = TrainState(
            epoch_data_rng=data_generator.get_state(),
            loss_sum=torch.zeros((), device=ranks.device),
            norm_sum=torch.zeros((), device=ranks.device),
        )
        folder = RunDir(ranks.from_main(request.run_dir or RunDir.new(config.name).path))
    else:
        state = restore(saved, model, optimizer, scaler, data_generator, ranks.device, ranks)
    with ranks.together():  # rank 0 prepares the folder; if that fails, every rank stops
        if ranks.is_main:
            if saved is None:
                folder.ownership.check_new()  # before the lock: a refused folder is not touched
                lock = held.enter_context(folder.ownership.lock())
            lock.record_pid()
            prepare_run_files(
                folder,
                saved is not None,
                config,
                corpus,
                state,
                changes,
                reporter,
                parent.record(corpus.vocab) if parent is not None else None,
            )
    prefixes = preview_prefixes(config, corpus, reporter)
    for warning in precision_warnings(precision, config.model.kind, ranks.device):
        reporter.warn(warning)
    board = tensorboard(folder) if config.log.tensorboard and ranks.is_main else None
    reporter.start(
        run_start(
            config, corpus, model, folder, ranks, state if saved is not None else None, parent, precision=precision
        )
    )
    return Trainer(
        config=config,
        run_dir=folder,
        corpus=corpus,
        raw_model=model,
        model=ranks.wrap(model),
        optimizer=optimizer,
        scaler=scaler,
        data_generator=data_generator,
        state=state,
        ranks=ranks,
        reporter=reporter,
        prefixes=prefixes,
        board=board,
    )


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


def load_run_corpus(
    config: Config, reporter: Reporter, ranks: distributed.Ranks, saved: ckpt.Checkpoint | None, parent: Parent | None
) -> Corpus:
    """The corpus, with the run's vocabulary: a fine-tuned run's extends its parent's; a resumed run keeps
    the one its checkpoint holds (a fine-tuned run's is not in sorted order)."""

    def load(vocab: Vocab | None) -> Corpus:
        with ranks.local_main_first():  # several processes share one memory-mapped copy of the encoded corpus
            return load_corpus(
                config.data,
                progress=reporter.download,
                cache=encoded_cache_dir() if ranks.active else None,
                vocab=vocab,
            )

    base = parent.vocab if parent is not None else None
    if saved is not None and saved.vocab != sorted(saved.vocab):  # a fine-tuned run's order: encode with it at once
        base = Vocab.in_order(saved.vocab)
    corpus = load(base)
    if saved is not None and corpus.sha256 != saved.corpus_sha256:
        raise UsageError(
            f"cannot resume: corpus {config.data.corpus} is not the text this run was trained on "
            "(its checksum differs); resume with the original corpus"
        )
    if saved is not None and corpus.vocab.chars != saved.vocab:  # sorted, but with characters the text lacks
        corpus = load(Vocab.in_order(saved.vocab))
    return corpus


def check_corpus(corpus: Corpus, c: Config) -> None:
    need = make_batches(corpus.train, c.train).min_chars
    if len(corpus.train) < need:
        raise CorpusError(
            f"the train split has {len(corpus.train)} characters, but batch_size {c.train.batch_size} x num_steps "
            f"{c.train.num_steps} needs at least {need}: use a longer corpus or lower train.batch_size/train.num_steps"
        )
    if len(corpus.val) == 1 or (c.data.val_fraction > 0 and len(corpus.val) == 0):
        raise CorpusError(f"the val split has {len(corpus.val)} characters: raise data.val_fraction or set it to 0")


def prepare_run_files(
    run_dir: RunDir,
    resumed: bool,
    config: Config,
    corpus: Corpus,
    state: TrainState,
    changes: dict,
    reporter: Reporter,
    parent: dict | None = None,
) -> None:
    """A new run: a fresh folder, marked as charlm's first, with its config and vocabulary (and, fine-tuned,
    the init_from line that starts metrics.jsonl). A resumed one: metrics trimmed to the checkpoint (evals
    that a crash cut short are recomputed), a resume event, the config as resumed."""
    if not resumed:
        run_dir.ownership.prepare_new()
        run_dir.ownership.mark()
        run_dir.write_run_files(dump_config(config), corpus.vocab.to_json())
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


def preview_prefixes(config: Config, corpus: Corpus, reporter: Reporter) -> list[str]:
    prefixes = [p for p in config.sample.prefixes if not corpus.vocab.missing(p)]
    for p in config.sample.prefixes:
        if p not in prefixes:
            reporter.warn(f"preview prefix {p!r} has characters the corpus lacks: skipped")
    return prefixes


def resolved_precision(config: Config, device: torch.device) -> capability.Precision:
    """train.precision on this device (auto resolved); fp16 refused where the CPU has no float16 kernel."""
    precision = capability.resolve_precision(config.train.precision, device.type)
    kind = config.model.kind
    if precision.name == "fp16" and device.type == "cpu" and not capability.cpu_fp16_kernel(kind):
        raise UsageError(
            f"train.precision=fp16: PyTorch has no float16 {kind} kernel on this CPU: use "
            "train.precision=auto (or fp32, bf16) on the CPU; fp16 is for GPUs without bf16"
        )
    return precision


NATIVE_UNITS = {"bf16": "AVX-512 BF16 or AMX", "fp16": "AMX-FP16 or AVX-512 FP16"}  # on a CPU


def precision_warnings(precision: capability.Precision, kind: str, device: torch.device) -> list[str]:
    """What an asked-for precision cannot speed up here: a format this device only emulates, or a CPU GRU in
    bf16 (auto picks neither warning's case: bf16 pays for a GRU's head)."""
    name = precision.name
    if not precision.asked or name == "fp32" or device.type not in ("cpu", "cuda"):
        return []
    if not capability.native(name, device.type):
        where, units = ("CPU", NATIVE_UNITS[name]) if device.type == "cpu" else ("GPU", "compute capability 8.0+")
        return [
            f"train.precision={name}: this {where} has no native {name} arithmetic ({units}), so {name} runs "
            "slower than fp32 here: set train.precision=auto"
        ]
    if name == "bf16" and device.type == "cpu" and kind == "gru":
        return ["train.precision=bf16: PyTorch's CPU GRU has no bf16 kernel, so only the output head runs in bf16"]
    return []


def run_start(
    config: Config,
    corpus: Corpus,
    model: CharRNN,
    run_dir: RunDir,
    ranks: distributed.Ranks,
    resumed: TrainState | None,
    parent: Parent | None = None,
    *,
    precision: capability.Precision,
) -> RunStart:
    t = config.train
    return RunStart(
        run_dir=str(run_dir),
        device=ranks.describe(),
        corpus=corpus.name,
        vocab_size=len(corpus.vocab),
        train_chars=len(corpus.train),
        val_chars=len(corpus.val),
        test_chars=len(corpus.test),
        parameters=model.num_parameters(),
        batches_per_epoch=len(make_batches(corpus.train, t)),
        epochs=t.epochs,
        chars_per_batch=t.batch_size * t.num_steps,
        resumed_at=(resumed.epoch, resumed.batch_in_epoch) if resumed is not None else None,
        time_budget=parse_duration(t.time_budget) if t.time_budget is not None else None,
        init_from=str(parent.path) if parent is not None else None,
        new_chars=len(corpus.vocab) - len(parent.checkpoint.vocab) if parent is not None else 0,
        precision=precision.name,
        precision_reason=precision.reason,
    )


def tensorboard(run_dir: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "log.tensorboard needs the tensorboard package: pip install tensorboard, or set log.tensorboard=false"
        ) from None
    return SummaryWriter(str(run_dir / "tb"))
