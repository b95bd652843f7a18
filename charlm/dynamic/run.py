"""Dynamic evaluation of a run or model folder: the text as `charlm perplexity` reads it, scored in one stream
without adapting (static) and with (dynamic), side by side; the rms statistics and tuned values found or made."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch

from charlm import units
from charlm.dynamic import stats, tuning
from charlm.dynamic.adapter import Adapter, DynamicOptions
from charlm.dynamic.scoring import diverged, dynamic_losses
from charlm.errors import Diverged, UsageError
from charlm.evaluate import CharLosses, TextSource, TextToScore, reset_id, text_to_score
from charlm.events import advancing
from charlm.runtime.capability import resolve_precision

# no step at all: the one-stream static figure, by the same code as the dynamic one
STATIC = DynamicOptions("sgd", 0.0, 0.0)


@dataclass
class DynamicScore:
    """What `perplexity --dynamic` reports: both figures, the values used and where they came from, the times."""

    source: str
    options: DynamicOptions
    chosen_by: str  # "given", "tuned on val (dynamic.json)" or "defaults"
    precision: str
    static: CharLosses
    dynamic: CharLosses
    static_seconds: float
    dynamic_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "protocol": "one stream, segments of train.num_steps, one update after each (Krause et al. 2018)",
            "static": figures(self.static) | {"seconds": self.static_seconds},
            "dynamic": figures(self.dynamic) | {"seconds": self.dynamic_seconds},
            "gain_bits_per_char": (self.static.nats_per_char - self.dynamic.nats_per_char) / math.log(2),
            **self.options.to_dict(),
            "chosen_by": self.chosen_by,
            "precision": self.precision,
        }


def check_adapted(losses: CharLosses, options: DynamicOptions, chosen_by: str, vocab_size: int) -> CharLosses:
    """`losses` unless the adaptation diverged (scoring.diverged: steps that threw the weights far, a step size
    too large). Every figure after it would be noise (or NaN, which JSON cannot hold): Diverged says what to lower."""
    nats, uniform = losses.nats_per_char, math.log(max(vocab_size, 2))
    if not diverged(nats, vocab_size):
        return losses
    raise Diverged(
        f"dynamic evaluation diverged: the adapted model scores {units.bits(nats):.4g} bits/char where a uniform "
        f"guess among its {vocab_size:,} characters scores {units.bits(uniform):.3f} ({options.method}, lr "
        f"{options.lr:g}, decay {options.decay:g}: {chosen_by}): pass a lower --dynamic-lr"
    )


def figures(losses: CharLosses) -> dict:
    return units.figures(losses.nats_per_char, losses.chars)


@dataclass
class Setup:
    """A loaded model with what dynamic evaluation of it needs: its precision, tuned values, rms statistics."""

    scored: TextToScore
    folder: object  # the run or model folder (a Path)
    which: str
    device: torch.device
    writable: bool  # a run folder keeps statistics and tuned values; a model folder is read-only
    precision: str = "fp32"
    weights: str = ""

    def __post_init__(self):
        cfg = self.scored.checkpoint.config
        self.precision = resolve_precision(cfg.train.precision, self.device.type).name
        self.weights = stats.weights_hash(self.scored.model)

    @property
    def reset(self) -> int | None:
        return reset_id(self.scored.checkpoint.config, self.scored.vocab)

    @property
    def num_steps(self) -> int:
        return self.scored.checkpoint.config.train.num_steps

    def rms(self, notes: list[str]) -> dict[str, torch.Tensor]:
        """The rms statistics: from the run folder when they are there for these weights, else measured (and kept)."""
        model = self.scored.model
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
        path = self.folder / stats.stats_name(self.which)
        found = stats.read_cached(path, self.weights, shapes) if self.writable else None
        if found is not None:
            return found
        train = self.split_ids("train")
        cfg = self.scored.checkpoint.config.train
        measured = stats.gradient_rms(
            model, train, batch_size=cfg.eval_batch_size, num_steps=cfg.num_steps, device=self.device
        )
        chars = min(len(train), stats.STATS_CHARS)
        if self.writable:
            stats.write_cached(path, measured, self.weights, chars)
            notes.append(f"measured the rms statistics on {chars:,} chars of the train split: kept in {path.name}")
        else:
            notes.append(
                f"measured the rms statistics on {chars:,} chars of the train split (a model folder keeps none)"
            )
        return measured

    def split_ids(self, split: str) -> torch.Tensor:
        if self.scored.corpus is not None:
            return self.scored.corpus.split(split)
        s = self.scored
        return text_to_score(s.model, s.vocab, s.checkpoint, TextSource(split=split)).ids

    def adapter(self, model, options: DynamicOptions, notes: list[str]) -> Adapter:
        return Adapter(model, options, self.rms(notes) if options.method == "rms" else None)

    def resolve(self, options: DynamicOptions, *, notes: list[str]) -> tuple[DynamicOptions, str]:
        """The options with every value set, and where the values came from."""
        if options.tune:
            results = tuning.tune(
                self.scored.model,
                self.split_ids("val"),
                options.method,
                rms=self.rms(notes) if options.method == "rms" else None,
                num_steps=self.num_steps,
                device=self.device,
                precision=self.precision,
                reset=self.reset,
            )
            if self.writable:
                tuning.write_tuned(self.folder, self.weights, options.method, results)
            best = results[0]
            chosen = DynamicOptions(options.method, best["lr"], best["decay"])
            return chosen, f"tuned on the first {best['chars']:,} chars of val"
        if options.lr is not None and options.decay is not None:
            return options, "given"
        tuned = tuning.read_tuned(self.folder, self.weights) if self.writable else {}
        chosen_by = "tuned on val (dynamic.json)" if options.method in tuned else "defaults"
        given = [name for name in ("lr", "decay") if getattr(options, name) is not None]
        return options.resolved(tuned), f"{given[0]} given, {chosen_by}" if given else chosen_by


def setup(folder, which: str, source: TextSource, *, device) -> Setup:
    from charlm.evaluate import load_text_to_score
    from charlm.store.model_dir import is_model_dir

    scored = load_text_to_score(folder, which, source, device=device)
    return Setup(scored, folder, which, torch.device(device), writable=not is_model_dir(folder))


def score_dynamic(
    folder,
    which: str,
    source: TextSource,
    options: DynamicOptions,
    *,
    device="cpu",
    keep: int | None = 0,
    top_k: int = 0,
    progress=None,
) -> DynamicScore:
    """Score `source` under a run's checkpoint without adapting and with (both in one stream), timing each."""
    s = setup(folder, which, source, device=device)
    notes: list[str] = []
    options, chosen_by = s.resolve(options, notes=notes)
    if options.tune and source.split == "val":
        notes.append("the values were tuned on the start of the val split, the text scored here: an optimistic figure")
    common = dict(num_steps=s.num_steps, device=s.device, precision=s.precision, reset=s.reset, keep=keep, top_k=top_k)
    model = copy.deepcopy(s.scored.model)
    adapter = s.adapter(model, options, notes)  # before the clocks: measuring statistics is not scoring
    started = time.perf_counter()
    static = dynamic_losses(s.scored.model, s.scored.ids, Adapter(s.scored.model, STATIC), **common)
    static_seconds = time.perf_counter() - started
    started = time.perf_counter()
    dynamic = dynamic_losses(
        model, s.scored.ids, adapter, progress=advancing(progress, len(s.scored.ids) - 1), **common
    )
    dynamic_seconds = time.perf_counter() - started
    check_adapted(dynamic, options, chosen_by, len(s.scored.vocab))
    return DynamicScore(
        s.scored.source, options, chosen_by, s.precision, static, dynamic, static_seconds, dynamic_seconds, notes
    )


