"""Every GPU measurement of charlm in one command, each step under its own time limit (run by gpu_check.sh).

    bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--only STEP,...] [--work DIR]

Steps, in order, with their limits on an H100/H200 (the whole run ends within 9 minutes):
  correct  pytest -m gpu: cuda training read on the CPU, bit-identical resume, bf16/fp16 vs fp32  75 s
  fast     bench.py --device cuda: fp32/TF32/bf16 chars/s and MFU, eval, CUDA-graph generation   75 s
  gpt      gpt_baseline.py: nanoGPT's shakespeare_char GPT, 150 s of training                     175 s
  lstm     charlm train --config configs/shakespeare-gpu.yaml (150 s), then time_to_loss.py       190 s
  ptb      charlm train --config configs/ptb-char-gpu.yaml with what time is left (up to 60 s)
A step that fails or runs out of time is recorded as such and the next one runs. Each step's output goes
to OUT_DIR/STEP.log (and to this output); OUT_DIR/figures.json holds every figure (rewritten after each
step) and OUT_DIR/table.txt the table printed at the end. Run folders and checkpoints stay in a work folder
outside OUT_DIR (deleted at the end unless --work is given). The corpora come from $CHARLM_DATA_DIR, else
the first of data/, shared/data and ../shared/data that holds tiny shakespeare and ptb-char.
--smoke runs every step on the CPU with tiny models and budgets of seconds: the same code paths.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import gpu_table  # beside this file

REPO = Path(__file__).resolve().parents[1]
CORPUS_FILES = ("tinyshakespeare.txt", "ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
TOTAL_SECONDS = 530  # the steps' deadline: 9 minutes less the table and a margin
KILL_GRACE = 10  # after SIGTERM (charlm saves and stops at the next batch), before SIGKILL
BF16_TEST = "test_bf16_autocast_reaches_fp32_loss"


@dataclass(frozen=True)
class Mode:
    """Sizes and limits of the real check (on a GPU) or the smoke check (on the CPU)."""

    smoke: bool
    limits: dict
    budget: float  # training seconds of each side of the race
    eval_every: float
    marks: tuple[float, ...]
    targets: tuple[float, ...]
    gpt_args: tuple[str, ...]
    lstm_sets: tuple[str, ...]
    ptb_sets: tuple[str, ...]
    ptb_budget: float  # at most
    ptb_overhead: float  # start, corpus, evals, checkpoints, the final test score: outside the budget


GPU = Mode(smoke=False, limits={"correct": 75, "fast": 75, "gpt": 175, "lstm": 190, "ptb": 110},
           budget=150, eval_every=15, marks=(30, 60, 150), targets=(1.55, 1.47), gpt_args=("--device", "cuda"),
           lstm_sets=(), ptb_sets=(), ptb_budget=60, ptb_overhead=45)
TINY = ("train.device=cpu", "model.hidden_size=32", "model.embed_size=16", "train.batch_size=8",
        "train.num_steps=32", "train.eval_batch_size=8")
SMOKE = Mode(smoke=True, limits={"correct": 180, "fast": 240, "gpt": 90, "lstm": 90, "ptb": 90},
             budget=4, eval_every=1, marks=(0.8, 1.6, 4), targets=(3.0, 2.5),
             gpt_args=("--smoke", "--device", "cpu", "--set", "data.max_chars=60000", "--set",
                       "train.eval_batch_size=8"),
             lstm_sets=(*TINY, "data.max_chars=60000", "train.precision=fp32"),
             ptb_sets=(*TINY, "data.max_chars=20000", "sample.length=20"), ptb_budget=3, ptb_overhead=30)
STEPS = ("correct", "fast", "gpt", "lstm", "ptb")


class MissingData(Exception):
    """The corpora are not where the check looks."""


def find_data() -> Path:
    """The folder that holds the corpora; MissingData saying where to put them."""
    chosen = os.environ.get("CHARLM_DATA_DIR")
    candidates = ([Path(chosen)] if chosen
                  else [REPO / "data", REPO / "shared" / "data", REPO.parent / "shared" / "data"])
    for folder in candidates:
        if all((folder / name).is_file() for name in CORPUS_FILES):
            return folder.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise MissingData(f"tiny shakespeare and ptb-char ({', '.join(CORPUS_FILES)}) not found in {where}: "
                     "copy them into the repo's data/ folder (git ignores it; on the device machine name it in "
                     "carry) or set CHARLM_DATA_DIR to a folder that holds them")


@dataclass
class StepRun:
    """One step's outcome: how it ended, how long it took, its commands' exit codes."""

    status: str = "ok"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    limit: float = 0.0
    exit_codes: list = field(default_factory=list)
    note: str | None = None


def run_command(argv: list[str], seconds: float, env: dict, log) -> int | None:
    """Run argv, copying its output to `log` and stdout; None when it ran out of time (then it is stopped:
    SIGTERM to its process group, SIGKILL after KILL_GRACE seconds)."""
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)

    def copy():
        for line in iter(process.stdout.readline, b""):
            text = line.decode("utf-8", "replace")
            log.write(text)
            log.flush()
            sys.stdout.write(text)
            sys.stdout.flush()

    reader = threading.Thread(target=copy, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=max(seconds, 1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        code = None
    reader.join(timeout=5)
    return code


def run_step(name: str, commands: list[list[str]], limit: float, env: dict, out: Path) -> StepRun:
    """The step's commands in turn within `limit` seconds; the later ones (summaries) run even after a failure."""
    run, started = StepRun(limit=limit), time.perf_counter()
    with open(out / f"{name}.log", "w", encoding="utf-8") as log:
        for argv in commands:
            left = limit - (time.perf_counter() - started)
            header = f"$ {' '.join(argv)}   [{name}: {left:.0f} s left]\n"
            log.write(header)
            sys.stdout.write(header)
            code = run_command(argv, left, env, log) if left > 1 else None
            run.exit_codes.append(code)
            if code is None:
                run.status = "timeout"
            elif code != 0 and run.status == "ok":
                run.status = "failed"
    run.seconds = time.perf_counter() - started
    return run


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
        cases[case.get("name")] = {"outcome": outcome, "message": (message or "")[:300] or None,
                                   "properties": properties}
    return cases


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def commands(name: str, mode: Mode, work: Path, python: str, limit: float, bf16_failed: bool) -> list[list[str]]:
    """The step's command lines."""
    marks = ["--marks", *map(str, mode.marks), "--targets", *map(str, mode.targets)]
    if name == "correct":
        return [[python, "-m", "pytest", "-q", "-m", "gpu", "tests", "-p", "no:cacheprovider", "-o",
                 "junit_family=xunit1", f"--junitxml={work / 'correct.xml'}"]]  # xunit1 keeps record_property
    if name == "fast":
        return [[python, "benchmarks/bench.py", "--device", "cuda", *(["--smoke"] if mode.smoke else []),
                 "--json", str(work / "fast.json")]]
    if name == "gpt":
        return [[python, "benchmarks/gpt_baseline.py", *mode.gpt_args, "--budget", str(mode.budget),
                 "--eval-every", str(mode.eval_every), *marks, "--json", str(work / "gpt.json")]]
    if name == "lstm":
        sets = [*mode.lstm_sets, *(["train.precision=fp32"] if bf16_failed else []),
                f"train.time_budget={mode.budget:g}s", f"train.eval_every_seconds={mode.eval_every:g}"]
        return [train_command(python, "shakespeare-gpu", work / "lstm", sets),
                [python, "benchmarks/time_to_loss.py", str(work / "lstm"), *marks, "--json", str(work / "lstm.json")]]
    budget = ptb_budget(mode, limit)
    sets = [*mode.ptb_sets, f"train.time_budget={budget:g}s"]
    return [train_command(python, "ptb-char-gpu", work / "ptb", sets),
            [python, "benchmarks/time_to_loss.py", str(work / "ptb"), "--marks", "--targets", "--json",
             str(work / "ptb.json")]]


