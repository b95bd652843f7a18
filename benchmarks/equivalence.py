"""Equivalence check: the working tree must train bit-identically to a previous release.

    .venv/bin/python benchmarks/equivalence.py                      # all scenarios against 2ac1925
    .venv/bin/python benchmarks/equivalence.py --ref v1.2 --only resume --keep /tmp/eq
    .venv/bin/python benchmarks/equivalence.py --ref HEAD --new-tree /tmp/head-tree   # prove the checker

REF's tree is exported with `git archive` into a temporary folder (the working tree is never touched).
Each scenario runs `python -m charlm train` twice, in subprocesses with the same interpreter and
environment: once with PYTHONPATH=<REF's tree> ("old") and once with PYTHONPATH=<repo root> ("new"),
each into its own run folder; the config files are REF's, for both sides. Before anything trains, the
script checks that each side really imports charlm from its own tree (the package is installed editable
for the working tree) and stops if not.

Then every line of the two metrics.jsonl files is compared, events included ({"event": "final"}), except
{"event": "resume"} lines: the line counts must match, and every field except the wall-clock ones
(seconds, chars_per_s, train_seconds) must be exactly equal: ==, not approximately. Losses, perplexities,
bits/char, gradient norms and learning rates all count.

Scenarios (small: a few seconds to ~40 s each on a 2-core CPU):
  d2l-rnn      configs/d2l-jaychou-rnn.yaml, 3 epochs, one-hot rnn_tanh, greedy previews every epoch
  lstm         configs/jaychou-lstm.yaml, 2 epochs (cosine schedule, dropout, tied weights)
  awd-lstm     2-layer LSTM: locked dropout, weight drop, variable BPTT, subsampled in-epoch evals, test split
  gru-random   configs/tiny.yaml (GRU) with random sampling and a step schedule, previews every epoch
  resume       the old code trains jaychou-lstm for 1 epoch, the new code resumes it to 2 epochs; the result
               must equal the old code's uninterrupted 2-epoch run. The schedule is constant here: a cosine
               schedule's horizon is train.epochs, so 1 epoch + 1 more is not 2 epochs under any code.
               `charlm perplexity --json` and `charlm generate --temperature 0` on the old 1-epoch run
               folder must print the same under old and new code.

Options: --only NAME (repeatable), --set KEY=VALUE (added to every scenario), --keep DIR (keep the run
folders and logs there), --new-tree DIR (the "new" side imports charlm from DIR instead of the repo root).
Prints one table (FAILED: a run exited with an error); exits 1 if anything differs or a run fails,
0 if everything is identical, 2 on a setup error.

Bit-identity holds on one machine only: the same CPU (or GPU), thread count (OMP_NUM_THREADS is passed
through unchanged) and torch build. Never compare metrics recorded on different machines this way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REF = "2ac1925"
WALL_CLOCK_KEYS = frozenset({"seconds", "chars_per_s", "train_seconds"})
IGNORED_EVENTS = frozenset({"resume"})
NO_PREVIEW = "sample.preview_every=0"
# both sides in fp32, in the old key that REF reads and this charlm maps to train.precision=fp32 (a config from
# REF's tree has no train.precision, and this charlm's default, auto, picks by the CPU)
FP32 = "train.bf16=false"
LSTM = "configs/jaychou-lstm.yaml"
RESUME_EPOCHS = (1, 2)  # the old code trains the first, the new code resumes up to the second
GENERATE_ARGS = ("--prefix", "分开", "--length", "50", "--temperature", "0")
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True)
class Scenario:
    name: str
    config: str  # relative to REF's tree
    settings: tuple[str, ...]


SCENARIOS = (
    Scenario("d2l-rnn", "configs/d2l-jaychou-rnn.yaml", ("train.epochs=3", "sample.preview_every=1")),
    Scenario("lstm", LSTM, ("train.epochs=2", NO_PREVIEW)),
    Scenario(
        "awd-lstm",
        LSTM,
        (
            "model.num_layers=2",
            "model.locked_dropout=true",
            "model.weight_drop=0.2",
            "train.variable_bptt=true",
            "train.eval_every_batches=20",
            "train.eval_chars=2000",
            "train.epochs=2",
            "data.test_fraction=0.05",
            NO_PREVIEW,
        ),
    ),
    Scenario(
        "gru-random",
        "configs/tiny.yaml",
        (
            "data.max_chars=20000",
            "train.sampling=random",
            "train.schedule=step",
            "train.decay_every=1",
            "train.epochs=3",
            "sample.preview_every=1",
        ),
    ),
    Scenario("resume", LSTM, ("train.schedule=constant", NO_PREVIEW)),
)


@dataclass
class Row:
    """One line of the result table."""

    name: str
    lines: int = 0
    values: int = 0
    max_diff: float | None = 0.0  # None: a text comparison
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: bool = False  # a run failed: nothing (more) to compare

    @property
    def identical(self) -> bool:
        return not self.problems


class RunFailed(Exception):
    """A charlm subprocess exited with an error: the scenario cannot be compared."""


class SetupError(Exception):
    """The comparison cannot start (bad ref, a side importing the wrong charlm)."""


@dataclass
class Side:
    """One version of charlm: the tree it imports from and the environment that makes it do so."""

    label: str  # old | new
    tree: Path
    env: dict[str, str]


@dataclass
class Context:
    old: Side
    new: Side
    old_tree: Path  # where the configs come from
    work: Path  # run folders, logs; the subprocesses' cwd
    settings: tuple[str, ...]  # --set, for every scenario
    kept: bool  # --keep: logs survive, so errors can point at them


# ---------------------------------------------------------------- setup


def export_tree(ref: str, dest: Path) -> str:
    """Write REF's tree into dest with git archive; return the full commit hash."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise SetupError(f"--ref {ref!r} is not a commit of {REPO}")
    commit = found.stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
    unpacked = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout)
    archive.stdout.close()
    if archive.wait() != 0 or unpacked.returncode != 0:
        raise SetupError(f"could not export {commit} into {dest}")
    return commit


