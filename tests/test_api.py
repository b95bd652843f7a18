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
    config = charlm.load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", "train.epochs=2"],
    )
    summary = charlm.train(config, root / "run")
    return Path(summary.run_dir)


def test_the_guide_api_example_runs_as_written(builtin_cache, tmp_path, monkeypatch, capsys):
    guide = (REPO / "docs" / "export.md").read_text(encoding="utf-8")  # the Python API's page
    (example,) = [
        block.split("```", 1)[0]
        for block in guide.split("```python\n")[1:]
        if "charlm.load(" in block and "import charlm\n" in block
    ]
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/export.md", "exec"), {})
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
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]"


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_defined_once():
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "charlm.__version__"}


def test_charlm_version_prints_it():
    result = subprocess.run(
        [sys.executable, "-m", "charlm", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0 and result.stdout == f"charlm {charlm.__version__}\n"
    assert charlm.__version__.count(".") == 2


def test_the_package_is_marked_typed_and_ships_the_marker():
    assert (REPO / "charlm" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["charlm"]
    assert set(charlm.__all__) >= {"load", "train", "load_config", "export_model", "Model"}


API_MISUSE = [  # (what is called on a loaded model `m` or on charlm, the error's type, a fragment of its message)
    (lambda m: charlm.train({"train": {"epochs": 1}}), UsageError, "charlm.train takes a Config, not {'train'"),
    (lambda m: charlm.train("configs/tiny.yaml"), UsageError, "takes a Config, not 'configs/tiny.yaml'"),
    (lambda m: charlm.train(None), UsageError, "takes a Config, not None"),
    (lambda m: charlm.train(m.config, resume="yes"), UsageError, "resume must be True or False"),
    (lambda m: charlm.train(m.config, run_dir=5), UsageError, "run_dir must be a path"),
    (lambda m: charlm.load(123), UsageError, "the folder to load must be a path (a str or pathlib.Path), not 123"),
    (lambda m: charlm.load(b"runs/x"), UsageError, "not b'runs/x'"),
    (lambda m: charlm.load(m.path, "newest"), UsageError, "checkpoint 'newest' is not valid: use best or last"),
    (lambda m: charlm.load(m.path, 1), UsageError, "checkpoint 1 is not valid"),
    (lambda m: charlm.load(m.path, device=0), UsageError, "device must be auto, cpu, cuda, cuda:N or mps, not 0"),
    (lambda m: m.generate(42), UsageError, "the prefix must be text, not 42"),
    (lambda m: m.generate(b"hello"), UsageError, "not b'hello' (decode bytes first"),
    (lambda m: m.generate(["分"]), UsageError, "the prefix must be text, not ['分']"),
    (lambda m: m.generate("分", length="10"), UsageError, "length must be a whole number, not '10'"),
    (lambda m: m.generate("分", length=2.5), UsageError, "length must be a whole number, not 2.5"),
    (lambda m: m.generate("分", length=None), UsageError, "length must be a whole number, not None"),
    (lambda m: m.generate("分", length=True), UsageError, "length must be a whole number, not True"),
    (lambda m: m.generate("分", temperature="hot"), UsageError, "temperature must be a number, not 'hot'"),
    (lambda m: m.generate("分", temperature=None), UsageError, "temperature must be a number, not None"),
    (lambda m: m.generate("分", beam=2.5), UsageError, "beam must be a whole number, not 2.5"),
    (lambda m: m.generate("分", seed="x"), UsageError, "seed must be a whole number, not 'x'"),
    (lambda m: m.generate("分", seed=1.0), UsageError, "seed must be a whole number, not 1.0"),
    (lambda m: m.generate("分", top_k=True), UsageError, "top-k must be a whole number, not True"),
    (lambda m: m.generate("分", top_p="0.9"), UsageError, "top-p must be a number, not '0.9'"),
    (lambda m: m.generate("分", weights=16), UsageError, "weights must be text, not 16"),
    (lambda m: m.generate("分", stop=[1]), UsageError, "stop must be a text or a list of texts, not [1]"),
    (lambda m: m.generate("分", stop=b"\n"), UsageError, "stop must be a text or a list of texts"),
    (lambda m: m.generate("分", stop=""), UsageError, "a stop text is empty"),
    (lambda m: m.generate("分", topk=3), UsageError, "unknown sampling option 'topk': use temperature, top_k"),
    (lambda m: m.samples("分", 10, "2"), UsageError, "num-samples must be a whole number, not '2'"),
    (lambda m: m.samples("分", 10, 0), UsageError, "num-samples must be >= 1"),
    (lambda m: m.generate("分", num_samples=3), UsageError, "generate makes one text: call samples("),
    (lambda m: m.stream("分", repetition_window=1.5), UsageError, "repetition-window must be a whole number"),
    (lambda m: m.stream(7), UsageError, "the prefix must be text, not 7"),
    (lambda m: m.perplexity(""), UsageError, "the text has 0 characters (after the run's normalisation)"),
    (lambda m: m.perplexity(5), UsageError, "the text to score must be a str, not 5"),
    (lambda m: m.perplexity(b"abc"), UsageError, "must be a str, not b'abc'"),
    (lambda m: m.perplexity(file=5), UsageError, "file must be a path (a str or pathlib.Path), not 5"),
    (lambda m: m.perplexity(split=5), UsageError, "split 5 is not valid: use train, val or test"),
    (lambda m: m.perplexity(split="dev"), UsageError, "split 'dev' is not valid"),
    (lambda m: m.perplexity("分开", file="x.txt"), UsageError, "score one thing"),
    (lambda m: charlm.load_config(5), UsageError, "config path must be a file path (a str or pathlib.Path), not 5"),
    (lambda m: charlm.load_config(None, 5), UsageError, "overrides must be a list of 'section.key=value' texts"),
    (lambda m: charlm.load_config(None, [5]), UsageError, "override 5 is not KEY=VALUE"),
    (lambda m: charlm.load_config(None, ["train.epochs"]), UsageError, "override 'train.epochs' is not KEY=VALUE"),
    (lambda m: charlm.export_model(m.path, None), UsageError, "out is needed"),
    (lambda m: charlm.export_model(m.path, 3.5), UsageError, "out must be a path"),
]


@pytest.mark.parametrize("n", range(len(API_MISUSE)))
def test_api_misuse_is_charlms_one_line_error_at_the_call(run_dir, n):
    call, error, fragment = API_MISUSE[n]
    with pytest.raises(error) as caught:
        call(charlm.load(run_dir))
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_a_str_is_one_stop_text_and_one_setting_never_their_characters(run_dir, tmp_path):
    model = charlm.load(run_dir)
    greedy = model.generate("分开", length=60, temperature=0)
    stop = next(greedy[i : i + 2] for i in range(3, 40) if greedy[i] != greedy[i + 1])  # two different characters
    (sample,) = model.samples("分开", 60, 1, temperature=0, stop=stop)
    assert sample.endswith(stop) and len(sample) == greedy.index(stop, 2) + 2  # not at its first character alone
    config = charlm.load_config(REPO / "configs" / "tiny.yaml", "train.epochs=3")
    assert config.train.epochs == 3


@pytest.mark.parametrize(
    ("flag", "value", "option"),
    [
        ("--top-k", "-1", {"top_k": -1}),
        ("--top-p", "0", {"top_p": 0}),
        ("--num-samples", "0", {"num_samples": 0}),
        ("--seed", "-1", {"seed": -1}),
        ("--repetition-penalty", "0", {"repetition_penalty": 0}),
        ("--repetition-window", "0", {"repetition_window": 0}),
        ("--beam", "-2", {"beam": -2}),
        ("--weights", "fp8", {"weights": "fp8"}),
        ("--temperature", "-1", {"temperature": -1}),
        ("--length", "-5", {"length": -5}),
    ],
)
def test_the_api_refuses_what_the_cli_refuses_with_the_same_message(run_dir, capsys, flag, value, option):
    from charlm.cli.main import main

    assert main(["generate", "--run-dir", str(run_dir), "--prefix", "分", flag, value]) == 2
    cli_message = capsys.readouterr().err.strip().removeprefix("error: ")
    with pytest.raises(UsageError) as caught:
        charlm.load(run_dir).samples("分", **option)
    assert str(caught.value) == cli_message
