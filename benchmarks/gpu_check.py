"""Every GPU measurement of issue 33 in one command under 9 minutes, each step under its own time limit
(run by gpu_check.sh).

    bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--only STEP,...] [--work DIR]

Nine minutes cannot hold 60 + 180 + 180 + 300 s of training in turn, so the check runs in two phases:
  1. alone on the card, in turn: sweep (gpu_sweep.py: bf16 MFU at batch 128/256/512, 2x512 and 3x1024; where
     the card saturates), then calibrate (the autosize speeds `--budget` plans with, cached for auto3m);
  2. at once, in four lanes (one GPU can hold several of these small LSTM jobs: bf16 MFU 0.04-0.2):
       ptb                  configs/ptb-char-gpu-5m.yaml, 300 s (less if phase 1 ran late), test bits/char
       s3m, then s60        configs/shakespeare-gpu-3m.yaml (3 minutes), then shakespeare-gpu-60s.yaml
       auto3m               charlm train --corpus tinyshakespeare --budget 3m, beside s3m: the comparison
       correct, then fp16   pytest -m gpu; fp16 (gradient scaler) against fp32 (fp16_check.py)
The trade-off: the runs of phase 2 share the card (time-sliced between processes), so each trains on less
than a whole H200 in its budget of wall-clock training time: their losses are what a share of the card
reached (a goal met is met with room; one missed may be met alone), and each run's chars/s says what share
it had (against the sweep's, measured alone). s3m and auto3m start together: compared on equal terms.
Every training run's figures come from its metrics.jsonl through time_to_loss.py, never from a log.
Optional steps, only with --only: fast (bench.py --device cuda, the first round's suite), gpt (the GPT race).
A step that fails, runs out of time or has no corpus is recorded as such and the others run. OUT_DIR gets
three files (the device machine returns at most eight): figures.json (rewritten as each step ends),
logs.txt (every step's output) and table.txt (printed at the end). Run folders stay in a work folder
outside OUT_DIR (deleted at the end unless --work is given). The corpora: $CHARLM_DATA_DIR, else the first
of data/, shared/data and ../shared/data that holds tinyshakespeare.txt; without ptb-char there, ptb is
skipped, saying why. --smoke runs every step on the CPU, tiny, in about a minute: the same code paths.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import gpu_table  # beside this file
from gpu_steps import MissingData, Mode, Run, StepRun, collect, commands, find_data, ptb_budget, ptb_missing, run_step

REPO = Path(__file__).resolve().parents[1]
TOTAL_SECONDS = 520  # the steps' deadline: 9 minutes less a stopped step's grace, the table and a margin
ALONE = ("fast", "sweep", "calibrate", "gpt")  # phase 1, in turn (the optional ones only with --only)
LANES = (("ptb",), ("s3m", "s60"), ("auto3m",), ("correct", "fp16"))  # phase 2, the lanes at once
STEPS = (*ALONE, *(name for lane in LANES for name in lane))
DEFAULT = tuple(name for name in STEPS if name not in ("fast", "gpt"))


BITS = 0.6931471805599453  # nats per bit: PTB's 1.40 and 1.30 bits/char as val-loss targets
RUNS = {
    "s60": Run("shakespeare-gpu-60s", 60, (15, 30, 60), (1.55, 1.47)),
    "s3m": Run("shakespeare-gpu-3m", 180, (30, 60, 120, 180), (1.47, 1.40)),
    "auto3m": Run(None, 180, (30, 60, 120, 180), (1.47, 1.40)),
    "ptb": Run("ptb-char-gpu-5m", 300, (60, 120, 300), (1.40 * BITS, 1.30 * BITS)),
}
SMOKE_RUNS = {
    "s60": Run("shakespeare-gpu-60s", 2, (1, 2), (3.0,)),
    "s3m": Run("shakespeare-gpu-3m", 3, (1, 3), (3.0, 2.5)),
    "auto3m": Run(None, 3, (1, 3), (3.0, 2.5)),
    "ptb": Run("ptb-char-gpu-5m", 3, (1, 3), (2.5,)),
}
GPU = Mode(
    smoke=False,
    limits={
        "fast": 75,
        "sweep": 90,
        "calibrate": 60,
        "gpt": 175,
        "ptb": 420,
        "s3m": 260,
        "s60": 120,
        "auto3m": 280,
        "correct": 200,
        "fp16": 90,
    },
    runs=RUNS,
    sets=(),
    ptb_overhead=60,
)
TINY = (
    "train.device=cpu",
    "model.hidden_size=32",
    "model.embed_size=16",
    "train.batch_size=8",
    "train.num_steps=32",
    "train.eval_batch_size=8",
    "train.eval_every_seconds=1",
    "data.max_chars=40000",
)
SMOKE = Mode(
    smoke=True,
    limits={
        "fast": 240,
        "sweep": 120,
        "calibrate": 60,
        "gpt": 90,
        "ptb": 90,
        "s3m": 90,
        "s60": 90,
        "auto3m": 90,
        "correct": 180,
        "fp16": 60,
    },
    runs=SMOKE_RUNS,
    sets=TINY,
    ptb_overhead=30,
)


def step_limit(name: str, mode: Mode, started: float) -> float:
    """A step's own limit, cut to the deadline on a GPU (a late phase 1 leaves less to the others)."""
    left = TOTAL_SECONDS - (time.perf_counter() - started)
    return mode.limits[name] if mode.smoke else max(0.0, min(mode.limits[name], left))


