"""The Python API: load a trained model (a run folder or an exported model folder) and use it; train; export.

    import charlm
    model = charlm.load("runs/jaychou-lstm-20261123-235001")   # or a folder made by charlm export
    model.generate("分开", length=50, temperature=0.8, seed=1)
    model.perplexity("some text")                              # or file=PATH, or split="val"
    for chunk in model.stream("分开", length=500): ...

The CLI's generate and perplexity go through `load` and `Model` too, so both give the same text and
numbers. Importing this module is light: torch and the training code load when a function needs them,
which keeps `import charlm` and the CLI's start-up fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charlm.config import Config, load_config
from charlm.errors import UsageError, shown

if TYPE_CHECKING:
    import torch

    from charlm.data.vocab import Vocab
    from charlm.events import Reporter, RunSummary
    from charlm.model import CharRNN
    from charlm.store.checkpoint import Checkpoint

__all__ = ["Model", "export_model", "load", "load_config", "train"]

TEMPERATURE = 0.8  # the default of charlm generate


class TextReader:
    """What a Model does with a text it reads: score it (statically or dynamically), adapt to it, check it
    against the training split. A base of Model (it uses Model's net, vocab, checkpoint, path, device, which)."""

    def perplexity(
        self,
        text: str | None = None,
        *,
        file: str | Path | None = None,
        split: str | None = None,
        dynamic: bool = False,
        mix: bool = False,
        **dynamic_options: Any,
    ) -> dict:
        """Score `text`, a text `file`, or a `split` of the training corpus (the default: val).

        Returns {"nats_per_char", "bits_per_char", "perplexity", "chars", "protocol", "source"}, with the
        protocol of training's evals (see charlm.evaluate); text and files get the corpus's normalisation.
        With dynamic=True, dynamic evaluation's figures (`method`, `lr`, `decay` as --dynamic-* takes them),
        the text read in one stream, with the static figure of the same stream under "static". With mix=True,
        `perplexity --mix --json`'s: the network's figures, and the mix's under "mix" (needs charlm[novelty]).
        """
        from charlm.evaluate import TextSource, score_model

        if sum(x is not None for x in (text, file, split)) > 1:
            raise UsageError("score one thing: text, file or split")
        # the CLI's checks; a text is read as a file holding it
        source = TextSource(split=split, file=path_arg(file, "file"), text=text, text_as_file=True)
        if mix is not False:
            return self._mixed(source, mix, dynamic, dynamic_options)
        if dynamic is not False or dynamic_options:
            return self._dynamic(source, dynamic, dynamic_options)
        result, _ = score_model(self.net, self.vocab, self.checkpoint, source=source, device=self.device)
        return result

    def _mixed(self, source, mix: object, dynamic: object, options: dict) -> dict:
        from charlm.counts.scoring import score_text_mixed
        from charlm.evaluate import text_to_score

        if mix is not True or dynamic not in (True, False):
            raise UsageError(f"mix and dynamic must be True or False, not {shown(mix)} and {shown(dynamic)}")
        scored = text_to_score(self.net, self.vocab, self.checkpoint, source)
        reading = _dynamic_options(options) if dynamic else None
        return score_text_mixed(scored, self.path, self.which, device=self.device, dynamic=reading).to_dict()

    def _dynamic(self, source, dynamic: object, options: dict) -> dict:
        from charlm.dynamic.run import STATIC, adapt, figures

        if dynamic is not True:
            raise UsageError(f"dynamic must be True or False, not {shown(dynamic)} (method, lr, decay go with it)")
        static = adapt(self.net, self.vocab, self.checkpoint, source, STATIC, **self._where())
        adapted = adapt(self.net, self.vocab, self.checkpoint, source, _dynamic_options(options), **self._where())
        return figures(adapted.losses) | {
            "protocol": "dynamic evaluation: one stream, one update after each segment of train.num_steps",
            "source": source.description,
            "static": figures(static.losses),
            **adapted.options.to_dict(),
            "chosen_by": adapted.chosen_by,
        }

    def adapt(self, text: str | None = None, *, file: str | Path | None = None, **dynamic_options: Any) -> Model:
        """A copy of this model adapted to `text` (or a text `file`) by reading it with dynamic evaluation, to
        sample in its style: `method` (sgd | rms), `lr`, `decay` as --dynamic-* takes them. This model is unchanged."""
        from charlm.dynamic.run import adapt
        from charlm.evaluate import TextSource

        if (text is None) == (file is None):
            raise UsageError("adapt reads one text: pass text or file=PATH")
        source = TextSource(file=path_arg(file, "file"), text=text, text_as_file=True)
        adapted = adapt(
            self.net, self.vocab, self.checkpoint, source, _dynamic_options(dynamic_options), **self._where()
        )
        model = Model(adapted.net, self.vocab, self.checkpoint, path=self.path, device=self.device, which=self.which)
        model._trained, model._read = self._trained, adapted.ids
        return model

    def _where(self) -> dict:
        return {"folder": self.path, "which": self.which, "device": self.device}

    def novelty(self, text: str) -> dict:
        """What of `text` (a sample, say) also occurs in the model's training split: {"chars", "longest":
        {"length", "text", "start", "train_offset", "train_line"}, "shares": {"8", "16", "32"}: the share of
        its substrings of that length found in training (None when the text is shorter), "training_item"}
        (see charlm.analysis.novelty). The first call reads the run's index, or builds it from the training
        corpus (pip install 'charlm[novelty]')."""
        from charlm.analysis.novelty_index import checker

        if not isinstance(text, str):
            raise UsageError(f"novelty takes the text as a str, not {shown(text)}")
        if self._novelty is None:
            self._novelty = checker(self.path, self.checkpoint)
        return self._novelty.report(text).to_dict()


class Model(TextReader):
    """A trained character model, ready to sample from and to score text with. Made by `charlm.load`.

    `net` is the torch module (eval mode), `vocab` its characters, `checkpoint` what was loaded (its
    `config`, corpus checksum and train state), `path` the folder it came from.
    """

    def __init__(
        self, net: CharRNN, vocab: Vocab, checkpoint: Checkpoint, *, path: Path, device: torch.device, which="best"
    ):
        self.net, self.vocab, self.checkpoint, self.path, self.device = net, vocab, checkpoint, path, device
        self.which = which  # best | last: names the checkpoint's cached dynamic-evaluation statistics
        self._novelty = None  # the novelty index, read (or built) by the first novelty() call
        # the trained weights (whose mix it is) and the text an adapted copy read (its counts count it too)
        self._trained, self._read = net, None

    @property
    def config(self) -> Config:
        """The config the model was trained with."""
        return self.checkpoint.config

    def __repr__(self) -> str:
        m = self.checkpoint.model_config
        return (
            f"charlm.Model({str(self.path)!r}: {m.kind} {m.num_layers}x{m.hidden_size}, {len(self.vocab):,} characters)"
        )

    def generate(
        self,
        prefix: str,
        length: int = 100,
        *,
        temperature: float = TEMPERATURE,
        seed: int | None = None,
        **options: Any,
    ) -> str:
        """The prefix followed by `length` sampled characters. temperature 0 is greedy; `options` are any
        other sampling options of charlm.generation.sampling (top_k, top_p, ...)."""
        if "num_samples" in options:
            raise UsageError("generate makes one text: call samples(prefix, length, num_samples) for several")
        return self.samples(prefix, length, 1, temperature=temperature, seed=seed, **options)[0]

    def samples(
        self,
        prefix: str,
        length: int = 100,
        num_samples: int = 2,
        *,
        temperature: float = TEMPERATURE,
        seed: int | None = None,
        **options: Any,
    ) -> list[str]:
        """`num_samples` independent samples, made in one batch (each the prefix and `length` characters).

        The prefix is read in the run's own text form (data.lowercase, data.normalize: "The" is "the" to a
        lower-cased model) and starts the text in that form; a model trained with
        train.reset_state_at_documents zeroes a sample's state where it writes <eod>, as in training.
        mix=True samples from the model mixed with its counts (generate --mix; max_copy as --max-copy)."""
        from charlm.generation.sampling import generate

        if options.pop("mix", False):
            options["mixing"] = self._mixing(options.pop("max_copy", None))
        return generate(
            self.net,
            self.vocab,
            self._prefix(prefix),
            length,
            reset=self._reset(),
            temperature=temperature,
            seed=seed,
            num_samples=num_samples,
            device=self.device,
            **options,
        )

    def _mixing(self, max_copy: int | None):
        from charlm.counts.sampling import sampler
        from charlm.counts.scoring import load_mix

        mix = load_mix(self.path, self.checkpoint, self._trained, device=self.device, say=lambda line: None)
        return sampler(mix, max_copy=max_copy, read=self._read)

    def stream(
        self,
        prefix: str,
        length: int = 100,
        *,
        temperature: float = TEMPERATURE,
        seed: int | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """The text after the prefix, one character at a time as it is made (the same text as generate;
        a document's end is the string "<eod>").

        The arguments are checked here, when stream is called, before the first character."""
        from charlm.generation.sampling import stream

        steps = stream(
            self.net,
            self.vocab,
            self._prefix(prefix),
            length=length,
            reset=self._reset(),
            temperature=temperature,
            seed=seed,
            device=self.device,
            **options,
        )
        chars = self.vocab.chars
        return (chars[int(ids[0])] for ids in steps)

    def items(
        self,
        n: int,
        length: int = 200,
        *,
        prefix: str | None = None,
        temperature: float = TEMPERATURE,
        seed: int | None = None,
        **options: Any,
    ) -> list:
        """`n` whole items (documents) made in one batch, each ending at the end symbol <eod> or after `length`
        characters, each starting with `prefix` when given (a list of generation.items.Item: .text, .ended,
        ...). The model must have been trained with data.documents lines, paragraphs or files; `unknown="map"`
        reads a prefix's unseen characters as <unk>."""
        from charlm.generation.items import items

        return items(
            self.net,
            self.vocab,
            n,
            length=length,
            prefix=self._prefix(prefix),
            temperature=temperature,
            seed=seed,
            device=self.device,
            **options,
        )

    def _prefix(self, prefix):
        from charlm.generation.text_form import normalise_prefix

        return normalise_prefix(prefix, self.config.data)

    def _reset(self) -> int | None:
        from charlm.evaluate import reset_id

        return reset_id(self.config, self.vocab)


def load(path: str | Path | None = None, checkpoint: str = "best", device: str | torch.device = "cpu") -> Model:
    """A run folder's checkpoint (best or last) or an exported model folder, ready to use on `device`
    (cpu, cuda, mps or auto). Without a path: the latest run under runs/."""
    import torch

    from charlm.runtime.device import pick_device
    from charlm.store.model_dir import load_model, resolve

    if not isinstance(device, (str, torch.device)):
        raise UsageError(f"device must be auto, cpu, cuda, cuda:N or mps, not {shown(device)}")
    folder = resolve(path_arg(path, "the folder to load"))
    where = pick_device(device) if isinstance(device, str) else device
    net, vocab, saved = load_model(folder, checkpoint, where)
    return Model(net, vocab, saved, path=folder, device=where, which=checkpoint)


def train(
    config: Config,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
) -> RunSummary:
    """Train as `config` says (see charlm.load_config); `init_from` fine-tunes a run or model folder
    (RUN:last for a run's last checkpoint). Returns the run's summary (events.RunSummary). Without a
    reporter it says nothing, except in a Jupyter notebook, where one output shows the run as it goes."""
    from charlm.training.setup import train as run_training
    from charlm.ui.notebook import NotebookReporter, in_notebook

    if not isinstance(config, Config):
        raise UsageError(
            f"charlm.train takes a Config, not {shown(config)}: make one with "
            "charlm.load_config('configs/tiny.yaml', ['train.epochs=2'])"
        )
    if not isinstance(resume, bool):
        raise UsageError(f"resume must be True or False, not {shown(resume)}")
    if reporter is None and in_notebook():
        reporter = NotebookReporter()
    return run_training(
        config, path_arg(run_dir, "run_dir"), reporter, resume=resume, init_from=path_arg(init_from, "init_from")
    )


def export_model(run_dir: str | Path | None, out: str | Path, checkpoint: str = "best") -> Path:
    """Write a portable model folder (model.safetensors, config.json, vocab.json, README.md) from a run."""
    from charlm.export.model_folder import export_model as export

    if out is None:
        raise UsageError("out is needed: the new model folder's path")
    return export(path_arg(run_dir, "run_dir"), path_arg(out, "out"), checkpoint)


def _dynamic_options(given: dict):
    """DynamicOptions from the Python API's keywords (method, lr, decay), checked as the CLI's flags are."""
    from charlm.dynamic.adapter import DynamicOptions

    unknown = sorted(set(given) - {"method", "lr", "decay"})
    if unknown:
        raise UsageError(f"unknown dynamic evaluation option {unknown[0]!r}: use method, lr and decay")
    return DynamicOptions(**given)


def path_arg(value: object, name: str) -> Path | None:
    """A path argument as a Path (None stays None); anything but text or an os.PathLike is a UsageError."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, os.PathLike)):
        raise UsageError(f"{name} must be a path (a str or pathlib.Path), not {shown(value)}")
    return Path(value)
