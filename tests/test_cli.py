"""End-to-end: the real `charlm` command on a small generated corpus, and a table of bad inputs."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
WORDS = ["分开", "不分开", "爱情", "你的", "微笑", "天空", "我想", "就是", "love", "rain", "回家", "风景"]


def make_corpus(path: Path, chars: int = 6000, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines, size = [], 0
    while size < chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        lines.append(line)
        size += len(line) + 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def charlm(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real command; `env` adds variables to the environment, or removes those it maps to None."""
    env = {
        k: v
        for k, v in {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}.items()
        if v is not None
    }
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def tiny_args(corpus: Path) -> list[str]:
    return ["--config", TINY, "--corpus", str(corpus), "--device", "cpu", "--set", "train.epochs=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small run trained through the real command, with no --run-dir (it goes under runs/)."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = make_corpus(root / "lyrics.txt")
    result = charlm("train", *tiny_args(corpus), cwd=root)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (root / "runs").iterdir()
    return root, run_dir, result


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(trained):
    _, run_dir, result = trained
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for key in ("train_loss", "train_ppl", "val_loss", "val_ppl", "grad_norm", "chars_per_s", "seconds"):
        assert all(key in r for r in records), key
    assert "epoch    2" in result.stdout and "val ppl" in result.stdout
    assert " - 分开" in result.stdout  # the greedy preview at the last epoch
    assert "precision fp32 (train.precision=fp32 as asked)" in result.stdout  # tiny.yaml asks for fp32


@pytest.mark.slow
def test_train_prints_what_auto_chose_and_saves_it_in_the_run_config(tmp_path):
    corpus = make_corpus(tmp_path / "lyrics.txt", chars=2000)
    result = charlm(
        "train",
        *tiny_args(corpus),
        "--set",
        "train.epochs=1",
        "--set",
        "train.precision=auto",
        "--run-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    # which one depends on this machine's CPU: bf16 with AVX-512 BF16 or AMX, fp32 without; the line says why
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("precision ")]
    chosen = line.split()[1]
    assert chosen in ("bf16", "fp32") and "(auto: this CPU" in line
    assert f"  precision: {chosen}\n" in (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")


@pytest.mark.slow
def test_generate_uses_latest_run_streams_and_is_repeatable(trained):
    root, _, _ = trained
    first = charlm("generate", "--prefix", "分开", "--length", "30", "--temperature", "0.8", "--seed", "1", cwd=root)
    again = charlm("generate", "--prefix", "分开", "--length", "30", "--temperature", "0.8", "--seed", "1", cwd=root)
    assert first.returncode == 0, first.stderr
    text = first.stdout.rstrip("\n")
    assert text.startswith("分开") and len(text) == 32
    assert first.stdout == again.stdout
    many = charlm("generate", "--prefix", "爱", "-n", "10", "--num-samples", "3", "--seed", "2", cwd=root)
    assert many.stdout.count("--- sample") == 3


def test_generate_with_compact_weights(trained, capsys):
    _, run_dir, _ = trained
    for weights in ("bf16", "int8"):
        code, out, err = run_main(
            capsys,
            "generate",
            "-r",
            str(run_dir),
            "-p",
            "分开",
            "-n",
            "25",
            "--weights",
            weights,
            "--seed",
            "1",
            "--json",
        )
        assert code == 0, err
        record = json.loads(out)
        assert record["generated"] == 25 and record["options"]["weights"] == weights


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_generate_json_stop_and_bits_per_char(trained, capsys):
    _, run_dir, _ = trained
    code, out, err = run_main(
        capsys,
        "generate",
        "-r",
        str(run_dir),
        "-p",
        "分开",
        "-n",
        "80",
        "--temperature",
        "1",
        "--seed",
        "3",
        "--num-samples",
        "3",
        "--stop",
        "\\n",
        "--json",
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["sample"] for r in records] == [1, 2, 3]
    for r in records:
        assert set(r) == {"sample", "prefix", "text", "generated", "stop", "bits_per_char", "options"}
        assert r["prefix"] == "分开" and r["text"].startswith("分开") and len(r["text"]) == 2 + r["generated"]
        assert (r["stop"] == "\n") == r["text"].endswith("\n") and "\n" not in r["text"][:-1]
        assert 0 < r["bits_per_char"] < 20
        assert r["options"]["stop"] == ["\n"] and r["options"]["seed"] == 3 and r["options"]["length"] == 80
    assert any(r["stop"] for r in records)


def test_generate_streams_until_a_stop_text_and_says_so(trained, capsys):
    _, run_dir, _ = trained
    code, out, err = run_main(
        capsys, "generate", "-r", str(run_dir), "-p", "分开", "-n", "200", "--temperature", "0", "--stop", " "
    )
    assert code == 0, err
    written = out[:-1]  # the text, then a line break
    assert written.startswith("分开") and written.endswith(" ") and " " not in written[:-1]
    assert err.strip() == f"stopped at ' ' after {len(written) - 2} characters"


def test_generate_prefix_file_and_no_prefix(trained, capsys, tmp_path):
    _, run_dir, _ = trained
    args = ["generate", "-r", str(run_dir), "-n", "40", "--seed", "5"]
    (tmp_path / "p.txt").write_text("爱情\n", encoding="utf-8")
    from_file = run_main(capsys, *args, "--prefix-file", str(tmp_path / "p.txt"))
    assert from_file[0] == 0 and from_file[1] == run_main(capsys, *args, "--prefix", "爱情\n")[1]
    (tmp_path / "nl.txt").write_text("\n", encoding="utf-8")
    after_newline = run_main(capsys, *args, "--prefix-file", str(tmp_path / "nl.txt"))[1]
    code, out, err = run_main(capsys, *args)  # no prefix: it starts at a new line
    assert code == 0, err
    assert out == after_newline[1:] and len(out) == 41


def test_generate_beam_search_returns_the_best_beams(trained, capsys):
    _, run_dir, _ = trained
    args = ["generate", "-r", str(run_dir), "-p", "爱", "-n", "12", "--beam", "4"]
    code, out, err = run_main(capsys, *args, "--num-samples", "3")
    assert code == 0, err
    assert out.count("--- sample") == 3 and out == run_main(capsys, *args, "--num-samples", "3")[1]
    code, out, _ = run_main(capsys, *args, "--num-samples", "3", "--json")
    bits = [json.loads(line)["bits_per_char"] for line in out.splitlines()]
    assert bits == sorted(bits) and len(set(bits)) == 3  # best first
    greedy = run_main(capsys, "generate", "-r", str(run_dir), "-p", "爱", "-n", "12", "--temperature", "0", "--json")
    # the greedy text's bits are summed by the sampling step, the beam's by the beam search: the same text can
    # differ in the last float32 digits (1.41250285 against 1.41250291 on one CPU), so compare at 1e-6
    assert json.loads(greedy[1])["bits_per_char"] >= bits[0] - 1e-6


@pytest.mark.slow
def test_perplexity_reproduces_best_val_in_metrics(trained):
    root, run_dir, _ = trained
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = min(r["val_ppl"] for r in records)
    result = charlm("perplexity", "--split", "val", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    # the network's figures at the top (the mix's beside them, under "mix"), and with --no-mix alone
    assert set(scored) == {"nats_per_char", "bits_per_char", "perplexity", "chars", "mix"}
    assert f"{scored['perplexity']:.3g}" == f"{best:.3g}"
    alone = json.loads(charlm("perplexity", "--split", "val", "--json", "--no-mix", cwd=root).stdout)
    assert alone == {key: scored[key] for key in ("nats_per_char", "bits_per_char", "perplexity", "chars")}
    text = charlm("perplexity", "--run-dir", str(run_dir), "--file", str(root / "lyrics.txt"), cwd=root)
    assert text.returncode == 0, text.stderr
    assert "bits/char" in text.stdout and "perplexity" in text.stdout


def test_help_has_examples():
    for command in ("train", "generate", "perplexity"):
        result = subprocess.run(
            [sys.executable, "-m", "charlm", command, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        )
        assert result.returncode == 0
        assert "Example: charlm" in result.stdout


# --- bad input: one line, exit code 2, no traceback, nothing written -----------------------------------


def _cases(tmp: Path, run_dir: Path) -> list[tuple[str, list[str], str]]:
    """(id, argv, a fragment the one-line message must contain)."""
    good = make_corpus(tmp / "good.txt", seed=1)  # not the text the run was trained on
    empty = tmp / "empty.txt"
    empty.write_text("")
    binary = tmp / "binary.txt"
    binary.write_bytes(b"abc\x00\x01\x02" * 50)
    latin1 = tmp / "latin1.txt"
    latin1.write_bytes("café olé ".encode("latin-1") * 50)
    short = tmp / "short.txt"
    short.write_text("分开不分开" * 10, encoding="utf-8")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("train:\n  lr: [1, 2\n")
    no_ckpt = tmp / "empty_run"
    no_ckpt.mkdir()
    hostile = tmp / "hostile_run"  # a run folder whose checkpoint would run code if unpickled
    shutil.copytree(run_dir, hostile)
    marker = tmp / "pwned"
    with open(hostile / "best.pt", "wb") as f:
        pickle.dump(Payload(marker), f)
    torn = tmp / "torn_run"  # a checkpoint cut in half
    shutil.copytree(run_dir, torn)
    (torn / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:5000])
    not_mapping = tmp / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    base = ["train", "--config", TINY, "--run-dir", str(tmp / "new_run")]
    gen = ["generate", "--run-dir", str(run_dir), "--prefix", "分"]
    return [
        ("missing corpus", base + ["--corpus", str(tmp / "nope.txt")], "neither a file"),
        ("empty corpus", base + ["--corpus", str(empty)], "empty"),
        ("binary corpus", base + ["--corpus", str(binary)], "binary"),
        ("non-utf8 corpus", base + ["--corpus", str(latin1)], "not UTF-8"),
        ("short corpus", base + ["--corpus", str(short)], "needs at least 136"),
        ("invalid yaml", ["train", "--config", str(bad_yaml)], "not valid YAML"),
        ("missing config", ["train", "--config", str(tmp / "none.yaml")], "not found"),
        ("unknown key", base + ["--set", "train.lrr=0.1"], "did you mean train.lr"),
        ("unknown section", base + ["--set", "trian.lr=0.1"], "did you mean train"),
        ("negative lr", base + ["--set", "train.lr=-1"], "train.lr must be positive"),
        ("huge seed", base + ["--set", "train.seed=99999999999999999999"], "2^63"),
        ("huge generate seed", gen + ["--temperature", "1", "--seed", "99999999999999999999999"], "seed must be in"),
        ("name as a path", base + ["--set", "name=../../escaped"], "it names the run folder"),
        ("alias bomb", base + ["--set", "sample.prefixes=[&a x, *a]"], "anchors or aliases"),
        ("folder as config", ["train", "--config", str(tmp)], "not a regular file"),
        ("folder as file", ["perplexity", "--run-dir", str(run_dir), "--file", str(tmp)], "not a regular file"),
        ("zero num_steps", base + ["--set", "train.num_steps=0"], "train.num_steps"),
        ("dropout 1", base + ["--set", "model.dropout=1.0"], "model.dropout"),
        ("unknown kind", base + ["--set", "model.kind=lstn"], "did you mean lstm"),
        ("wrong type", base + ["--set", "train.epochs=many"], "train.epochs must be int"),
        ("override syntax", base + ["--set", "train.lr"], "KEY=VALUE"),
        ("absent cuda", base + ["--corpus", str(good), "--device", "cuda"], "no CUDA GPU"),
        ("unknown flag", ["train", "--epochz", "3"], "No such option"),
        ("missing run folder", ["generate", "--run-dir", str(tmp / "nowhere"), "--prefix", "分"], "not found"),
        ("run without checkpoint", ["generate", "--run-dir", str(no_ckpt), "--prefix", "分"], "not found"),
        ("empty prefix", ["generate", "--run-dir", str(run_dir), "--prefix", ""], "prefix is empty"),
        ("unseen prefix", ["generate", "--run-dir", str(run_dir), "--prefix", "分开😀"], "'😀'"),
        ("bad top-p", ["generate", "--run-dir", str(run_dir), "--prefix", "分", "--top-p", "0"], "top-p must be in"),
        ("bad split", ["perplexity", "--run-dir", str(run_dir), "--split", "dev"], "split 'dev' is not valid"),
        ("missing file", ["perplexity", "--run-dir", str(run_dir), "--file", str(tmp / "x.txt")], "not found"),
        ("no test split", ["perplexity", "--run-dir", str(run_dir), "--split", "test"], "no test split"),
        ("unknown built-in", ["data", "fetch", "../../etc/passwd"], "unknown built-in"),
        ("hostile checkpoint", ["generate", "--run-dir", str(hostile), "--prefix", "分"], "refusing to load"),
        ("truncated checkpoint", ["perplexity", "--run-dir", str(torn)], "not a readable checkpoint"),
        (
            "split and file",
            ["perplexity", "--run-dir", str(run_dir), "--split", "val", "--file", str(good)],
            "not both",
        ),
        ("bad device", ["generate", "--run-dir", str(run_dir), "--prefix", "分", "--device", "tpu"], "not valid"),
        (
            "bad checkpoint name",
            ["generate", "--run-dir", str(run_dir), "--prefix", "分", "--checkpoint", "first"],
            "use best or last",
        ),
        (
            "negative length",
            ["generate", "--run-dir", str(run_dir), "--prefix", "分", "--length", "-1"],
            "length must be >= 0",
        ),
        ("prefix and prefix file", gen + ["--prefix-file", str(good)], "not both"),
        (
            "missing prefix file",
            ["generate", "--run-dir", str(run_dir), "--prefix-file", str(tmp / "p.txt")],
            "not found",
        ),
        ("non-utf8 prefix file", ["generate", "--run-dir", str(run_dir), "--prefix-file", str(latin1)], "not UTF-8"),
        ("empty prefix file", ["generate", "--run-dir", str(run_dir), "--prefix-file", str(empty)], "prefix is empty"),
        ("unseen stop text", gen + ["--stop", "分😀"], "could never be emitted"),
        ("empty stop text", gen + ["--stop", ""], "stop text is empty"),
        ("unknown weights", gen + ["--weights", "fp16"], "weights must be fp32, bf16 or int8, not 'fp16'"),
        ("bad stop escape", gen + ["--stop", "\\q"], "a backslash starts"),
        ("negative beam", gen + ["--beam", "-1"], "beam must be >= 0"),
        ("more samples than beams", gen + ["--beam", "2", "--num-samples", "3"], "must be <= beam (2)"),
        ("beam and top-k", gen + ["--beam", "2", "--top-k", "5"], "drop --top-k"),
        ("zero repetition penalty", gen + ["--repetition-penalty", "0"], "repetition-penalty must be > 0"),
        (
            "nan repetition penalty",
            gen + ["--repetition-penalty", "nan"],
            "repetition-penalty must be a finite number, got nan",
        ),
        ("zero repetition window", gen + ["--repetition-window", "0"], "repetition-window must be >= 1"),
        ("config not a mapping", ["train", "--config", str(not_mapping)], "must be a mapping"),
        (
            "run folder in use",
            ["train", "--config", TINY, "--corpus", str(good), "--run-dir", str(run_dir)],
            "already holds a run",
        ),
        ("resume without folder", ["train", "--resume"], "--resume needs --run-dir"),
        ("resume empty folder", ["train", "--resume", "--run-dir", str(no_ckpt)], "not found"),
        (
            "resume changed shape",
            ["train", "--resume", "--run-dir", str(run_dir), "--set", "model.hidden_size=8"],
            "changed model.hidden_size",
        ),
        (
            "resume changed corpus",
            ["train", "--resume", "--run-dir", str(run_dir), "--corpus", str(good)],
            "checksum differs",
        ),
        ("zero eval batch", base + ["--set", "train.eval_batch_size=0"], "train.eval_batch_size"),
        ("bad nonfinite policy", base + ["--set", "train.on_nonfinite=ignore"], "train.on_nonfinite"),
        ("bad precision", base + ["--set", "train.precision=fp8"], "train.precision = 'fp8' is not valid"),
        (
            "precision keys disagree",
            base + ["--set", "train.bf16=true", "--set", "train.precision=fp16"],
            "train.bf16=true and train.precision='fp16' disagree",
        ),
    ]


class Payload:
    """Unpickling this would create a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_inputs_fail_cleanly(trained, tmp_path, capsys):
    _, run_dir, _ = trained
    before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    failures = []
    cases = _cases(tmp_path, run_dir)
    assert len(cases) >= 30
    for case, argv, fragment in cases:
        capsys.readouterr()
        code = main(argv)
        captured = capsys.readouterr()
        message = captured.err.strip()
        if code != 2 or "\n" in message or "Traceback" in captured.err + captured.out or fragment not in message:
            failures.append(f"{case}: exit {code}, stderr {captured.err!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "new_run").exists()  # nothing half-written
    assert {p: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def offline_env(tmp_path: Path) -> dict:
    """No CHARLM_DATA_DIR, an empty HOME, and every download sent to a proxy where nothing listens."""
    (tmp_path / "home").mkdir()
    dead = "http://127.0.0.1:9"
    return {
        "CHARLM_DATA_DIR": None,
        "XDG_CACHE_HOME": None,
        "HOME": str(tmp_path / "home"),
        "no_proxy": None,
        "NO_PROXY": None,
        **dict.fromkeys(["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"], dead),
    }


def test_data_list_says_built_in_or_download_and_cached(builtin_cache, tmp_path):
    result = charlm("data", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 4}
    assert {"jaychou", "tinyshakespeare", "timemachine", "ptb-char"} <= set(rows)
    for name in ("jaychou", "tinyshakespeare", "timemachine"):
        assert "built in (ships with charlm)" in rows[name]
    assert "download, cached" in rows["ptb-char"]  # the shared folder holds the PTB files


def test_data_list_json_with_an_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path))
    assert main(["data", "list", "--json"]) == 0
    corpora = {c["name"]: c for c in json.loads(capsys.readouterr().out)["corpora"]}
    assert {name: (c["source"], c["cached"]) for name, c in corpora.items()} == {
        "jaychou": ("package", None),
        "tinyshakespeare": ("package", None),
        "timemachine": ("package", None),
        "ptb-char": ("download", False),
    }


@pytest.mark.slow
def test_default_train_runs_offline_from_the_shipped_lyrics(tmp_path):
    """make install && charlm train on a machine with no network: the default config, corpus jaychou."""
    result = charlm(
        "train",
        "--set",
        "train.epochs=1",
        "--set",
        "data.max_chars=8000",
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path / "run"),
        cwd=tmp_path,
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "charlm jaychou: vocab" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
    assert (tmp_path / "run" / "best.pt").is_file()
    assert not (tmp_path / "home" / ".cache" / "charlm" / "jaychou_lyrics.txt.zip").exists()  # not downloaded


def test_fetch_of_a_shipped_corpus_verifies_it_offline(tmp_path):
    result = charlm("data", "fetch", "tinyshakespeare", cwd=tmp_path, env=offline_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "tinyshakespeare.txt.gz ok (ships with charlm: nothing to download)" in result.stdout
    assert list((tmp_path / "home").iterdir()) == []


def test_fetch_of_a_damaged_shipped_corpus_is_one_line(tmp_path, monkeypatch, capsys):
    from charlm.data import builtins as data_builtins

    (tmp_path / "timemachine.txt.gz").write_bytes(b"not gzip")  # a stand-in for a damaged installation
    monkeypatch.setattr(data_builtins, "packaged_file", lambda remote: tmp_path / remote.packaged)
    assert main(["data", "fetch", "timemachine"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timemachine.txt.gz cannot be read" in err and "reinstall charlm" in err


def test_offline_fetch_is_one_line_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir()  # CHARLM_DATA_DIR must name an existing folder
    monkeypatch.setenv("CHARLM_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: offline for sure
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # PTB's server is plain http
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    result = charlm("data", "fetch", "ptb-char", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "ptb.char.train.txt" in result.stderr and "CHARLM_DATA_DIR" in result.stderr
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []  # no partial download left behind