def train_command(python: str, config: str, run_dir: Path, sets: list[str]) -> list[str]:
    return [python, "-m", "charlm", "train", "--config", f"configs/{config}.yaml", "--run-dir", str(run_dir),
            *(part for item in sets for part in ("--set", item))]


def ptb_budget(mode: Mode, limit: float) -> float:
    return min(mode.ptb_budget, limit - mode.ptb_overhead)


def collect(name: str, work: Path) -> dict:
    if name == "correct":
        cases = junit_cases(work / "correct.xml")
        counts = {k: sum(c["outcome"] == k for c in cases.values()) for k in ("passed", "failed", "skipped")}
        return {**counts, "cases": cases}
    return read_json(work / f"{name}.json")


def step_limit(name: str, mode: Mode, started: float) -> float:
    """A step's own limit; the last one also stops at the deadline (it gets what the others left)."""
    limit = mode.limits[name]
    if name == "ptb" and not mode.smoke:
        limit = min(limit, TOTAL_SECONDS - KILL_GRACE - (time.perf_counter() - started))
    return limit


def check(mode: Mode, data: Path, out: Path, work: Path, only: tuple[str, ...], python: str) -> dict:
    """Run the steps, rewriting OUT/figures.json after each one; return the figures."""
    env = {**os.environ, "CHARLM_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["CHARLM_TEST_DATA"] = env.get("CHARLM_TEST_DATA") or env["CHARLM_DATA_DIR"]
    if mode.smoke:
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread each is fastest, and the machine is shared
    figures: dict = {"smoke": mode.smoke, "command": " ".join(["bash", "benchmarks/gpu_check.sh", *sys.argv[1:]]),
                     "data": env["CHARLM_DATA_DIR"], "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": {}}
    started = time.perf_counter()
    for name in STEPS:
        limit = step_limit(name, mode, started)
        bf16_failed = figures["steps"].get("correct", {}).get("cases", {}).get(BF16_TEST, {}).get("outcome") == "failed"
        if name not in only:
            run = StepRun(status="skipped", note="not asked for (--only)")
        elif name == "ptb" and ptb_budget(mode, limit) < (1 if mode.smoke else 15):
            run = StepRun(status="skipped", limit=limit, note=f"{limit:.0f} s left: too little for a PTB run")
        else:
            run = run_step(name, commands(name, mode, work, python, limit, bf16_failed), limit, env, out)
        figures["steps"][name] = {**vars(run), **collect(name, work)}
        if name == "lstm" and bf16_failed:
            figures["steps"][name]["note"] = f"bf16 off: {BF16_TEST} failed"
        if name == "ptb" and run.status != "skipped":
            figures["steps"][name]["budget"] = ptb_budget(mode, limit)
        write_json(out / "figures.json", figures)
    figures["seconds"] = time.perf_counter() - started
    write_json(out / "figures.json", figures)
    return figures


def write_json(path: Path, value: dict) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder for figures.json, table.txt and the steps' logs")
    parser.add_argument("--smoke", action="store_true", help="every step on the CPU, tiny (checks the script)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps to run ({','.join(STEPS)})")
    parser.add_argument("--work", type=Path, help="keep run folders and checkpoints here (default: a temp folder)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}: choose from {', '.join(STEPS)}")
    missing = [name for name in ("torch", "typer", "rich", "yaml", "pytest") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"error: {sys.executable} cannot import {', '.join(missing)}: run with PYTHON=<a python that has "
              "charlm's requirements and pytest>", file=sys.stderr)
        return 2
    try:
        data = find_data()
    except MissingData as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="charlm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = check(SMOKE if args.smoke else GPU, data, args.out.resolve(), work.resolve(), only, sys.executable)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    table = gpu_table.render(figures)
    (args.out / "table.txt").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0 if all(s["status"] in ("ok", "skipped") for s in figures["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
