"""`charlm train`: parse the flags, pick the config (new, resumed, fine-tuned), train or launch torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.config import load_config
from charlm.errors import UsageError

AUTO = "auto"

# the options of `charlm train` (their help is the CLI's)
ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="YAML config (default: jaychou-lstm), or auto: sized for the corpus and --budget."
    ),
]
Corpus = Annotated[Optional[str], typer.Option(help="Built-in name, text file or folder of .txt files.")]
Budget = Annotated[
    Optional[str],
    typer.Option(
        "--budget",
        "-b",
        help="Training time (90s, 10m, 2h). Without --config: a model sized for the corpus, "
        "this budget and this machine (--config auto).",
    ),
]
NewRunDir = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run folder (default: runs/NAME-TIME).")]
TrainDevice = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda | cuda:N | mps")]
Overrides = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="KEY=VALUE, e.g. train.lr=0.01.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last.pt.")]
ResumeFrom = Annotated[
    Optional[str],
    typer.Option(
        "--resume-from", help="best | last: continue the run in --run-dir from that checkpoint (implies --resume)."
    ),
]
Nproc = Annotated[
    Optional[int],
    typer.Option("--nproc", help="Train with N processes on this machine (torchrun; one per GPU, or CPU processes)."),
]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Check the config and print the torchrun commands (one machine, several); train nothing."
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary line.")]
InitFrom = Annotated[
    Optional[str],
    typer.Option(
        "--init-from",
        help="Fine-tune: start from this run's best.pt (RUN:last for last.pt) or model folder; "
        "without --config, with its config.",
    ),
]

Search = Annotated[
    bool,
    typer.Option(
        "--search",
        help="With --budget (auto-sizing): try candidates near the rule's choice on this corpus (Optuna, "
        "successive halving), then train the best for the rest of the budget. Needs charlm[search].",
    ),
]
StudyStorage = Annotated[
    Optional[str],
    typer.Option(
        "--study-storage",
        help="--search's study in a shared Optuna storage (an RDB URL, or a journal file on a shared disk): "
        "several processes or machines search together.",
    ),
]


@cli.app.command(epilog="Example: charlm train --config configs/d2l-jaychou-rnn.yaml --set train.epochs=10")
def train(
    config: ConfigFile = None,
    corpus: Corpus = None,
    budget: Budget = None,
    run_dir: NewRunDir = None,
    device: TrainDevice = None,
    overrides: Overrides = None,
    resume: Resume = False,
    resume_from: ResumeFrom = None,
    nproc: Nproc = None,
    dry_run: DryRun = False,
    quiet: Quiet = False,
    init_from: InitFrom = None,
    search: Search = False,
    study_storage: StudyStorage = None,
) -> None:
    """Train a model and write its run folder (config, vocab, metrics, checkpoints).

    Under torchrun (or with --nproc) the processes train one model with DistributedDataParallel.
    """
    from charlm.cli import launch
    from charlm.events import SilentReporter
    from charlm.runtime import distributed
    from charlm.training.setup import train as run_training
    from charlm.ui.report import RichReporter

    settings = [*(overrides or []), *[f"data.corpus={corpus}"] * (corpus is not None)]
    settings += [f"train.device={device}"] * (device is not None)
    if resume_from is not None and resume_from not in ("best", "last"):
        raise UsageError(f"--resume-from {resume_from} is not valid: use best or last")
    resume = resume or resume_from is not None
    launched = nproc is not None or dry_run
    given = _flags(config=config, corpus=corpus, budget=budget, device=device, overrides=overrides, nproc=nproc)
    given |= _flags(dry_run=dry_run, init_from=init_from, resume_from=resume_from, search=search)
    if _searched(run_dir, resume, study_storage=study_storage, settings=settings, given=given):
        return _search(None, None, run_dir, quiet, storage=study_storage)
    cfg, plan = _pick_config(
        config,
        settings,
        budget=budget,
        run_dir=run_dir,
        resume=resume,
        init_from=init_from,
        launched=launched,
        quiet=quiet,
    )
    explicit = {item.split("=", 1)[0].strip() for item in settings}
    if cfg.search.enabled:
        return _search(cfg, plan, run_dir, quiet)
    if launched:
        args = launch.train_args(
            config, run_dir, resume=resume, settings=settings, resume_from=resume_from, init_from=init_from
        )
        return _launch(cfg, args, nproc, dry_run)
    main = distributed.is_main_process()  # the other ranks stay silent
    reporter = RichReporter(cli.out, cli.err, quiet) if main else SilentReporter()
    run_training(
        cfg, run_dir, reporter, resume=resume, explicit=explicit, resume_from=resume_from or "last", init_from=init_from
    )


def _launch(cfg, args: list[str], nproc: int | None, dry_run: bool) -> int:
    """--nproc: torchrun's launcher on this machine; --dry-run: the commands it would run, here and on several."""
    from charlm.cli import launch
    from charlm.data.text import check_source

    check_source(cfg.data.corpus)  # checked here: the processes would each fail on it
    processes = nproc or launch.default_nproc()
    if dry_run:
        cli.out.print(launch.launch_commands(processes, args, cfg.name, cfg.train.batch_size), markup=False)
        return 0
    launch.check_launch(processes, cfg.train.device, cfg.train.batch_size)
    return launch.launch(processes, args)


