"""The steps of benchmarks/gpu_check.py: where the corpora are, each step's command lines, running one step
under its limit, and reading back its figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = "tinyshakespeare.txt"
PTB_FILES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
KILL_GRACE = 10  # after SIGTERM (charlm saves and stops at the next batch), before SIGKILL
SUMMARY_SECONDS = 15  # kept for each command after the first (a summary of what the first left)


@dataclass(frozen=True)
class Run:
    """A training step: its config (None: auto-sized for tinyshakespeare), budget, and time_to_loss's points."""

    config: str | None
    budget: float
    marks: tuple[float, ...]
    targets: tuple[float, ...]  # nats/char


@dataclass(frozen=True)
class Mode:
    """Sizes and limits of the real check (on a GPU) or the smoke check (on the CPU)."""

    smoke: bool
    limits: dict
    runs: dict  # step name -> Run
    sets: tuple[str, ...]  # --set items for every training run (the smoke's tiny sizes)
    ptb_overhead: float  # start, corpus, evals, checkpoints, the final test score: outside the PTB budget


class MissingData(Exception):
    """The corpora are not where the check looks."""


def find_data(repo: Path = REPO) -> Path:
    """The folder that holds tiny shakespeare (and, if there, ptb-char); MissingData saying where to put it."""
    chosen = os.environ.get("CHARLM_DATA_DIR")
    candidates = (
        [Path(chosen)] if chosen else [repo / "data", repo / "shared" / "data", repo.parent / "shared" / "data"]
    )
    for folder in candidates:
        if (folder / SHAKESPEARE).is_file():
            return folder.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise MissingData(
        f"{SHAKESPEARE} (and for the ptb step {', '.join(PTB_FILES)}) not found in {where}: copy "
        "them into the repo's data/ folder (git ignores it; on the device machine name it in carry) "
        "or set CHARLM_DATA_DIR to a folder that holds them"
    )


def ptb_missing(folder: Path) -> str | None:
    """Why the ptb step cannot run (its corpus is not beside tiny shakespeare), or None."""
    absent = [name for name in PTB_FILES if not (folder / name).is_file()]
    if absent:
        return f"ptb-char not found: {', '.join(absent)} not in {folder} (copy them there to run this step)"
    return None


@dataclass
class StepRun:
    """One step's outcome: how it ended, how long it took, its commands' exit codes."""

    status: str = "ok"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    limit: float = 0.0
    exit_codes: list = field(default_factory=list)
    note: str | None = None


def run_command(argv: list[str], seconds: float, env: dict, log) -> int | None:
    """Run argv with its output going to `log`; None when it ran out of time (then it is stopped: SIGTERM to
    its process group, SIGKILL after KILL_GRACE seconds)."""
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return process.wait(timeout=max(seconds, 1))
    except subprocess.TimeoutExpired:
        stop(process, hard=False)
        try:
            process.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            stop(process, hard=True)
            process.wait()
        return None


def stop(process: subprocess.Popen, hard: bool) -> None:
    """SIGTERM (or SIGKILL) to the process group; Windows has neither, so there the process alone is ended."""
    if hasattr(os, "killpg"):
        os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
    else:
        process.kill() if hard else process.terminate()


def run_step(name: str, commands: list[list[str]], limit: float, env: dict, work: Path) -> StepRun:
    """The step's commands in turn within `limit` seconds, output to WORK/NAME.log; the later ones (summaries)
    run even after a failure."""
    run, started = StepRun(limit=limit), time.perf_counter()
    with open(work / f"{name}.log", "w", encoding="utf-8") as log:
        for i, argv in enumerate(commands):
            # the summaries after a command (time_to_loss.py: a second) keep their time if it runs out of its own
            left = limit - (time.perf_counter() - started) - SUMMARY_SECONDS * (len(commands) - 1 - i)
            log.write(f"$ {' '.join(argv)}   [{name}: {left:.0f} s left]\n")
            log.flush()
            code = run_command(argv, left, env, log) if left > 1 else None
            run.exit_codes.append(code)
            if code is None:
                run.status = "timeout"
            elif code != 0 and run.status == "ok":
                run.status = "failed"
    run.seconds = time.perf_counter() - started
    return run


