"""The Python API (charlm.load / train / load_config / export_model, Model), the version, a light import."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import charlm
from charlm.errors import CorpusError, UsageError

REPO = Path(__file__).resolve().parents[1]
TEXT = "分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 40

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("api")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    config = charlm.load_config(REPO / "configs" / "tiny.yaml", [
        f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", "train.epochs=2"])
    summary = charlm.train(config, root / "run")
    return Path(summary.run_dir)


def test_the_readme_api_example_runs_as_written(builtin_cache, tmp_path, monkeypatch, capsys):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (example,) = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]
                  if "charlm.load(" in block and "import charlm\n" in block]
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out  # the sample, the scores (one line), the streamed text, then True
    sample, scores, rest = re.split(r"\n(\{'nats_per_char'.*\})\n", out)
    assert sample.startswith("分开") and len(sample) == 52
    assert set(ast.literal_eval(scores)) >= {"nats_per_char", "bits_per_char", "perplexity", "chars"}
    assert rest.endswith("True\n") and len(rest) == 50 + len("True\n")
    assert (tmp_path / "models" / "tiny" / "model.safetensors").is_file()


def test_generate_stream_and_samples_agree_and_options_pass_through(run_dir):
    model = charlm.load(run_dir)
    text = model.generate("分开", length=40, temperature=0.8, seed=5)
    assert "分开" + "".join(model.stream("分开", length=40, temperature=0.8, seed=5)) == text
    assert model.samples("分开", 40, 1, temperature=0.8, seed=5) == [text]
    greedy = model.generate("分开", length=40, temperature=0)
    assert greedy == model.generate("分开", length=40, temperature=0.8, top_k=1, seed=9)  # top_k reaches the sampler
    assert len(model.samples("我", 10, 3, seed=1)) == 3
    with pytest.raises(UsageError, match="top-p"):
        model.stream("分开", top_p=0)  # checked at the call, before the first character
    with pytest.raises(UsageError, match="never saw"):
        model.generate("分开😀")


def test_perplexity_of_text_file_and_split(run_dir, tmp_path):
    model = charlm.load(run_dir)
    text = "我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 3
    path = tmp_path / "new.txt"
    path.write_text(text, encoding="utf-8")
    of_text, of_file = model.perplexity(text), model.perplexity(file=path)
    assert {k: v for k, v in of_text.items() if k != "source"} == {k: v for k, v in of_file.items() if k != "source"}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert model.perplexity()["nats_per_char"] == pytest.approx(min(r["val_loss"] for r in records), rel=1e-9)
    with pytest.raises(UsageError, match="score one thing"):
        model.perplexity(text, split="val")
    with pytest.raises(CorpusError, match="lacks"):
        model.perplexity("hello")


def test_load_a_run_or_its_export_and_the_latest_run(run_dir, tmp_path, monkeypatch):
    folder = charlm.export_model(run_dir, tmp_path / "model")
    from_run, from_folder = charlm.load(run_dir, "last"), charlm.load(folder)
    assert from_folder.vocab == from_run.vocab and from_folder.config == from_run.config
    assert repr(from_run) == f"charlm.Model({str(run_dir)!r}: gru 1x64, {len(from_run.vocab)} characters)"
    monkeypatch.chdir(run_dir.parent.parent)
    (run_dir.parent.parent / "runs").mkdir(exist_ok=True)
    (run_dir.parent.parent / "runs" / "only").symlink_to(run_dir)
    assert charlm.load().path == Path("runs/only")


def test_import_charlm_does_not_import_torch():
    code = "import sys, charlm; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_defined_once():
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "charlm.__version__"}


def test_charlm_version_prints_it():
    result = subprocess.run([sys.executable, "-m", "charlm", "--version"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0 and result.stdout == f"charlm {charlm.__version__}\n"
    assert charlm.__version__.count(".") == 2


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (REPO / "charlm" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["charlm"]
    assert set(charlm.__all__) >= {"load", "train", "load_config", "export_model", "Model"}
