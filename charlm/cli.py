"""The `charlm` command: parses flags, calls library functions, prints their results.

Each command turns its flags into one library call (training.train, the API's load(...).stream,
evaluate.score_run, model_dir.export_model, runs.list_runs, ...) that works the same from Python; what stays
here is presentation (tables, lines, exit codes). torch is imported inside the commands that need it, so
--help and completion stay instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from charlm.config import load_config
from charlm.errors import CharlmError, UsageError

try:  # recent Typer carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older Typer uses click itself
    from click import exceptions as click_errors

app = typer.Typer(
    help="Character-level RNN/LSTM/GRU language models: train, generate, perplexity.",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
    epilog="Example: charlm train --corpus tinyshakespeare && charlm generate --prefix ROMEO: -n 200",
)
data_app = typer.Typer(help="Built-in corpora: list them, download one.", no_args_is_help=True,
                       epilog="Example: charlm data list; charlm data fetch tinyshakespeare")
app.add_typer(data_app, name="data")

out = Console(highlight=False, soft_wrap=True)  # one record per line, even in a log file
err = Console(stderr=True, highlight=False, soft_wrap=True)

RunDir = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run folder (default: latest in runs/).")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")]
RANK_0_GRACE_SECONDS = 2.0
Which = Annotated[str, typer.Option("--checkpoint", help="best (lowest val loss) or last.")]
ModelDir = Annotated[Optional[Path], typer.Option("--model", "-m", help="An exported model folder (charlm export), "
                                                  "instead of a run folder.")]


def _version(value: bool) -> None:
    if value:
        from charlm import __version__

        out.print(f"charlm {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                  help="Print the version and exit.")] = False) -> None:
    """Character-level RNN/LSTM/GRU language models: train, generate, perplexity."""


@app.command(epilog="Example: charlm train --config configs/d2l-jaychou-rnn.yaml --set train.epochs=10")
def train(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: jaychou-lstm).")]
    = None,
    corpus: Annotated[Optional[str], typer.Option(help="Built-in name, text file or folder of .txt files.")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run folder (default: runs/NAME-TIME).")]
    = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N | mps")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="KEY=VALUE, e.g. train.lr=0.01.")]
    = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last.pt.")] = False,
    resume_from: Annotated[Optional[str], typer.Option(
        "--resume-from", help="best | last: continue the run in --run-dir from that checkpoint (implies --resume).")]
    = None,
    nproc: Annotated[Optional[int], typer.Option(
        "--nproc", help="Train with N processes on this machine (torchrun; one per GPU, or CPU processes).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the config and print the torchrun commands (one machine, several); train nothing.")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary line.")]
    = False,
    init_from: Annotated[Optional[str], typer.Option(
        "--init-from", help="Fine-tune: start from this run's best.pt (RUN:last for last.pt) or model folder; "
        "without --config, with its config.")] = None,
) -> None:
    """Train a model and write its run folder (config, vocab, metrics, checkpoints).

    Under torchrun (or with --nproc) the processes train one model with DistributedDataParallel.
    """
    from charlm import distributed, launch
    from charlm.events import SilentReporter
    from charlm.report import RichReporter
    from charlm.training import train as run_training
    from charlm.training.init_from import WITH_RESUME, init_config, load_parent
    from charlm.training.resume import load_resume_config

    settings = list(overrides or [])
    if corpus is not None:
        settings.append(f"data.corpus={corpus}")
    if device is not None:
        settings.append(f"train.device={device}")
    if resume_from is not None and resume_from not in ("best", "last"):
        raise UsageError(f"--resume-from {resume_from} is not valid: use best or last")
    resume = resume or resume_from is not None
    if resume and init_from is not None:
        raise UsageError(WITH_RESUME)
    if resume:
        if run_dir is None:
            raise UsageError("--resume needs --run-dir DIR: the run folder to continue")
        cfg = load_resume_config(run_dir, config, settings)
    elif init_from is not None:
        cfg = init_config(load_parent(init_from), config, settings)
    else:
        cfg = load_config(config, settings)
    explicit = {item.split("=", 1)[0].strip() for item in settings}
    if nproc is not None or dry_run:
        processes = nproc or launch.default_nproc()
        args = launch.train_args(config, run_dir, resume, settings, resume_from, init_from)
        if dry_run:
            out.print(launch.launch_commands(processes, args, cfg.name, cfg.train.batch_size), markup=False)
            return 0
        launch.check_launch(processes, cfg.train.device, cfg.train.batch_size)
        return launch.launch(processes, args)
    reporter = RichReporter(out, err, quiet) if distributed.is_main_process() else SilentReporter()  # ranks > 0: silent
    run_training(cfg, run_dir, reporter, resume=resume, explicit=explicit, resume_from=resume_from or "last",
                 init_from=init_from)


@app.command(epilog="Example: charlm generate --prefix 分开 --length 100 --temperature 0.8 --seed 1")
def generate(
    prefix: Annotated[Optional[str], typer.Option(
        "--prefix", "-p", help="Text to start from (default: none; the sample starts at a new line).")] = None,
    prefix_file: Annotated[Optional[Path], typer.Option(
        "--prefix-file", help="Start from the text of this UTF-8 file, exactly as written.")] = None,
    run_dir: RunDir = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate.")] = 100,
    temperature: Annotated[float, typer.Option(help="0 is greedy (d2l); higher is more varied.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample among the most likely holding this probability.")] = 1.0,
    num_samples: Annotated[int, typer.Option(
        help="Independent samples, made in one batch (with --beam: the best beams).")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for repeatable samples.")] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        "--stop", help="End a sample when it emits this text (repeatable; \\n is a line break).")] = None,
    beam: Annotated[int, typer.Option(help="Beam search with N beams instead of sampling (ignores --temperature).")]
    = 0,
    repetition_penalty: Annotated[float, typer.Option(
        help="Divide the logits of characters seen in the last --repetition-window by R (1: off; try 1.3).")] = 1.0,
    repetition_window: Annotated[int, typer.Option(help="Characters the repetition penalty looks back on.")] = 64,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per sample: text, prefix, options, bits per char.")] = False,
    checkpoint: Which = "best",
    device: Device = "cpu",
    model_dir: ModelDir = None,
) -> None:
    """Sample text from a trained run (or an exported model), starting from a prefix; it streams as it is made."""
    from charlm import generate as gen
    from charlm.api import load

    if prefix is not None and prefix_file is not None:
        raise UsageError("pass --prefix or --prefix-file, not both")
    if prefix_file is not None:
        prefix = gen.read_prefix_file(prefix_file)
    # beam search ranks by the model's own probabilities: no temperature
    options = gen.SamplingOptions(temperature=0.0 if beam else temperature, top_k=top_k, top_p=top_p,
                                  num_samples=num_samples, seed=seed, beam=beam,
                                  stop=tuple(_unescape(s) for s in stop or ()),
                                  repetition_penalty=repetition_penalty, repetition_window=repetition_window)
    options.check(length)  # before the checkpoint is read: bad flags fail fast
    model = load(_model_source(run_dir, model_dir), checkpoint, device)
    net, vocab, dev = model.net, model.vocab, model.device
    if as_json or beam or num_samples > 1:
        results = gen.samples(net, vocab, prefix, length, device=dev, **vars(options))
        for n, sample in enumerate(results, 1):
            if as_json:
                print(json.dumps(sample.record(n, length, options), ensure_ascii=False))
            elif num_samples > 1:
                sys.stdout.write(f"--- sample {n}{_stopped(sample)}\n{sample.text}\n")
            else:
                sys.stdout.write(f"{sample.text}\n")
                _say_stopped(sample)
        return
    steps = gen.stream(net, vocab, prefix, length, device=dev, **vars(options))  # checks all before printing
    sys.stdout.write(prefix or "")
    for ids in steps:
        sys.stdout.write(vocab.chars[int(ids[0])])
        sys.stdout.flush()
    sys.stdout.write("\n")
    _say_stopped(steps.samples()[0])


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
        err.print(_stopped(sample).strip()[1:-1], markup=False)


@app.command(epilog="Example: charlm perplexity --split val --show")
def perplexity(
    run_dir: RunDir = None,
    split: Annotated[Optional[str], typer.Option(help="train | val | test (default: val)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Score this text file, not a split.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    checkpoint: Which = "best",
    device: Device = "auto",
    text: Annotated[Optional[str], typer.Option(
        "--text", "-t", help="Score this string (read as one stream), not a split.")] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the text shaded by each character's bits.")] = False,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Write a page: the shaded text, bits and top-5 predictions on hover.")] = None,
    breakdown: Annotated[bool, typer.Option(
        "--breakdown", help="The loss by characters unseen / rare / common in training, the costliest ones "
        "(implied by --show and --html; in --json as \"breakdown\").")] = False,
    show_chars: Annotated[int, typer.Option(help="Characters shown by --show and --html (the figures cover all).")]
    = 5000,
    model_dir: ModelDir = None,
) -> None:
    """Score a run (or an exported model) on a split of its corpus, a file or a string: nats/char, bits/char, ppl.

    --show, --html and --breakdown also say where the loss comes from, character by character.
    """
    from charlm.device import pick_device
    from charlm.evaluate import score_run
    from charlm.model_dir import resolve

    folder = resolve(_model_source(run_dir, model_dir))
    if show or html or breakdown:
        return _surprisal(folder, checkpoint, split, file, text, pick_device(device), as_json, show, html, show_chars)
    result, saved = score_run(folder, checkpoint, split, file, pick_device(device), text)
    if as_json:
        print(json.dumps({k: result[k] for k in ("nats_per_char", "bits_per_char", "perplexity", "chars")}))
        return
    epoch = saved.train_state.epoch
    out.print(f"{folder} ({checkpoint}, epoch {epoch}) on {result['source']}: {result['chars']:,} chars")
    out.print(f"nats/char  {result['nats_per_char']:.4f}\nbits/char  {result['bits_per_char']:.4f}\n"
              f"perplexity {result['perplexity']:.4f}")


def _surprisal(folder: Path, checkpoint: str, split, file, text, device, as_json: bool, show: bool,
               html: Optional[Path], show_chars: int) -> None:
    from charlm import pages, surprisal, views

    if show and as_json:
        raise UsageError("--show and --json both print to stdout: pass one of them")
    if show_chars < 1:
        raise UsageError(f"--show-chars must be >= 1, got {show_chars}")
    if html is not None:
        pages.check_target(html)
    report = surprisal.analyse(folder, checkpoint, split, file, text, device, predictions=html is not None)
    parts = report.breakdown()
    if html is not None:
        pages.write(html, surprisal.page(report, parts, show_chars))
    if as_json:
        print(json.dumps({**report.figures(), "breakdown": parts.to_dict()}, ensure_ascii=False))
        return
    views.print_surprisal(out, report, parts, show, show_chars)
    if html is not None:
        out.print(f"wrote {html}", markup=False)


@app.command(epilog="Example: charlm neurons --split val --feature quote --feature '[A-Z]+:' --html neurons.html")
def neurons(
    run_dir: RunDir = None,
    split: Annotated[Optional[str], typer.Option(help="train | val | test (default: val)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read this text file, not a split.")] = None,
    feature: Annotated[Optional[list[str]], typer.Option(
        "--feature", help="quote | bracket | line-position | newline-next | vowel, or a regex (inside a match); "
        "repeat it (default: every built-in).")] = None,
    top: Annotated[int, typer.Option(help="Units to report per feature.")] = 5,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Write a page: the text coloured by each top unit, the feature underlined.")] = None,
    page_chars: Annotated[int, typer.Option(help="Characters of the text on the page.")] = 2000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    checkpoint: Which = "best",
    device: Device = "cpu",
) -> None:
    """Find the hidden units (every layer; h, and c for an LSTM) that track quotes, brackets, line length, ..."""
    from charlm import neurons as neurons_lib
    from charlm import pages, views
    from charlm.device import pick_device
    from charlm.rundir import RunDir

    if top < 1 or page_chars < 1:
        raise UsageError(f"--top and --page-chars must be >= 1, got {top} and {page_chars}")
    if html is not None:
        pages.check_target(html)
    folder = RunDir.resolve(run_dir).path
    report = neurons_lib.analyse(folder, checkpoint, split, file, None, feature, top, page_chars, pick_device(device))
    if html is not None:
        pages.write(html, neurons_lib.page(report))
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    out.print(f"{folder} ({checkpoint}, epoch {report.epoch}, {report.model}) on {report.source}: "
              f"{report.chars:,} chars read in {report.seconds:.1f} s", markup=False)
    out.print(views.neurons_table(report))
    if html is not None:
        out.print(f"wrote {html}", markup=False)


def _model_source(run_dir: Path | None, model_dir: Path | None) -> Path | None:
    """--model MODEL_DIR or --run-dir DIR (default: the latest run)."""
    if model_dir is None:
        return run_dir
    if run_dir is not None:
        raise UsageError("pass either --run-dir or --model, not both")
    from charlm.model_dir import check_model_dir

    check_model_dir(model_dir)
    return model_dir


@app.command(epilog="Example: charlm export --run-dir runs/shakespeare-cpu --out models/shakespeare --html demo.html")
def export(
    run_dir: RunDir = None,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write a portable model folder here (must not exist).")] = None,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Write a one-file browser demo of the model here (no server, no network).")] = None,
    precision: Annotated[str, typer.Option(
        help="--html: weights in the page as float16 (half the size) or float32 (the exact weights).")] = "float16",
    checkpoint: Which = "best",
) -> None:
    """Export a trained run: --out writes a model folder (model.safetensors, config.json, vocab.json, a README.md
    model card) that generate, perplexity and train --init-from take; --html a page that samples in a browser.
    """
    from charlm.demo import export_html
    from charlm.model_dir import export_model
    from charlm.rundir import RunDir

    if out_dir is None and html is None:
        raise UsageError("say what to export: --out MODEL_DIR (a portable model folder) or --html FILE "
                         "(a browser demo)")
    if out_dir is not None:
        folder = export_model(run_dir, out_dir, checkpoint)
        out.print(f"wrote {folder}/ (model.safetensors, config.json, vocab.json, README.md)", markup=False)
    if html is not None:
        page = export_html(RunDir.resolve(run_dir), checkpoint, html, precision)
        out.print(f"wrote {html}: {page.size / 1e6:.2f} MB, {page.weights:,} weights as {precision} "
                  f"({page.weight_bytes / 1e6:.2f} MB before base64)", markup=False)


@app.command(epilog="Example: charlm plot --run-dir runs/a --run-dir runs/b --out compare.png")
def plot(
    run_dirs: Annotated[Optional[list[Path]], typer.Option("--run-dir", "-r", help="Run folder (repeat to overlay).")]
    = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default: RUN/loss.png).")]
    = None,
) -> None:
    """Draw train/val loss against epoch and wall time, the LR and the best epoch, as a PNG."""
    from charlm.plot import plot_runs
    from charlm.rundir import RunDir

    folders = [RunDir.resolve(d).path for d in run_dirs] if run_dirs else [RunDir.resolve(None).path]
    target = out_file or folders[0] / "loss.png"
    plot_runs(folders, target)
    out.print(f"wrote {target}")


@app.command(epilog="Example: charlm runs --root runs")
def runs(root: Annotated[Optional[Path], typer.Option(
        help="Folder holding run folders (default: $CHARLM_RUNS_DIR or runs).")] = None) -> None:
    """List every run: corpus, model, epochs, best val perplexity and bits/char, time, state."""
    from charlm.rundir import runs_root
    from charlm.runs import damage_notes, list_runs, parent_name

    root = root if root is not None else runs_root()
    table = Table(title=f"runs in {root}/")
    found = list_runs(root)
    parents = any(run["parent"] for run in found)  # the column appears when a run was fine-tuned
    for column in ("run", "corpus", "model", "epochs", "best ppl", "best bpc", "time", "state") + (
            ("parent",) if parents else ()):
        table.add_column(column, justify="right" if column in ("epochs", "best ppl", "best bpc", "time") else "left")
    for run in found:
        table.add_row(run["name"], Path(run["corpus"]).name, run["model"], f"{run['epochs_done']:g}/{run['epochs']}",
                      f"{run['best_ppl']:.3f}", f"{run['best_bpc']:.3f}", f"{run['seconds']:.0f} s", run["status"],
                      *((parent_name(run["parent"]),) if parents else ()))
    out.print(table)
    for note in (note for run in found for note in damage_notes(run)):
        err.print(f"warning: {note}", markup=False)


@app.command(epilog="Example: charlm info --run-dir runs/jaychou-lstm-20261123-195026")
def info(run_dir: RunDir = None) -> None:
    """Show a run: its config, vocabulary, parameter count, device, metrics and checkpoint files."""
    from charlm import checkpoint as ckpt
    from charlm.config import dump_config
    from charlm.rundir import RunDir
    from charlm.runs import damage_notes, describe_parent, sparkline, summarize

    run_folder = RunDir.resolve(run_dir)
    folder = run_folder.path
    model, vocab, saved = ckpt.load_run_model(run_folder, "last")
    config = saved.config
    run = summarize(folder)
    sample = "".join(vocab.chars[:: max(1, len(vocab) // 40)][:40]).replace("\n", "↵")
    out.print(f"[bold]{folder}[/] ({run['status']}, trained on {run['device']})")
    for note in damage_notes(run):
        err.print(f"warning: {note}", markup=False)
    if run["parent"]:
        out.print(describe_parent(run["parent"]), markup=False)
    out.print(f"vocabulary: {len(vocab):,} characters, e.g. {sample}", markup=False)
    without = model.num_parameters(embedding=False)
    out.print(f"parameters: {model.num_parameters():,} ({without:,} without the embedding)")
    what = run["monitored"][:-5]
    out.print(f"epochs {run['epochs_done']:g}/{run['epochs']}, best {what} perplexity {run['best_ppl']:.3f} "
              f"({run['best_bpc']:.3f} bits/char) at epoch {run['best_epoch']}, {run['seconds']:.1f} s in all")
    out.print(f"{what} loss by epoch: {sparkline([r[run['monitored']] for r in run['records']])}")
    for path in sorted(folder.iterdir()):
        if path.is_file():
            out.print(f"  {path.name:<24} {path.stat().st_size:>12,} bytes", markup=False)
    out.print("config:", markup=False)
    out.print(dump_config(config), markup=False)


@data_app.command("list", epilog="Example: charlm data list")
def data_list() -> None:
    """Show the built-in corpora, their size and whether they are in the cache folder."""
    from charlm import data as data_mod
    folder = data_mod.data_dir()
    table = Table(title=f"built-in corpora (cache: {folder})")
    for column in ("name", "description", "files", "MB", "cached"):
        table.add_column(column)
    for b in data_mod.BUILTINS.values():
        cached = all(data_mod.is_cached(r, folder) for r in b.files)
        table.add_row(b.name, b.description, ", ".join(r.filename for r in b.files),
                      f"{sum(r.size for r in b.files) / 1e6:.2f}", "yes" if cached else "no")
    out.print(table)


@data_app.command("fetch", epilog="Example: charlm data fetch tinyshakespeare")
def data_fetch(name: Annotated[str, typer.Argument(help="A built-in corpus name (see charlm data list).")]) -> None:
    """Download a built-in corpus into the cache folder and verify its checksum."""
    from charlm import data as data_mod
    from charlm.report import download_bar

    for path in data_mod.fetch(name, progress=lambda f, total: download_bar(out, f, total)):
        out.print(f"{path} ok")


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error becomes one line on stderr and an exit code (2 bad input, 1 failure)."""
    command = typer.main.get_command(app)
    _tidy_help(command)
    try:
        result = command.main(args=argv, prog_name="charlm", standalone_mode=False)
    except click_errors.NoArgsIsHelpError:  # the help is already printed
        return 0
    except click_errors.UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx else ""
        err.print(f"error: {e.format_message()}{hint}", markup=False)
        return 2
    except CharlmError as e:
        if _reported_elsewhere(e):
            return e.exit_code
        err.print(f"{_rank_prefix()}{getattr(e, 'label', 'error')}: {e}", markup=False)
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", markup=False)
        return 130
    except BrokenPipeError:  # `charlm generate ... | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except SystemExit as e:
        # rich meets a closed pipe (`charlm --help | head`) by pointing stdout at /dev/null and raising
        # SystemExit(1); with standalone_mode=False nothing else here exits that way: the reader left
        if e.code == 1 and os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull)):
            return 0
        raise
    except Exception as e:  # a bug or an unforeseen failure: still one line, unless debugging
        if os.environ.get("CHARLM_DEBUG"):
            raise
        err.print(f"{_rank_prefix()}error: unexpected {type(e).__name__}: {e} (set CHARLM_DEBUG=1 for the traceback)",
                  markup=False)
        return 1
    return result if isinstance(result, int) else 0