def _pick_config(
    config: Optional[Path],
    settings: list[str],
    *,
    budget: Optional[str],
    run_dir: Optional[Path],
    resume: bool,
    init_from: Optional[str],
    launched: bool,
    quiet: bool,
):
    """Auto-sized (--config auto, or --budget without a config), else the file's, the resumed or the fine-tuned
    run's; a --budget of a config-led run is its train.time_budget."""
    from charlm.config import Config, parse_duration
    from charlm.runtime import distributed

    if budget is not None:
        parse_duration(budget, "--budget")
    if is_auto(config, budget, resume, init_from):
        return _auto_config(budget, settings, launched, quiet)
    if budget is not None:
        settings.append(f"train.time_budget={budget}")
    cfg = _config(config, settings, run_dir=run_dir, resume=resume, init_from=init_from)
    lyrics_default = config is None and not resume and init_from is None
    if lyrics_default and cfg.data.corpus != Config().data.corpus and not quiet and distributed.is_main_process():
        cli.out.print(
            f"tip: `charlm train --corpus {cfg.data.corpus} --budget 10m` sizes the model for this corpus "
            "and this machine; without --budget this is the lyrics default",
            markup=False,
        )
    return cfg, None


def is_auto(config: Optional[Path], budget: Optional[str], resume: bool, init_from: Optional[str]) -> bool:
    """--config auto, or a --budget with no config of its own (a resumed or fine-tuned run has one)."""
    if config is not None and str(config) == AUTO:
        if resume or init_from is not None:
            raise UsageError(
                "--config auto sizes a new model: a resumed or fine-tuned run keeps its own; drop --config auto"
            )
        return True
    return config is None and budget is not None and not resume and init_from is None


def _auto_config(budget: Optional[str], settings: list[str], launched: bool, quiet: bool):
    """The config autosize plans for the corpus and budget on this machine; prints the choice and why."""
    from charlm.autosize import auto
    from charlm.config import Config, parse_duration

    if launched:
        raise UsageError(
            "auto-sizing plans for one process: drop --nproc/--dry-run, or give a --config "
            "(the run folder's config.yaml of an auto run will do)"
        )
    seconds = parse_duration(budget or auto.DEFAULT_BUDGET, "--budget")
    cfg, plan = auto.auto_config(Config().data.corpus, seconds, settings)  # --corpus is in settings
    if not quiet:
        cli.out.print(f"auto: {plan.why}", markup=False)
    return cfg, plan


def _flags(**values) -> dict[str, bool]:
    """Which of these flags were given, by their names on the command line."""
    return {("--set" if k == "overrides" else "--" + k.replace("_", "-")): bool(v) for k, v in values.items()}


def _searched(
    run_dir: Optional[Path], resume: bool, *, study_storage: Optional[str], settings: list[str], given: dict
) -> bool:
    """--resume of a run folder that --search made: the search goes on as search.json has it, so no flag may
    change it (--study-storage only gives a shared storage's password again). A folder holding a search is not
    started again, by a search or a plain run. Otherwise --search and --study-storage go into `settings`."""
    from charlm.autosize.storage import given as check_storage
    from charlm.store.search_log import is_searched

    searched = run_dir is not None and is_searched(run_dir)
    if resume and searched:
        extra = [flag for flag, on in given.items() if on]
        if extra:
            raise UsageError(
                f"--resume continues the search in {run_dir} as search.json has it (its trials compare only under "
                f"the same settings and device): drop {', '.join(extra)}"
            )
        return True
    if study_storage is not None and not given["--search"]:
        raise UsageError("--study-storage shares the study of a search: add --search (and --budget)")
    if searched:
        raise UsageError(
            f"run folder {run_dir} holds a search: continue it with charlm train --resume --run-dir {run_dir}, "
            "or pass a new --run-dir"
        )
    if study_storage is not None:
        check_storage(study_storage)  # before auto-sizing measures anything
    settings += ["search.enabled=true"] * given["--search"]
    settings += [f"search.storage={study_storage}"] * (study_storage is not None)
    return False


def _search(cfg, plan, run_dir: Optional[Path], quiet: bool, storage: Optional[str] = None) -> None:
    """--search: the trials (a line each rung), the winner's run (the trainer's report), the table. `storage`:
    a resumed search's --study-storage."""
    from charlm.autosize import search
    from charlm.cli.table import print_whole
    from charlm.store import search_log
    from charlm.ui.report import RichReporter
    from charlm.ui.search import progress_line, search_table

    def say(line: dict) -> None:
        if not quiet:
            cli.out.print(progress_line(line), markup=False)

    if cfg is not None and plan is None:
        raise UsageError(
            "--search (search.enabled) searches around auto-sizing's choice: give --budget without --config, "
            "or --config auto"
        )
    reporter = RichReporter(cli.out, cli.err, quiet)
    if cfg is None:
        summary = search.resume(run_dir, reporter=reporter, say=say, storage=storage)
    else:
        summary = search.start(cfg, plan, plan.budget_s, run_dir, reporter=reporter, say=say)
    lines = search_log.read_lines(Path(summary.run_dir))
    if lines and not quiet:
        print_whole(search_table(lines))


def _config(
    config: Optional[Path], settings: list[str], *, run_dir: Optional[Path], resume: bool, init_from: Optional[str]
):
    """The run's config: the file (or defaults), a resumed run's own, or a fine-tuned run's parent's; --set on top."""
    from charlm.training.init_from import WITH_RESUME, init_config, load_parent
    from charlm.training.resume import load_resume_config

    if resume and init_from is not None:
        raise UsageError(WITH_RESUME)
    if resume:
        if run_dir is None:
            raise UsageError("--resume needs --run-dir DIR: the run folder to continue")
        return load_resume_config(run_dir, config, settings)
    if init_from is not None:
        return init_config(load_parent(init_from), config, settings)
    return load_config(config, settings)