def ptb_budget(mode: Mode, limit: float) -> float:
    return min(mode.runs["ptb"].budget, limit - mode.ptb_overhead)


def commands(name: str, mode: Mode, work: Path, python: str, limit: float) -> list[list[str]]:
    """The step's command lines."""
    smoke = ["--smoke"] if mode.smoke else []
    if name == "correct":
        return [
            [
                python,
                "-m",
                "pytest",
                "-q",
                "-m",
                "gpu",
                "tests",
                "-p",
                "no:cacheprovider",
                "-o",
                "junit_family=xunit1",
                f"--junitxml={work / 'correct.xml'}",
            ]
        ]  # xunit1 keeps record_property
    if name in ("sweep", "fp16"):
        script = {"sweep": "gpu_sweep.py", "fp16": "fp16_check.py"}[name]
        return [[python, f"benchmarks/{script}", *smoke, "--json", str(work / f"{name}.json")]]
    if name == "fast":
        return [[python, "benchmarks/bench.py", "--device", "cuda", *smoke, "--json", str(work / "fast.json")]]
    if name == "gpt":  # the race of the first round, against s3m's budget and points
        race = mode.runs["s3m"]
        tiny = ["--device", "cpu", "--set", "data.max_chars=60000", "--set", "train.eval_batch_size=8"]
        return [
            [
                python,
                "benchmarks/gpt_baseline.py",
                *smoke,
                *(tiny if mode.smoke else ["--device", "cuda"]),
                "--budget",
                f"{race.budget:g}",
                "--eval-every",
                "1" if mode.smoke else "15",
                *points_args(race),
                "--json",
                str(work / "gpt.json"),
            ]
        ]
    if name == "calibrate":  # the speeds auto3m's plan needs, measured while the card is not shared
        sets = auto_sets(mode)
        code = (
            f"from charlm.autosize.auto import auto_config; print(auto_config('tinyshakespeare', "
            f"{mode.runs['auto3m'].budget}, {sets!r})[1].why)"
        )
        return [[python, "-c", code]]
    run = mode.runs[name]
    budget = ptb_budget(mode, limit) if name == "ptb" else run.budget
    folder = work / name
    if run.config is None:
        train = [
            python,
            "-m",
            "charlm",
            "train",
            "--corpus",
            "tinyshakespeare",
            "--budget",
            f"{budget:g}s",
            "--run-dir",
            str(folder),
            *sets_args(auto_sets(mode)),
        ]
    else:
        train = [
            python,
            "-m",
            "charlm",
            "train",
            "--config",
            f"configs/{run.config}.yaml",
            "--run-dir",
            str(folder),
            *sets_args([*mode.sets, f"train.time_budget={budget:g}s"]),
        ]
    return [
        train,
        [python, "benchmarks/time_to_loss.py", str(folder), *points_args(run), "--json", str(work / f"{name}.json")],
    ]


def points_args(run: Run) -> list[str]:
    return ["--marks", *map(str, run.marks), "--targets", *map(str, run.targets)]


def auto_sets(mode: Mode) -> list[str]:
    """--budget plans the model itself: in the smoke only the device and the corpus's length are given."""
    return [s for s in mode.sets if s.startswith(("train.device=", "data.max_chars="))]


def sets_args(sets: list[str]) -> list[str]:
    return [part for item in sets for part in ("--set", item)]


def junit_cases(path: Path) -> dict:
    """pytest's junit XML: each test's outcome, message and recorded properties."""
    if not path.is_file():
        return {}
    cases = {}
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome, message = ("skipped" if kind == "skipped" else "failed"), found.get("message")
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases[case.get("name")] = {
            "outcome": outcome,
            "message": (message or "")[:300] or None,
            "properties": properties,
        }
    return cases


def collect(name: str, work: Path) -> dict:
    """The figures a step wrote (its JSON, or pytest's junit XML)."""
    if name == "correct":
        cases = junit_cases(work / "correct.xml")
        counts = {k: sum(c["outcome"] == k for c in cases.values()) for k in ("passed", "failed", "skipped")}
        return {**counts, "cases": cases}
    try:
        return json.loads((work / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