def _tidy_help(command) -> None:
    """Typer writes `<bool>` after a flag and `<list[str]>` after a repeatable option, as if a flag took a value:
    show nothing after a flag, and the item's type (with ...) after an option that can be repeated."""
    for param in getattr(command, "params", []):
        if param.param_type_name != "option" or param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif getattr(param, "multiple", False):
            param.metavar = param.display_type(None).replace("list[", "").replace("]", "").lower() + "..."
    make_help = command.get_help_option  # --help itself is made on demand

    def help_option(ctx):
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


def _rank_prefix() -> str:
    rank = os.environ.get("RANK")
    return f"[rank {rank}] " if rank and rank != "0" else ""


def _reported_elsewhere(error: CharlmError) -> bool:
    """Under torchrun, bad input and a stop by signal are the same on every rank: rank 0 says it once;
    a rank stopped by another's failure (distributed.PeerFailed) leaves the telling to that one."""
    if getattr(error, "quiet", False):
        return True
    rank = os.environ.get("RANK")
    same_everywhere = isinstance(error, UsageError) or getattr(error, "label", "") == "interrupted"
    if not (rank and rank != "0" and same_everywhere):
        return False
    if isinstance(error, UsageError):  # once this rank exits torchrun stops the others: let rank 0 print first
        time.sleep(RANK_0_GRACE_SECONDS)
    return True


def entry() -> None:
    sys.exit(main())
