"""What a user of Python CLI tools expects: pipes, --version, --help that reads right, tables that are never
cut, --json everywhere, warnings on stderr, --quiet, a per-user cache, start-up without torch."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import charlm
from charlm.cli.main import main
from charlm.data import data_dir

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


def charlm_cmd(*args: str, cwd: Path, env: dict | None = None, **options) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        **options,
    )


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A runs folder with one tiny run, trained through the command with --quiet and CHARLM_RUNS_DIR."""
    root = tmp_path_factory.mktemp("conventions")
    corpus = root / "corpus.txt"
    corpus.write_text("分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 40, encoding="utf-8")
    result = charlm_cmd(
        "train",
        "--config",
        TINY,
        "--corpus",
        str(corpus),
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "train.epochs=1",
        "--set",
        "sample.prefixes=[分开, xyz]",
        "--set",
        "sample.preview_every=1",
        cwd=root,
        env={"CHARLM_RUNS_DIR": str(root / "myruns")},
    )
    assert result.returncode == 0, result.stderr
    return root, result


def test_quiet_prints_one_summary_line_and_warnings_go_to_stderr(runs_root):
    root, result = runs_root
    (run_dir,) = (root / "myruns").iterdir()  # CHARLM_RUNS_DIR chose where the run went
    assert result.stdout.count("\n") == 1 and "best val perplexity" in result.stdout and str(run_dir) in result.stdout
    assert "xyz" in result.stderr and "warning" in result.stderr and "xyz" not in result.stdout


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["info"]])
def test_a_reader_that_leaves_early_is_not_an_error(runs_root, args):
    root, _ = runs_root
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHARLM_RUNS_DIR": str(root / "myruns")}
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.readline()
    process.stdout.close()  # `| head -1`
    assert process.wait(timeout=300) == 0
    assert process.stderr.read() == b""


def test_version_is_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"charlm {charlm.__version__}"


def test_help_shows_no_value_after_flags_and_has_examples(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    # the item type of --set: Typer's own click copy names it str, Typer on click itself (before 0.26) text
    assert "<bool>" not in text and "list[" not in text and ("<str>..." in text or "<text>..." in text)
    for argv in (["--help"], ["data", "--help"]):
        assert main(argv) == 0
        assert "Example: charlm" in capsys.readouterr().out


def test_repeatable_options_name_their_item_type_under_either_typer():
    """Typer's own click copy has display_type; Typer on click itself (older Typer: click's Option) has
    only the click type. Both name one item of --set, and neither breaks the CLI (it did on a GPU machine)."""
    from types import SimpleNamespace

    from charlm.cli.main import _item_type

    own_click = SimpleNamespace(display_type=lambda ctx: "<list[str]>")
    click_itself = SimpleNamespace(type=SimpleNamespace(name="text"))
    assert _item_type(own_click) == "<str>" and _item_type(click_itself) == "<text>"


def test_runs_and_data_list_are_never_cut(runs_root, monkeypatch, capsys):
    from rich.console import Console

    import charlm.cli.app

    root, _ = runs_root
    (run_dir,) = (root / "myruns").iterdir()
    monkeypatch.setattr(charlm.cli.app, "out", Console(width=80, force_terminal=True, highlight=False))
    for argv in (["runs", "--root", str(root / "myruns")], ["data", "list"]):
        assert main(argv) == 0
        assert "…" not in capsys.readouterr().out
    piped = charlm_cmd("runs", "--root", str(root / "myruns"), cwd=root, env={"COLUMNS": "80"})
    assert run_dir.name in piped.stdout and "finished" in piped.stdout and "…" not in piped.stdout


def test_json_outputs_parse(runs_root, capsys):
    root, _ = runs_root
    (run_dir,) = (root / "myruns").iterdir()
    assert main(["runs", "--root", str(root / "myruns"), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["name"] == run_dir.name and run["status"] == "finished"
    assert main(["info", "--run-dir", str(run_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] > 0 and info["config"]["train"]["epochs"] == 1
    assert main(["data", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {c["name"] for c in listed["corpora"]} >= {"jaychou", "tinyshakespeare"}


def test_a_missing_runs_folder_is_named(tmp_path, capsys):
    assert main(["runs", "--root", str(tmp_path / "no-such")]) == 2
    assert "runs folder" in capsys.readouterr().err


def test_the_corpus_cache_is_per_user_unless_charlm_data_dir_says(tmp_path, monkeypatch):
    monkeypatch.delenv("CHARLM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "charlm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "charlm"
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


@pytest.mark.parametrize("args", [["data", "list"], ["runs", "--root", "."], ["--help"]])
def test_commands_that_run_no_model_do_not_import_torch(tmp_path, args):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "charlm", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.rstrip().endswith(" torch")]


def test_info_reads_a_run_without_torch(runs_root):
    root, _ = runs_root
    (run_dir,) = (root / "myruns").iterdir()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "charlm", "info", "--run-dir", str(run_dir)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "parameters:" in result.stdout, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.rstrip().endswith(" torch")]


def test_runs_root_flag_finds_runs_from_any_folder(runs_root, tmp_path, monkeypatch, capsys):
    root, _ = runs_root
    monkeypatch.chdir(tmp_path)  # a folder with no runs/
    monkeypatch.setenv("CHARLM_RUNS_DIR", "")  # unset for charlm; restored after the test (the flag sets it)
    assert main(["--runs-root", str(root / "myruns"), "generate", "--prefix", "分开", "-n", "5"]) == 0
    assert capsys.readouterr().out.startswith("分开")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"nats_per_char": math.nan}, "nats_per_char is nan"),
        ({"perplexity": math.inf, "chars": 3}, "perplexity is inf"),
        ({"dynamic": {"perplexity": math.inf}}, "dynamic.perplexity is inf"),
        ({"features": [{"top": [{"r": 0.5}, {"r": -math.inf}]}]}, "features.0.top.1.r is -inf"),
        ([1.0, math.nan], "1 is nan"),
        ({"sample": 1, "bits_per_char": math.nan, "options": {}}, "bits_per_char is nan"),
    ],
)
def test_json_output_never_holds_nan_or_infinity(capsys, value, where):
    """Every --json goes through cli.app.print_json: strict JSON, and a number that is not finite is one line
    naming it (exit 1 through main), with nothing printed."""
    from charlm.cli.app import print_json
    from charlm.errors import RunError

    with pytest.raises(RunError, match=f"the result's {re.escape(where)}, not a finite number"):
        print_json(value)
    assert capsys.readouterr().out == ""
    print_json({"text": "分开", "bits_per_char": None, "n": [1, 2.5]})
    assert json.loads(capsys.readouterr().out) == {"text": "分开", "bits_per_char": None, "n": [1, 2.5]}


def test_no_command_prints_json_but_through_print_json():
    """The one JSON printer of the commands (runs and info read files that were checked as strict JSON already)."""
    own = {"runs.py", "info.py"}
    for path in (REPO / "charlm" / "cli").glob("*.py"):
        if path.name not in own:
            assert "print(json.dumps" not in path.read_text(encoding="utf-8"), path.name