def base_env() -> dict[str, str]:
    """This process's environment (OMP_NUM_THREADS included, unchanged) plus the corpus folder."""
    env = dict(os.environ)
    shared = REPO.parent / "shared" / "data"
    if "CHARLM_DATA_DIR" not in env and shared.is_dir():
        env["CHARLM_DATA_DIR"] = str(shared)
    env.pop("CHARLM_DEBUG", None)
    return env


def make_side(label: str, tree: Path, env: dict[str, str], cwd: Path) -> Side:
    """A side whose PYTHONPATH starts with its tree; fail unless `import charlm` really finds that tree."""
    tree = tree.resolve()
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH", "")) if p)
    probe = subprocess.run(
        [sys.executable, "-c", "import charlm, sys; print(charlm.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise SetupError(f"the {label} side cannot import charlm from {tree}:\n{probe.stderr.strip()}")
    imported = Path(probe.stdout.strip()).resolve()
    if not imported.is_relative_to(tree / "charlm"):
        raise SetupError(
            f"the {label} side imported {imported}, not the charlm of {tree}: "
            "PYTHONPATH did not take precedence over the installed package"
        )
    console.print(f"{label}: charlm from {imported.parent}", markup=False)
    return Side(label, tree, env)


# ---------------------------------------------------------------- running charlm


def charlm(side: Side, ctx: Context, args: list[str], log: Path) -> str:
    """Run `python -m charlm ARGS` on one side; return its stdout (stdout and stderr also go to log)."""
    done = subprocess.run(
        [sys.executable, "-m", "charlm", *args], env=side.env, cwd=ctx.work, capture_output=True, text=True
    )
    with log.open("a", encoding="utf-8") as f:
        f.write(f"$ [{side.label}] charlm {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        where = f"log: {log}" if ctx.kept else "rerun with --keep DIR to keep the log"
        raise RunFailed(f"{side.label} `charlm {args[0]}` exited {done.returncode}: {' | '.join(tail)} ({where})")
    return done.stdout


def train(side: Side, ctx: Context, config: str, settings: list[str], run_dir: Path, log: Path) -> float:
    """Train one run; return its wall time in seconds."""
    args = ["train", "--config", str(ctx.old_tree / config), "--run-dir", str(run_dir)]
    for item in settings:
        args += ["--set", item]
    started = time.perf_counter()
    charlm(side, ctx, args, log)
    return time.perf_counter() - started


def resume(side: Side, ctx: Context, run_dir: Path, epochs: int, log: Path) -> float:
    args = ["train", "--resume", "--run-dir", str(run_dir), "--set", f"train.epochs={epochs}"]
    started = time.perf_counter()
    charlm(side, ctx, args, log)
    return time.perf_counter() - started


# ---------------------------------------------------------------- comparing


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r.get("event") not in IGNORED_EVENTS]


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compare_values(where: str, old, new, row: Row) -> None:
    """Exact equality; numbers also feed the row's max |difference| (NaN equals NaN, bit for bit)."""
    row.values += 1
    if is_number(old) and is_number(new):
        both_nan = isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)
        if old == new or both_nan:
            return
        diff = abs(old - new)
        row.max_diff = diff if math.isnan(diff) or row.max_diff is None else max(row.max_diff, diff)
        row.problems.append(f"{where}: old {old!r} != new {new!r}")
    elif old != new:
        row.problems.append(f"{where}: old {old!r} != new {new!r}")


def compare_metrics(old_run: Path, new_run: Path, row: Row) -> None:
    """Every metrics.jsonl line and every field but the wall-clock ones, exactly."""
    old, new = read_metrics(old_run), read_metrics(new_run)
    if len(old) != len(new):
        row.problems.append(f"metrics.jsonl: {len(old)} lines (old) vs {len(new)} (new)")
    for number, (a, b) in enumerate(zip(old, new, strict=False), 1):
        row.lines += 1
        tag = f"line {number}" + (f" ({a['event']})" if "event" in a else f" (epoch {a.get('epoch')})")
        for key in sorted((a.keys() | b.keys()) - WALL_CLOCK_KEYS):
            if key not in a or key not in b:
                row.problems.append(f"{tag}: {key} only in the {'old' if key in a else 'new'} line")
                continue
            compare_values(f"{tag} {key}", a[key], b[key], row)


def compare_text(name: str, old: str, new: str, row: Row) -> None:
    """Command output: the same text; with --json output, also field by field (for the max |difference|)."""
    row.lines = len(old.splitlines())
    try:
        old_json, new_json = json.loads(old), json.loads(new)
    except ValueError:
        old_json = new_json = None
    if isinstance(old_json, dict) and isinstance(new_json, dict):
        for key in sorted(old_json.keys() | new_json.keys()):
            compare_values(f"{name} {key}", old_json.get(key), new_json.get(key), row)
    else:
        row.max_diff = None
        row.values += 1
    if old != new and not row.problems:
        row.problems.append(f"{name}: old printed {old.strip()!r}, new printed {new.strip()!r}")


# ---------------------------------------------------------------- scenarios


def run_plain(scenario: Scenario, ctx: Context) -> list[Row]:
    """Old and new code train the same config from scratch; their metrics must match."""
    folder = ctx.work / scenario.name
    folder.mkdir()
    log = folder / "charlm.log"
    settings = [*scenario.settings, FP32, *ctx.settings]
    row = Row(scenario.name)
    for side in (ctx.old, ctx.new):
        seconds = train(side, ctx, scenario.config, settings, folder / side.label, log)
        console.print(f"  {scenario.name}: {side.label} trained in {seconds:.1f} s", markup=False)
        row.seconds += seconds
    compare_metrics(folder / "old", folder / "new", row)
    return [row]


def run_resume(scenario: Scenario, ctx: Context) -> list[Row]:
    """Old code trains part of a run, new code finishes it; it must equal the old uninterrupted run."""
    folder = ctx.work / scenario.name
    folder.mkdir()
    log = folder / "charlm.log"
    part, total = RESUME_EPOCHS
    settings = [*scenario.settings, FP32, *ctx.settings]
    interrupted, uninterrupted = folder / "old-then-new", folder / "old-uninterrupted"
    started = time.perf_counter()
    for run_dir, epochs in ((interrupted, part), (uninterrupted, total)):
        seconds = train(ctx.old, ctx, scenario.config, [*settings, f"train.epochs={epochs}"], run_dir, log)
        console.print(f"  {scenario.name}: old trained {epochs} epoch(s) in {seconds:.1f} s", markup=False)
    rows = [
        run_command_check(
            f"{scenario.name}: perplexity", ["perplexity", "--run-dir", str(interrupted), "--json"], ctx, log
        ),
        run_command_check(
            f"{scenario.name}: generate", ["generate", "--run-dir", str(interrupted), *GENERATE_ARGS], ctx, log
        ),
    ]
    seconds = resume(ctx.new, ctx, interrupted, total, log)
    console.print(f"  {scenario.name}: new resumed epoch {part} -> {total} in {seconds:.1f} s", markup=False)
    row = Row(scenario.name, seconds=time.perf_counter() - started - sum(r.seconds for r in rows))
    compare_metrics(uninterrupted, interrupted, row)
    return [row, *rows]


def run_command_check(name: str, args: list[str], ctx: Context, log: Path) -> Row:
    """The same charlm command on the same (old) run folder, under old and new code: the same stdout."""
    row = Row(name)
    started = time.perf_counter()
    old, new = (charlm(side, ctx, args, log) for side in (ctx.old, ctx.new))
    row.seconds = time.perf_counter() - started
    compare_text(name, old, new, row)
    return row


def run_scenario(scenario: Scenario, ctx: Context) -> list[Row]:
    console.print(f"{scenario.name}: {scenario.config} {' '.join(scenario.settings + ctx.settings)}", markup=False)
    started = time.perf_counter()
    try:
        return run_resume(scenario, ctx) if scenario.name == "resume" else run_plain(scenario, ctx)
    except RunFailed as e:
        return [
            Row(
                scenario.name,
                max_diff=None,
                problems=[f"run failed: {e}"],
                seconds=time.perf_counter() - started,
                failed=True,
            )
        ]


# ---------------------------------------------------------------- report and main


def show(rows: list[Row]) -> None:
    table = Table(title="charlm: old (--ref) vs new, metrics.jsonl and command output")
    for column in ("scenario", "lines compared", "values compared", "max |difference|", "seconds", "result"):
        table.add_column(column, justify="left" if column in ("scenario", "result") else "right")
    for row in rows:
        diff = "-" if row.max_diff is None else f"{row.max_diff:.3g}"
        result = "[green]IDENTICAL[/]" if row.identical else "[red]FAILED[/]" if row.failed else "[red]DIFFERENT[/]"
        table.add_row(row.name, str(row.lines), str(row.values), diff, f"{row.seconds:.1f}", result)
    console.print(table)
    for row in rows:
        for problem in row.problems[:10]:
            console.print(f"{row.name}: {problem}", markup=False)
        if len(row.problems) > 10:
            console.print(f"{row.name}: ... and {len(row.problems) - 10} more differences", markup=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ref", default=DEFAULT_REF, help=f"the release to compare with (default {DEFAULT_REF})")
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this scenario (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override added to every scenario (repeatable)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the run folders and logs in DIR (new or empty)")
    parser.add_argument(
        "--new-tree", type=Path, metavar="DIR", help="import the new side's charlm from DIR instead of the repo root"
    )
    return parser.parse_args(argv)


def work_folder(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="charlm-equivalence-"))
    if keep.exists() and any(keep.iterdir()):
        raise SetupError(f"--keep {keep} is not empty: choose a new or empty folder")
    keep.mkdir(parents=True, exist_ok=True)
    return keep.resolve()


def compare(args: argparse.Namespace, work: Path) -> list[Row]:
    old_tree = work / "ref-tree"
    commit = export_tree(args.ref, old_tree)
    console.print(f"ref {args.ref} = {commit[:12]}, exported to {old_tree}", markup=False)
    env = base_env()
    console.print(
        f"python {sys.executable}, OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}, "
        f"CHARLM_DATA_DIR={env.get('CHARLM_DATA_DIR', 'unset')}",
        markup=False,
    )
    new_tree = args.new_tree if args.new_tree is not None else REPO
    if not (new_tree / "charlm").is_dir():
        raise SetupError(f"--new-tree {new_tree} has no charlm package")
    ctx = Context(
        old=make_side("old", old_tree, env, work),
        new=make_side("new", new_tree, env, work),
        old_tree=old_tree,
        work=work,
        settings=tuple(args.settings),
        kept=args.keep is not None,
    )
    rows = []
    for scenario in SCENARIOS:
        if args.only is None or scenario.name in args.only:
            rows += run_scenario(scenario, ctx)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        work = work_folder(args.keep)
    except SetupError as e:
        console.print(f"error: {e}", markup=False)
        return 2
    try:
        rows = compare(args, work)
    except SetupError as e:
        console.print(f"error: {e}", markup=False)
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            console.print(f"run folders kept in {work}", markup=False)
    show(rows)
    return 0 if all(row.identical for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
