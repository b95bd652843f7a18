"""`train()`: set a run up (new, fine-tuned or resumed) and hand it to the Trainer.

    config ─► corpus (load, check) ─► model + optimizer (seeded) ─► TrainState (fresh, or from last.pt)
           ─► run folder (new files, or metrics trimmed to the checkpoint) ─► Trainer.run() ─► RunSummary

A fine-tuned run (init_from.py) differs only in its corpus's vocabulary (the parent's, extended) and
its initial weights (the parent's, grown); a resumed run keeps the vocabulary its checkpoint holds.
How the run computes (precision, deterministic algorithms) is compute.py's; its folder's files run_files.py's.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import torch

from charlm.config import Config, parse_duration
from charlm.data import Corpus, Vocab, encoded_cache_dir, load_corpus, make_batches
from charlm.errors import CorpusError, UsageError
from charlm.events import Reporter, RunStart, RunSummary, SilentReporter
from charlm.files.limits import check_memory
from charlm.model import CharRNN, weight_bytes
from charlm.runtime import capability, distributed
from charlm.store import checkpoint as ckpt
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState
from charlm.training import schedule
from charlm.training.compute import deterministic_algorithms, precision_warnings, resolved_precision
from charlm.training.init_from import WITH_RESUME, Parent, check_shape, load_parent
from charlm.training.loop import Trainer
from charlm.training.parts import RunParts
from charlm.training.resume import restore, seed_rank
from charlm.training.run_files import Request, load_saved_run, prepare_run_files, resumable_folder, tensorboard


def train(
    config: Config,
    run_dir: Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    *,
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
                trainer = start(config, request, reporter=reporter or SilentReporter(), ranks=ranks, held=held)
                summary = trainer.run()
            clean = True
            return summary
        finally:
            distributed.teardown(ranks, clean)


def start(
    config: Config, request: Request, *, reporter: Reporter, ranks: distributed.Ranks, held: contextlib.ExitStack
) -> Trainer:
    """Everything before the first batch: load, check, build, restore, prepare the folder, report the start.
    The folder's lock goes on `held`: before reading a checkpoint to resume, or, for a new run, once every
    input has been checked (bad input leaves no folder behind)."""
    precision = resolved_precision(config, ranks.device)
    # the run's config says what auto chose: a resume (on any machine) computes in it, or is refused
    config = replace(config, train=replace(config.train, precision=precision.name))
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
    corpus = load_run_corpus(config, reporter, ranks, saved=saved, parent=parent)
    check_corpus(corpus, config)
    model, optimizer, scaler, data_generator, state = build(
        config, corpus, ranks, parent=parent, precision=precision, saved=saved
    )
    if saved is None:
        folder = RunDir(ranks.from_main(request.run_dir or RunDir.new(config.name).path))
    parts = RunParts(
        config=config,
        run_dir=folder,
        corpus=corpus,
        raw_model=model,
        optimizer=optimizer,
        scaler=scaler,
        data_generator=data_generator,
        state=state,
        ranks=ranks,
        reporter=reporter,
    )
    with ranks.together():  # rank 0 prepares the folder; if that fails, every rank stops
        if ranks.is_main:
            if saved is None:
                folder.ownership.check_new()  # before the lock: a refused folder is not touched
                lock = held.enter_context(folder.ownership.lock())
            lock.record_pid()
            record = parent.record(corpus.vocab) if parent is not None else None
            prepare_run_files(parts, resumed=saved is not None, changes=changes, parent=record)
    announce(parts, parent=parent, precision=precision, resumed=saved is not None)
    return Trainer(parts)


def build(
    config: Config,
    corpus: Corpus,
    ranks: distributed.Ranks,
    *,
    parent: Parent | None,
    precision: capability.Precision,
    saved: ckpt.Checkpoint | None,
) -> tuple[CharRNN, torch.optim.Optimizer, torch.amp.GradScaler, torch.Generator, TrainState]:
    """The model (seeded; a fine-tuned run's with its parent's weights), the optimizer, fp16's scaler, the data
    generator and the state: fresh, or as `saved` left them."""
    t = config.train
    check_model_memory(config, len(corpus.vocab), ranks.device)
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
    else:
        state = restore(
            saved, model, optimizer, scaler=scaler, data_generator=data_generator, device=ranks.device, ranks=ranks
        )
    return model, optimizer, scaler, data_generator, state


def check_model_memory(config: Config, vocab_size: int, device: torch.device) -> None:
    """Refuse, before it is built, a model whose training state cannot fit on the device: its fp32 weights and
    gradients, and Adam's two moments (activations come on top: this is the least a step needs)."""
    copies = 2 if config.train.optimizer == "sgd" else 4
    weights = weight_bytes(config.model, vocab_size)
    m = config.model
    check_memory(
        copies * weights,
        f"training a model of {weights // 4:,} parameters ({m.kind} {m.num_layers}x{m.hidden_size}, embedding "
        f"{m.embed_size}, vocabulary {vocab_size:,}) with its gradients{' and optimizer state' * (copies > 2)}",
        "lower model.hidden_size, model.embed_size or model.num_layers",
        device,
    )


