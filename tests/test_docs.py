"""Every `charlm` command that the README and the user guide show runs, through the real CLI (issue #28).

The ```bash and ```console blocks of README.md and docs/**/*.md are collected; each `charlm ...` line (also
`.venv/bin/charlm`, `python -m charlm` and `torchrun ... -m charlm`) runs in process, in page order, in a fresh
folder per page that holds tiny runs made here: `charlm train` gets small settings through `--set` (a model
of 16 units, one epoch, 20,000 characters), `--nproc` and torchrun lines get `--dry-run`, and the placeholders
the pages use (my.txt, verse.txt, a run folder named in `--run-dir`) are small real files and runs. A line
that no longer parses or exits non-zero fails the test with its page and line. Output a console block shows
is checked where it is deterministic: `--version`, `--help` excerpts and error lines (which must also exit
non-zero). A `charlm serve` line, which serves until stopped, is started in a subprocess on a free port, must
answer /health, and is stopped.
"""

from __future__ import annotations

import gzip
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from charlm.cli.main import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUNNABLE = ("bash", "console")
# every `charlm train` line gets these last (the last --set of a key wins): seconds, not minutes
TINY = (
    "model.hidden_size=16",
    "model.embed_size=16",
    "model.num_layers=1",
    "train.epochs=1",
    "train.batch_size=8",
    "train.num_steps=16",
    "train.eval_batch_size=8",
    "train.precision=fp32",
    "data.max_chars=20000",
)
VERSE = "我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n"
SHELL_ENDS = {"|", ">", ">>", "&&", ";", "2>", "&"}  # the charlm command ends where the shell takes over
BOX = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛┡┩╇┳┻╋]+")