def keep_stats(folder, which: str, *, device) -> str:
    """--dynamic-stats: measure the rms statistics of a run's checkpoint again and keep them; says where."""
    from charlm.store.model_dir import is_model_dir

    if is_model_dir(folder):
        raise UsageError(
            "--dynamic-stats keeps the statistics in a run folder, and a model folder is read-only: "
            "use --dynamic --dynamic-method rms, which measures them in memory"
        )
    s = setup(folder, which, TextSource(split="train"), device=device)
    (folder / stats.stats_name(which)).unlink(missing_ok=True)
    notes: list[str] = []
    s.rms(notes)
    return notes[0]


class DynamicLosses:
    """The per-character losses of dynamic evaluation, for `surprisal.analyse` (--show and --html with --dynamic):
    called with the text to score, it adapts a copy of the model as it reads; `label` then says how."""

    def __init__(self, folder, which: str, options: DynamicOptions, *, device):
        self.folder, self.which, self.options, self.device = folder, which, options, device
        self.label, self.notes = "dynamic evaluation", []

    def __call__(self, scored: TextToScore, *, keep: int | None, top_k: int, features: bool = False) -> CharLosses:
        from charlm.store.model_dir import is_model_dir

        s = Setup(scored, self.folder, self.which, torch.device(self.device), writable=not is_model_dir(self.folder))
        options, chosen_by = s.resolve(self.options, notes=self.notes)
        self.label = f"dynamic evaluation: {options.method}, lr {options.lr:g}, decay {options.decay:g} ({chosen_by})"
        model = copy.deepcopy(scored.model)
        adapter = s.adapter(model, options, self.notes)
        losses = dynamic_losses(
            model,
            scored.ids,
            adapter,
            num_steps=s.num_steps,
            device=s.device,
            precision=s.precision,
            reset=s.reset,
            keep=keep,
            top_k=top_k,
            features=features,
        )
        return check_adapted(losses, options, chosen_by, len(scored.vocab))


@dataclass
class Adapted:
    """A copy of a model adapted to a text by reading it with dynamic evaluation (`adapt`)."""

    net: torch.nn.Module
    options: DynamicOptions
    chosen_by: str
    losses: CharLosses  # the text's losses as it was read (dynamic)
    notes: list[str] = field(default_factory=list)
    ids: torch.Tensor | None = None  # the text read (a mix's counts count it too: counts.sampling.sampler)


def adapt(
    net, vocab, checkpoint, source: TextSource, options: DynamicOptions, *, folder, which: str, device
) -> Adapted:
    """Read `source` with dynamic evaluation on a copy of `net` (the loaded model is left as it was)."""
    from charlm.store.model_dir import is_model_dir

    scored = text_to_score(net, vocab, checkpoint, source)
    s = Setup(scored, folder, which, torch.device(device), writable=folder is not None and not is_model_dir(folder))
    notes: list[str] = []
    options, chosen_by = s.resolve(options, notes=notes)
    model = copy.deepcopy(net)
    losses = dynamic_losses(
        model,
        scored.ids,
        s.adapter(model, options, notes),
        num_steps=s.num_steps,
        device=s.device,
        precision=s.precision,
        reset=s.reset,
    )
    check_adapted(losses, options, chosen_by, len(vocab))  # before a sampler meets the diverged weights
    model.eval()
    return Adapted(model, options, chosen_by, losses, notes, scored.ids)