def announce(parts: RunParts, *, parent: Parent | None, precision: capability.Precision, resumed: bool) -> None:
    """The run's start, reported (with its skipped preview prefixes and precision warnings), once its folder
    is ready; the preview prefixes and (rank 0) the TensorBoard writer go on `parts`."""
    config, reporter = parts.config, parts.reporter
    parts.prefixes = preview_prefixes(config, parts.corpus, reporter)
    for warning in precision_warnings(precision, config.model.kind, parts.ranks.device):
        reporter.warn(warning)
    parts.board = tensorboard(parts.run_dir) if config.log.tensorboard and parts.ranks.is_main else None
    reporter.start(run_start(parts, resumed=resumed, parent=parent, precision=precision))


def load_run_corpus(
    config: Config,
    reporter: Reporter,
    ranks: distributed.Ranks,
    *,
    saved: ckpt.Checkpoint | None,
    parent: Parent | None,
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
    if c.data.documents != "stream" and c.data.val_fraction > 0 and len(corpus.val) == 0:
        raise CorpusError(
            f"the val split is empty: splits cut between documents (data.documents={c.data.documents}) and the "
            "corpus has too few of them; raise data.val_fraction, set it to 0, or use another data.documents"
        )
    if len(corpus.val) == 1 or (c.data.val_fraction > 0 and len(corpus.val) == 0):
        raise CorpusError(f"the val split has {len(corpus.val)} characters: raise data.val_fraction or set it to 0")


def preview_prefixes(config: Config, corpus: Corpus, reporter: Reporter) -> list[str]:
    prefixes = [p for p in config.sample.prefixes if not corpus.vocab.missing(p)]
    for p in config.sample.prefixes:
        if p not in prefixes:
            reporter.warn(f"preview prefix {p!r} has characters the corpus lacks: skipped")
    return prefixes


def run_start(
    parts: RunParts, *, resumed: bool, parent: Parent | None = None, precision: capability.Precision
) -> RunStart:
    corpus, state, t = parts.corpus, parts.state, parts.config.train
    return RunStart(
        run_dir=str(parts.run_dir),
        device=parts.ranks.describe(),
        corpus=corpus.name,
        vocab_size=len(corpus.vocab),
        train_chars=len(corpus.train),
        val_chars=len(corpus.val),
        test_chars=len(corpus.test),
        parameters=parts.raw_model.num_parameters(),
        batches_per_epoch=len(make_batches(corpus.train, t)),
        epochs=t.epochs,
        chars_per_batch=t.batch_size * t.num_steps,
        resumed_at=(state.epoch, state.batch_in_epoch) if resumed else None,
        time_budget=parse_duration(t.time_budget) if t.time_budget is not None else None,
        init_from=str(parent.path) if parent is not None else None,
        new_chars=len(corpus.vocab) - len(parent.checkpoint.vocab) if parent is not None else 0,
        precision=precision.name,
        precision_reason=precision.reason,
    )