@dataclass
class Command:
    page: str
    line: int
    text: str
    argv: list[str]
    launcher: bool = False  # torchrun / srun: checked with --dry-run, never launched
    shown: list[str] = field(default_factory=list)  # the output a console block shows after it

    def where(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def blocks(text: str):
    """(language, first line number, lines) of each fenced block."""
    lines, i = text.split("\n"), 0
    while i < len(lines):
        opening = re.match(r"\s*(`{3,})\s*([\w-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, language, start, i = opening.group(1), opening.group(2), i + 2, i + 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        yield language, start, body


def logical_lines(body: list[str], start: int, console: bool):
    """(line number, text, output lines shown after it): continuation lines joined; in a console block only
    `$ ` lines are commands, and the lines up to the next one are their output."""
    out, pending = [], None
    for number, raw in enumerate(body, start):
        if console and not raw.startswith("$ ") and pending is None:
            if out:
                out[-1][2].append(raw)
            continue
        text = raw[2:] if console and raw.startswith("$ ") and pending is None else raw
        if pending is not None:
            pending = (pending[0], pending[1] + " " + text.strip(), [])
        else:
            pending = (number, text.strip(), [])
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip(), [])
            continue
        out.append(pending)
        pending = None
    return out


def as_command(page: str, number: int, text: str, shown: list[str]) -> Command | None:
    """The charlm invocation on a shell line, or None when the line runs something else."""
    if not text or text.startswith("#"):
        return None
    tokens = shlex.split(text, comments=True)
    end = next((i for i, token in enumerate(tokens) if token in SHELL_ENDS), len(tokens))
    tokens = tokens[:end]
    if tokens and (tokens[0] == "charlm" or tokens[0].endswith("/charlm")):
        return Command(page, number, text, tokens[1:], shown=shown)
    for i in range(len(tokens) - 1):
        if tokens[i] == "-m" and tokens[i + 1] == "charlm":
            launcher = Path(tokens[0]).name in ("torchrun", "srun")
            return Command(page, number, text, tokens[i + 2 :], launcher=launcher, shown=shown)
    return None


def commands(path: Path) -> list[Command]:
    page = str(path.relative_to(REPO))
    found = []
    for language, start, body in blocks(path.read_text(encoding="utf-8")):
        if language not in RUNNABLE:
            continue
        for number, text, shown in logical_lines(body, start, console=language == "console"):
            command = as_command(page, number, text, shown)
            if command is not None:
                found.append(command)
    return found


def prepared(command: Command) -> list[str]:
    """The argv to run: tiny settings for training, --dry-run for launches; the global options stay first."""
    argv = list(command.argv)
    if "train" not in argv:
        return argv
    if command.launcher or "--nproc" in argv:
        return argv if "--dry-run" in argv else [*argv, "--dry-run"]
    if "--dry-run" in argv or {"--resume", "--resume-from", "--init-from"} & set(argv):
        return argv  # the run's own config is already tiny (a resumed or fine-tuned run keeps it)
    return [*argv, *(item for key in TINY for item in ("--set", key))]


def option_values(argv: list[str], *names: str) -> list[str]:
    return [argv[i + 1].split(":")[0] for i, token in enumerate(argv[:-1]) if token in names]


def normalised(text: str) -> str:
    return " ".join(BOX.sub(" ", text).split())


@pytest.fixture(scope="module")
def base_runs(tmp_path_factory, single_thread) -> dict[str, Path]:
    """Two tiny runs the pages' run folders are copied from: the whole lyrics corpus (every prefix the pages
    use is in its vocabulary) and English text (The Time Machine, as shipped)."""
    import charlm

    root = tmp_path_factory.mktemp("docs-base")
    english = root / "english.txt"
    with gzip.open(REPO / "charlm" / "data" / "corpora" / "timemachine.txt.gz", "rt", encoding="utf-8") as f:
        english.write_text(f.read(20000), encoding="utf-8")
    runs = {}
    for name, corpus in (("lyrics", "jaychou"), ("english", str(english))):
        settings = [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", *TINY]
        if name == "lyrics":
            settings.append("data.max_chars=100000")  # the whole corpus (63,282 characters)
        runs[name] = Path(
            charlm.train(charlm.load_config(REPO / "configs" / "tiny.yaml", settings), root / name).run_dir
        )
    return runs | {"english.txt": english}


def materialise(argv: list[str], folder: Path, base: dict[str, Path]) -> None:
    """Run folders and input files the command names that the page did not make: copies of the tiny runs,
    small real texts."""
    if "train" not in argv:
        named = option_values(argv, "--run-dir", "-r")
    elif "--init-from" in argv:
        named = option_values(argv, "--init-from")  # its --run-dir is the new run's
    else:
        named = option_values(argv, "--run-dir", "-r") if {"--resume", "--resume-from"} & set(argv) else []
    for value in named:
        path = folder / value
        if not path.exists() and value.startswith("runs/"):
            english = re.search(r"shakespeare|timemachine|ptb|my", value)
            shutil.copytree(base["english" if english else "lyrics"], path)
    for value in option_values(argv, "--corpus", "--file", "--prefix-file", "--adapt"):
        path = folder / value
        if value.endswith(".txt") and not path.exists():
            text = VERSE if value == "verse.txt" else base["english.txt"].read_text(encoding="utf-8")
            path.write_text(text, encoding="utf-8")


def subcommand(argv: list[str]) -> str | None:
    """The command an argv runs (after the global options: --runs-root takes a value)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--runs-root" else 1
    return argv[i] if i < len(argv) else None


def served(command: Command, argv: list[str], folder: Path) -> str | None:
    """A `charlm serve` line serves until stopped: it is started in a subprocess on a free port (the page's
    --port becomes 0), must print its address and answer /health there, and is then stopped."""
    import httpx

    port = [i + 1 for i, token in enumerate(argv[:-1]) if token == "--port"]
    argv = [("0" if i in port else token) for i, token in enumerate(argv)] + ([] if port else ["--port", "0"])
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", *argv],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        try:
            found = re.search(r"at (http://\S+) \(", lines.get(timeout=120))
        except queue.Empty:
            found = None
        if found is None:
            process.kill()
            return f"{command.where()} did not start: {process.communicate()[1].strip()[-600:]!r}"
        health = httpx.get(f"{found.group(1)}/health", timeout=60)
        return None if health.status_code == 200 else f"{command.where()}: /health answered {health.status_code}"
    finally:
        process.kill()
        process.communicate()


def run(command: Command, folder: Path, base: dict[str, Path], capsys) -> str | None:
    """Run one command in `folder`; the reason it fails, or None."""
    argv = prepared(command)
    materialise(argv, folder, base)
    if subcommand(argv) == "serve":
        return served(command, argv, folder)
    environment = dict(os.environ)
    try:
        capsys.readouterr()
        code = main(argv)
    except SystemExit as e:  # never expected: main turns every exit into a code
        code = e.code
    finally:
        os.environ.clear()
        os.environ.update(environment)  # --runs-root sets $CHARLM_RUNS_DIR for the process
    captured = capsys.readouterr()
    output = captured.out + captured.err
    expects_error = bool(command.shown) and command.shown[0].startswith("error:")
    if expects_error != (code != 0):
        tail = output.strip().splitlines()[-3:]
        return f"{command.where()} exited {code}{' (the page shows an error)' if expects_error else ''}: {tail}"
    deterministic = expects_error or {"--help", "--version"} & set(command.argv)
    if deterministic:
        for line in command.shown:
            if line.strip() not in ("", "...") and normalised(line) not in normalised(output):
                return f"{command.where()}: the page shows {line!r}, the command printed {output[-600:]!r}"
    return None


def run_page(commands_of_page: list[Command], folder: Path, base: dict[str, Path], capsys, monkeypatch) -> list[str]:
    """Run a page's commands in order in `folder` (which becomes the working folder); the failures."""
    folder.mkdir(parents=True)
    monkeypatch.chdir(folder)
    (folder / "configs").symlink_to(REPO / "configs")
    shutil.copytree(base["lyrics"], folder / "runs" / "lyrics")  # for the commands that take the latest run
    failures = []
    for command in commands_of_page:
        reason = run(command, folder, base, capsys)
        if reason:
            failures.append(reason)
    return failures


PAGES_WITH_COMMANDS = [page for page in PAGES if commands(page)]


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda page: str(page.relative_to(REPO)))
@pytest.mark.slow
def test_every_command_of_the_page_runs(page, base_runs, tmp_path, monkeypatch, capsys):
    needs_ptb = [c for c in commands(page) if "ptb-char" in " ".join(c.argv)]
    data = Path(os.environ.get("CHARLM_TEST_DATA") or REPO.parent / "shared" / "data")
    if (data / "ptb.char.train.txt").is_file():
        monkeypatch.setenv("CHARLM_DATA_DIR", str(data))  # ptb-char is a download: the real corpora stand in
        needs_ptb = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # calibration and kernel choices stay here
    monkeypatch.delenv("CHARLM_RUNS_DIR", raising=False)
    runnable = [c for c in commands(page) if c not in needs_ptb]
    failures = run_page(runnable, tmp_path / "page", base_runs, capsys, monkeypatch)
    assert not failures, "\n".join(failures)
    if needs_ptb:
        pytest.skip(f"ran {len(runnable)} commands; {len(needs_ptb)} need ptb-char: set CHARLM_TEST_DATA")


def test_the_pages_show_commands_of_every_kind():
    """The collector finds what the pages hold: the README's quick start, console and bash blocks, joined
    continuation lines, torchrun's charlm part, and output lines under their command."""
    found = [c for page in PAGES for c in commands(page)]
    readme = [c.argv[0] for c in commands(REPO / "README.md")]
    assert readme[:3] == ["train", "generate", "perplexity"]
    assert {c.argv[0] for c in found} >= {
        "train",
        "generate",
        "perplexity",
        "neurons",
        "export",
        "plot",
        "runs",
        "serve",
    }
    assert any(c.launcher and "--rdzv_id" not in c.argv and "--run-dir" in c.argv for c in found)
    version = next(c for c in found if c.argv == ["--version"])
    assert version.shown[0].startswith("charlm ")
    assert len(found) >= 40


def test_a_broken_line_fails_naming_its_page_and_line(tmp_path, base_runs, monkeypatch, capsys):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n```console\n$ charlm runs\n$ charlm generate --no-such-flag\n"
        "$ charlm --version\ncharlm 0.0.1\n$ charlm runs --json\nerror: nothing\n```\n",
        encoding="utf-8",
    )
    (_, start, body), *_ = blocks(page.read_text(encoding="utf-8"))
    found = [as_command("page.md", n, text, shown) for n, text, shown in logical_lines(body, start, console=True)]
    failures = run_page(found, tmp_path / "work", base_runs, capsys, monkeypatch)
    assert failures[0].startswith("page.md:5: `charlm generate --no-such-flag` exited 2")
    assert failures[1].startswith("page.md:6: `charlm --version`: the page shows 'charlm 0.0.1'")
    assert failures[2].startswith("page.md:8: `charlm runs --json` exited 0 (the page shows an error)")
    assert len(failures) == 3


def test_the_readme_links_to_files_that_exist():
    """README.md is not part of the site (mkdocs --strict checks the guide's links): its own links are checked
    here, each to a file of the repository and, for a guide page, to a heading there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) >= 20
    for target, anchor in links:
        assert (REPO / target).exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO / target).read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}
            assert anchor in slugs, f"README.md links to {target}#{anchor}, a heading {target} lacks"
