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
from charlm.rundir import RUNS_ROOT

try:  # recent Typer carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older Typer uses click itself
    from click import exceptions as click_errors

app = typer.Typer(
    help="Character-level RNN/LSTM/GRU language models: train, generate, perplexity.",
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="rich",
)
data_app = typer.Typer(help="Built-in corpora: list them, download one.", no_args_is_help=True)
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
    nproc: Annotated[Optional[int], typer.Option(
        "--nproc", help="Train with N processes on this machine (torchrun; one per GPU, or CPU processes).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the config and print the torchrun commands (one machine, several); train nothing.")]
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
        args = launch.train_args(config, run_dir, resume, settings, init_from)
        if dry_run:
            out.print(launch.launch_commands(processes, args, cfg.name, cfg.train.batch_size), markup=False)
            return 0
        launch.check_launch(processes, cfg.train.device, cfg.train.batch_size)
        return launch.launch(processes, args)
    reporter = RichReporter(out) if distributed.is_main_process() else SilentReporter()  # other ranks stay quiet
    run_training(cfg, run_dir, reporter, resume=resume, explicit=explicit, init_from=init_from)


@app.command(epilog="Example: charlm generate --prefix 分开 --length 100 --temperature 0.8 --seed 1")
def generate(
    prefix: Annotated[str, typer.Option("--prefix", "-p", help="Text to start from.")],
    run_dir: RunDir = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate.")] = 100,
    temperature: Annotated[float, typer.Option(help="0 is greedy (d2l); higher is more varied.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Sample among the most likely holding this probability.")] = 1.0,
    num_samples: Annotated[int, typer.Option(help="Independent samples, made in one batch.")] = 1,
    seed: Annotated[Optional[int], typer.Option(help="Random seed for repeatable samples.")] = None,
    checkpoint: Which = "best",
    device: Device = "cpu",
    model_dir: ModelDir = None,
) -> None:
    """Sample text from a trained run (or an exported model), starting from a prefix; it streams as it is made."""
    from charlm.api import load

    model = load(_model_source(run_dir, model_dir), checkpoint, device)
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    if num_samples != 1:  # (0 and below are refused by the sampler)
        for n, sample in enumerate(model.samples(prefix, length, num_samples, **options), 1):
            sys.stdout.write(f"--- sample {n}\n{sample}\n")
        return
    chars = model.stream(prefix, length, **options)  # checks everything before printing
    sys.stdout.write(prefix)
    for char in chars:
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command(epilog="Example: charlm perplexity --split val --json")
def perplexity(
    run_dir: RunDir = None,
    split: Annotated[Optional[str], typer.Option(help="train | val | test (default: val)")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Score this text file, not a split.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    checkpoint: Which = "best",
    device: Device = "auto",
    model_dir: ModelDir = None,
) -> None:
    """Score a run (or an exported model) on a split of its corpus or a text file: nats/char, bits/char, perplexity."""
    from charlm.device import pick_device
    from charlm.evaluate import score_run
    from charlm.model_dir import resolve

    folder = resolve(_model_source(run_dir, model_dir))
    result, saved = score_run(folder, checkpoint, split, file, pick_device(device))
    if as_json:
        print(json.dumps({k: result[k] for k in ("nats_per_char", "bits_per_char", "perplexity", "chars")}))
        return
    epoch = saved.train_state.epoch
    out.print(f"{folder} ({checkpoint}, epoch {epoch}) on {result['source']}: {result['chars']:,} chars")
    out.print(f"nats/char  {result['nats_per_char']:.4f}\nbits/char  {result['bits_per_char']:.4f}\n"
              f"perplexity {result['perplexity']:.4f}")


def _model_source(run_dir: Path | None, model_dir: Path | None) -> Path | None:
    """--model MODEL_DIR or --run-dir DIR (default: the latest run)."""
    if model_dir is None:
        return run_dir
    if run_dir is not None:
        raise UsageError("pass either --run-dir or --model, not both")
    from charlm.model_dir import check_model_dir

    check_model_dir(model_dir)
    return model_dir


@app.command(epilog="Example: charlm export --run-dir runs/shakespeare-cpu --out models/shakespeare")
def export(
    run_dir: RunDir = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="The model folder to write (must not exist).")]
    = None,
    checkpoint: Which = "best",
) -> None:
    """Write a portable model folder: model.safetensors, config.json, vocab.json and a README.md model card.

    generate, perplexity and train --init-from take it with --model / --init-from, with no run folder.
    """
    from charlm.model_dir import export_model

    if out_dir is None:
        raise UsageError("export needs --out MODEL_DIR: the model folder to write")
    folder = export_model(run_dir, out_dir, checkpoint)
    out.print(f"wrote {folder}/ (model.safetensors, config.json, vocab.json, README.md)", markup=False)


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
def runs(root: Annotated[Path, typer.Option(help="Folder holding run folders.")] = RUNS_ROOT) -> None:
    """List every run: corpus, model, epochs, best val perplexity and bits/char, time, state."""
    from charlm.runs import list_runs, parent_name

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


@app.command(epilog="Example: charlm info --run-dir runs/jaychou-lstm-20261123-195026")
def info(run_dir: RunDir = None) -> None:
    """Show a run: its config, vocabulary, parameter count, device, metrics and checkpoint files."""
    from charlm import checkpoint as ckpt
    from charlm.config import dump_config
    from charlm.rundir import RunDir
    from charlm.runs import describe_parent, sparkline, summarize

    run_folder = RunDir.resolve(run_dir)
    folder = run_folder.path
    model, vocab, saved = ckpt.load_model(run_folder.checkpoint("last"))
    config = saved.config
    run = summarize(folder)
    sample = "".join(vocab.chars[:: max(1, len(vocab) // 40)][:40]).replace("\n", "↵")
    out.print(f"[bold]{folder}[/] ({run['status']}, trained on {run['device']})")
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
    except Exception as e:  # a bug or an unforeseen failure: still one line, unless debugging
        if os.environ.get("CHARLM_DEBUG"):
            raise
        err.print(f"{_rank_prefix()}error: unexpected {type(e).__name__}: {e} (set CHARLM_DEBUG=1 for the traceback)",
                  markup=False)
        return 1
    return result if isinstance(result, int) else 0


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
