"""`charlm generate`: sample text from a run or a model folder, starting from a prefix."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.common import Device, ModelDir, RunDir, Which, model_source
from charlm.errors import UsageError

# the options of `charlm generate` (their help is the CLI's)
Prefix = Annotated[
    Optional[str],
    typer.Option("--prefix", "-p", help="Text to start from (default: none; the sample starts at a new line)."),
]
PrefixFile = Annotated[
    Optional[Path], typer.Option("--prefix-file", help="Start from the text of this UTF-8 file, exactly as written.")
]
Length = Annotated[int, typer.Option("--length", "-n", help="Characters to generate.")]
Temperature = Annotated[float, typer.Option(help="0 is greedy (d2l); higher is more varied.")]
TopK = Annotated[int, typer.Option(help="Sample among the k most likely (0: all).")]
TopP = Annotated[float, typer.Option(help="Sample among the most likely holding this probability.")]
NumSamples = Annotated[int, typer.Option(help="Independent samples, made in one batch (with --beam: the best beams).")]
Seed = Annotated[Optional[int], typer.Option(help="Random seed for repeatable samples.")]
Stop = Annotated[
    Optional[list[str]],
    typer.Option("--stop", help="End a sample when it emits this text (repeatable; \\n is a line break)."),
]
Beam = Annotated[int, typer.Option(help="Beam search with N beams instead of sampling (ignores --temperature).")]
RepetitionPenalty = Annotated[
    float,
    typer.Option(help="Divide the logits of characters seen in the last --repetition-window by R (1: off; try 1.3)."),
]
RepetitionWindow = Annotated[int, typer.Option(help="Characters the repetition penalty looks back on.")]
AsJson = Annotated[
    bool, typer.Option("--json", help="One JSON object per sample: text, prefix, options, bits per char.")
]
Novelty = Annotated[
    bool,
    typer.Option(
        "--novelty",
        help="After each sample, what of it occurs in the training split: the longest such span, the share of "
        '8-, 16- and 32-character substrings (in --json as "novelty"). Needs charlm[novelty].',
    ),
]
Items = Annotated[
    Optional[int],
    typer.Option(
        "--items",
        help="Write N whole items (documents) at once, one per line, each ending at the end symbol or --length "
        "(needs a model trained with data.documents: lines, paragraphs or files).",
    ),
]
Unknown = Annotated[
    str,
    typer.Option(help="A prefix's characters the model never saw: refuse, or map them to <unk> (data.min_char_count)."),
]
Weights = Annotated[
    str,
    typer.Option(
        help="The step's weights: fp32 (exact), bf16 (fastest for many samples) or int8 (fastest for one); "
        "bf16 and int8 run on the CPU."
    ),
]

Adapt = Annotated[
    Optional[Path],
    typer.Option(
        "--adapt",
        help="Read this text file with dynamic evaluation first, then sample from the adapted model (its style).",
    ),
]

Mix = Annotated[
    bool,
    typer.Option(
        "--mix",
        help="Sample from the model mixed with counts of its training text (as perplexity --mix scores). "
        "Needs charlm[novelty].",
    ),
]
MaxCopy = Annotated[
    Optional[int],
    typer.Option(
        "--max-copy", help="With --mix: the network alone once a sample's last N characters are in the training text."
    ),
]


@cli.app.command(epilog="Example: charlm generate --prefix 分开 --length 100 --temperature 0.8 --seed 1")
def generate(
    prefix: Prefix = None,
    prefix_file: PrefixFile = None,
    run_dir: RunDir = None,
    length: Length = 100,
    temperature: Temperature = 0.8,
    top_k: TopK = 0,
    top_p: TopP = 1.0,
    num_samples: NumSamples = 1,
    seed: Seed = None,
    stop: Stop = None,
    beam: Beam = 0,
    repetition_penalty: RepetitionPenalty = 1.0,
    repetition_window: RepetitionWindow = 64,
    as_json: AsJson = False,
    novelty: Novelty = False,
    weights: Weights = "fp32",
    checkpoint: Which = "best",
    device: Device = "cpu",
    model_dir: ModelDir = None,
    adapt: Adapt = None,
    items: Items = None,
    unknown: Unknown = "refuse",
    mix: Mix = False,
    max_copy: MaxCopy = None,
) -> None:
    """Sample text from a trained run (or an exported model), starting from a prefix; it streams as it is made."""
    from charlm.api import load
    from charlm.generation import sampling as gen

    if prefix is not None and prefix_file is not None:
        raise UsageError("pass --prefix or --prefix-file, not both")
    if prefix_file is not None:
        prefix = gen.read_prefix_file(prefix_file)
    # beam search ranks by the model's own probabilities: no temperature
    options = gen.SamplingOptions(
        temperature=0.0 if beam else temperature,
        top_k=top_k,
        top_p=top_p,
        num_samples=num_samples,
        seed=seed,
        beam=beam,
        stop=tuple(_unescape(s) for s in stop or ()),
        repetition_penalty=repetition_penalty,
        repetition_window=repetition_window,
        weights=weights,
    )
    options.check(length)  # before the checkpoint is read: bad flags fail fast
    _check_items(items, unknown, num_samples=num_samples, beam=beam)
    _check_mix(mix, max_copy, items=items, beam=beam)
    model = load(model_source(run_dir, model_dir), checkpoint, device)
    counts = _mix(model) if mix else None  # of the trained weights, before any adaptation
    read = None
    if adapt is not None:
        model, read = _adapted(model, adapt)
    mixing = _sampler(counts, max_copy=max_copy, read=read) if mix else None
    given = {"items": items, "unknown": unknown, "as_json": as_json, "novelty": novelty, "mixing": mixing}
    _sample(model, prefix, length, options, **given)


def _check_mix(mix: bool, max_copy: Optional[int], *, items, beam: int) -> None:
    if max_copy is not None and (not mix or max_copy < 1):
        raise UsageError(
            "--max-copy guards the mix: pass --mix, and a length >= 1" if mix else "--max-copy needs --mix"
        )
    if mix and (items is not None or beam):
        raise UsageError("--mix samples texts one character at a time: drop --items and --beam")


def _mix(model):
    """The mix of `model` (its counts and mixers, fitted on first use)."""
    from charlm.counts.scoring import load_mix

    say = lambda line: cli.err.print(line, markup=False)  # noqa: E731
    return load_mix(model.path, model.checkpoint, model.net, device=model.device, say=say)


def _sample(
    model, prefix, length: int, options, *, items, unknown: str, as_json: bool, novelty: bool, mixing=None
) -> None:
    """Sample as the flags say and write it: items, samples in one batch, or one text streamed."""
    from charlm.evaluate import reset_id
    from charlm.generation import sampling as gen
    from charlm.generation.text_form import normalise_prefix, plain_chars

    check = _novelty_checker(model) if novelty else None  # built (once per run) before sampling
    if items is not None:
        made = model.items(items, length, prefix=prefix, unknown=unknown, **_item_options(options))
        return _write_items(made, length, dataclasses.replace(options, num_samples=items), as_json, check)
    net, vocab, dev = model.net, model.vocab, model.device
    # the prefix in the run's text form (data.lowercase, data.normalize); <eod> zeroes a row's state in a model
    # trained with the reset, and prints as a line break (plain_chars)
    given = {"device": dev, "unknown": unknown, "reset": reset_id(model.config, vocab), **vars(options)}
    given["mixing"] = mixing
    prefix = normalise_prefix(prefix, model.config.data)
    if as_json or options.beam or options.num_samples > 1:
        made = gen.samples(net, vocab, prefix, length=length, **given)
        return _write_samples(made, length, options, as_json, check)
    steps = gen.stream(net, vocab, prefix, length=length, **given)  # all checked before printing
    _write_stream(steps, prefix, plain_chars(vocab))
    _print_novelty(check, steps.samples()[0])


def _write_stream(steps, prefix: str | None, chars: list[str]) -> None:
    """One sample, each character printed as it is made (`chars`: each id's plain text)."""
    sys.stdout.write(prefix or "")
    for ids in steps:
        sys.stdout.write(chars[int(ids[0])])
        sys.stdout.flush()
    sys.stdout.write("\n")
    _say_stopped(steps.samples()[0])


def _sampler(counts, *, max_copy: Optional[int], read):
    from charlm.counts.sampling import sampler

    return sampler(counts, max_copy=max_copy, read=read)


def _adapted(model, file: Path):
    """The model after reading `file` with dynamic evaluation, and the ids it read; says on stderr what the
    reading cost."""
    from charlm.dynamic.run import adapt
    from charlm.evaluate import TextSource

    where = {"folder": model.path, "which": model.which, "device": model.device}
    done = adapt(model.net, model.vocab, model.checkpoint, TextSource(file=file), _default_options(), **where)
    o, bits = done.options, done.losses.nats_per_char / math.log(2)
    cli.err.print(
        f"adapted to {file} ({done.losses.chars:,} chars, {bits:.3f} bits/char as it read; "
        f"{o.method}, lr {o.lr:g}, decay {o.decay:g}: {done.chosen_by})",
        markup=False,
    )
    model.net = done.net
    return model, done.ids


def _default_options():
    from charlm.dynamic.adapter import DynamicOptions

    return DynamicOptions()


def _write_samples(results: list, length: int, options, as_json: bool, check=None) -> None:
    """Samples made in one batch (or by beam search): JSON lines, headed texts, or the one text; each with
    its novelty report when `check` (a novelty.Checker) is given."""
    for n, sample in enumerate(results, 1):
        if as_json:
            record = sample.record(n, length, options)
            if check is not None:
                record["novelty"] = check.report(_written(sample)).to_dict()
            cli.print_json(record)
        elif options.num_samples > 1:
            sys.stdout.write(f"--- sample {n}{_stopped(sample)}\n{sample.printed}\n")
            _print_novelty(check, sample)
        else:
            sys.stdout.write(f"{sample.printed}\n")
            _say_stopped(sample)
            _print_novelty(check, sample)


def _novelty_checker(model):
    from charlm.analysis.novelty_index import checker

    return checker(model.path, model.checkpoint, say=lambda line: cli.err.print(line, markup=False))


def _written(sample) -> str:
    """What the model wrote: the report is on it, not on the prefix the user gave."""
    return sample.text[len(sample.text) - sample.generated :]


def _print_novelty(check, sample) -> None:
    if check is not None:
        from charlm.ui.views import novelty_text

        sys.stdout.flush()
        cli.out.print(novelty_text(check.report(_written(sample))))


def _check_items(count: int | None, unknown: str, *, num_samples: int, beam: int) -> None:
    if unknown not in ("refuse", "map"):
        raise UsageError(f"--unknown {unknown!r} is not valid: use refuse or map")
    if count is None:
        return
    if count < 1:
        raise UsageError(f"--items must be >= 1, got {count}")
    if num_samples != 1:
        raise UsageError("--items N writes N items: drop --num-samples")
    if beam:
        raise UsageError("--items samples its items: drop --beam")


def _item_options(options) -> dict:
    return {k: v for k, v in vars(options).items() if k not in ("num_samples", "beam")}


def _write_items(made: list, length: int, options, as_json: bool, check=None) -> None:
    """One item per line (a blank line between items that hold line breaks), or one JSON object per item; each
    with its novelty report (whether it is a whole training item, too) when `check` is given."""
    apart = "\n\n" if any("\n" in item.text for item in made) else "\n"
    for n, item in enumerate(made, 1):
        report = check.report(item.text) if check is not None else None
        if as_json:
            record = item.record(n, length, options)
            cli.print_json(record | ({"novelty": report.to_dict()} if report else {}))
            continue
        sys.stdout.write(item.text + (apart if n < len(made) else "\n"))
        if report is not None:
            from charlm.ui.views import novelty_text

            sys.stdout.flush()
            cli.out.print(novelty_text(report))


def _unescape(text: str) -> str:
    """--stop '\\n\\n' means two line breaks (the shell passes the backslashes through)."""
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
    out, chars = [], iter(text)
    for c in chars:
        out.append(escapes.get(next(chars, "\\"), None) if c == "\\" else c)
        if out[-1] is None:
            raise UsageError(f"--stop {text!r}: a backslash starts \\n, \\t, \\r or \\\\ only")
    return "".join(out)


def _stopped(sample) -> str:
    return f" (stopped at {sample.stop!r} after {sample.generated} characters)" if sample.stop else ""


def _say_stopped(sample) -> None:
    if sample.stop:
        sys.stdout.flush()
        cli.err.print(_stopped(sample).strip()[1:-1], markup=False)