class Check:
    """One run of the check: the steps' outcomes, figures.json and logs.txt kept up to date as steps end."""

    def __init__(self, mode: Mode, data: Path, out: Path, work: Path, only: tuple[str, ...], python: str):
        self.mode, self.data, self.out, self.work, self.only, self.python = mode, data, out, work, only, python
        self.lock, self.started = threading.Lock(), time.perf_counter()
        self.env = environment(data, work, mode.smoke)
        self.figures: dict = {
            "smoke": mode.smoke,
            "data": str(data),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["bash", "benchmarks/gpu_check.sh", *sys.argv[1:]]),
            "steps": {},
        }

    def run(self) -> dict:
        for name in ALONE:
            self.step(name)
        lanes = [threading.Thread(target=lambda lane=lane: [self.step(name) for name in lane]) for lane in LANES]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
        self.figures["seconds"] = time.perf_counter() - self.started
        self.figures["steps"] = {name: self.figures["steps"][name] for name in STEPS if name in self.figures["steps"]}
        self.publish()
        return self.figures

    def step(self, name: str) -> None:
        limit = step_limit(name, self.mode, self.started)
        why_not = self.why_not(name, limit)
        if why_not:
            run = StepRun(status="skipped", limit=limit, note=why_not)
            if name in self.only:
                self.say(f"[{name}] skipped: {why_not}")
        else:
            self.say(f"[{name}] started, {limit:.0f} s at most")
            run = run_step(name, commands(name, self.mode, self.work, self.python, limit), limit, self.env, self.work)
            self.say(f"[{name}] {run.status} after {run.seconds:.0f} s")
        with self.lock:
            self.figures["steps"][name] = {**vars(run), **collect(name, self.work)}
            if name == "ptb" and run.status != "skipped":
                self.figures["steps"][name]["budget"] = ptb_budget(self.mode, limit)
            self.publish()

    def say(self, line: str) -> None:
        with self.lock:  # the lanes' lines, whole
            print(line, flush=True)

    def why_not(self, name: str, limit: float) -> str | None:
        if name not in self.only:
            return "not asked for (--only)"
        if name == "ptb":
            missing = ptb_missing(self.data)
            if missing:
                return missing
            if ptb_budget(self.mode, limit) < (1 if self.mode.smoke else 30):
                return f"{limit:.0f} s left: too little for a PTB run"
        if not self.mode.smoke and limit < 5:  # the deadline came
            return f"{limit:.0f} s left before the deadline"
        return None

    def publish(self) -> None:
        """figures.json and logs.txt in OUT_DIR as they stand (written whole, then renamed)."""
        write_text(self.out / "figures.json", json.dumps(self.figures, indent=2) + "\n")
        logs = [
            f"===== {name} =====\n{(self.work / f'{name}.log').read_text(encoding='utf-8', errors='replace')}"
            for name in STEPS
            if (self.work / f"{name}.log").is_file()
        ]
        write_text(self.out / "logs.txt", "\n".join(logs))


def environment(data: Path, work: Path, smoke: bool) -> dict:
    env = {
        **os.environ,
        "CHARLM_DATA_DIR": str(data),
        "PYTHONUNBUFFERED": "1",
        "XDG_CACHE_HOME": str(work / "cache"),  # calibrate's speeds, measured alone, for auto3m
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env["CHARLM_TEST_DATA"] = env.get("CHARLM_TEST_DATA") or env["CHARLM_DATA_DIR"]
    if smoke:
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models, several at once: one thread each
    return env


def write_text(path: Path, text: str) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder for figures.json, logs.txt and table.txt")
    parser.add_argument("--smoke", action="store_true", help="every step on the CPU, tiny (checks the script)")
    parser.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated steps to run ({','.join(STEPS)})")
    parser.add_argument("--work", type=Path, help="keep run folders and checkpoints here (default: a temp folder)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}: choose from {', '.join(STEPS)}")
    missing = [name for name in ("torch", "typer", "rich", "yaml", "pytest") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: {sys.executable} cannot import {', '.join(missing)}: run with PYTHON=<a python that has "
            "charlm's requirements and pytest>",
            file=sys.stderr,
        )
        return 2
    try:
        data = find_data(REPO)
    except MissingData as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="charlm-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        figures = Check(
            SMOKE if args.smoke else GPU, data, args.out.resolve(), work.resolve(), only, sys.executable
        ).run()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    table = gpu_table.render(figures)
    write_text(args.out / "table.txt", table + "\n")
    print(table)
    return 0 if all(s["status"] in ("ok", "skipped") for s in figures["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
