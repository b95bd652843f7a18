"""Exported model folders: the files, the model card, bit-identical use, tied weights, bad folders, and an
export stopped by a signal or killed (what it leaves, and who cleans it up)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import SLOW_FSYNC
from safetensors.torch import load_file, save_file

import charlm
from charlm.cli.main import main
from charlm.config import load_config
from charlm.export.model_folder import export_model
from charlm.training.setup import train

REPO = Path(__file__).resolve().parents[1]
TEXT = "分开不分开 我想就这样牵着你的手不放开\n爱可不可以简简单单没有伤害\n" * 40
TIED = ("model.kind=lstm", "model.embed_size=32", "model.hidden_size=32", "model.tie_weights=true")

pytestmark = pytest.mark.usefixtures("single_thread")


def run(root: Path, name: str, *overrides: str) -> Path:
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    config = load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.corpus={corpus}", "train.device=cpu", "sample.preview_every=0", "train.epochs=2", *overrides],
    )
    train(config, root / name)
    return root / name


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A tied-weights LSTM run and its export."""
    root = tmp_path_factory.mktemp("export")
    run_dir = run(root, "run", *TIED)
    return run_dir, export_model(run_dir, root / "model")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_folder_holds_weights_config_vocab_and_a_card(exported):
    run_dir, model = exported
    names = sorted(p.name for p in model.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    meta = json.loads((model / "config.json").read_text(encoding="utf-8"))
    saved = charlm.load(run_dir).checkpoint
    assert meta["model"]["hidden_size"] == 32 and meta["vocab_size"] == len(saved.vocab)
    assert meta["corpus"]["sha256"] == saved.corpus_sha256 and meta["checkpoint"]["which"] == "best"
    assert (model / "vocab.json").read_text(encoding="utf-8") == (run_dir / "vocab.json").read_text(encoding="utf-8")
    weights = load_file(model / "model.safetensors")
    assert "head.weight" not in weights and "embedding.weight" in weights  # tied: stored once
    tokenizers = pytest.importorskip("tokenizers", reason="tokenizers is not installed: pip install tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(model / "tokenizer.json"))  # one id per character, charlm's
    assert tokenizer.get_vocab() == {char: i for i, char in enumerate(saved.vocab)}
    config = json.loads((model / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["clean_up_tokenization_spaces"] is False


def test_the_model_card_says_what_how_good_and_how_made(exported):
    run_dir, model = exported
    card = (model / "README.md").read_text(encoding="utf-8")
    loaded = charlm.load(model)
    best = loaded.checkpoint.train_state.last_record["val_loss"]
    assert loaded.checkpoint.corpus_sha256 in card
    assert f"{best:.4f} nats/char" in card and f"{loaded.net.num_parameters():,} parameters" in card
    assert f"charlm export --run-dir {run_dir} --out {model} --checkpoint best" in card
    assert "tie_weights: true" in card  # the training config
    sample = card.split("```text\n")[1].split("\n```")[0]
    assert sample == loaded.generate("分开", length=300, temperature=0.8, seed=1)  # the command shown above it


def test_loading_restores_the_tie(exported):
    _, model = exported
    net = charlm.load(model).net
    assert net.head.weight is net.embedding.weight
    net.train()
    logits, _ = net(torch.zeros(2, 5, dtype=torch.long))
    logits.sum().backward()
    with torch.no_grad():
        net.embedding.weight.add_(net.embedding.weight.grad)
    assert torch.equal(net.head.weight, net.embedding.weight)  # still one parameter after an update


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--prefix", "分开", "--length", "80", "--temperature", "0.8", "--seed", "3"],
        ["generate", "--prefix", "我想", "--length", "40", "--num-samples", "3", "--top-k", "5", "--seed", "1"],
        ["generate", "--prefix", "分", "--length", "60", "--temperature", "0"],
        # the network's figures (the mix of a model folder is kept in the user cache: its lines name it)
        ["perplexity", "--json", "--device", "cpu", "--no-mix"],
        ["perplexity", "--split", "train", "--json", "--device", "cpu", "--no-mix"],
    ],
)
def test_the_folder_gives_exactly_what_the_run_folder_gives(exported, capsys, argv):
    run_dir, model = exported
    from_run = cli(capsys, *argv, "--run-dir", str(run_dir))
    from_model = cli(capsys, *argv, "--model", str(model))
    assert from_run[0] == 0 and from_run == from_model and from_run[1].strip()


def test_a_file_scores_the_same_and_the_header_names_the_folder(exported, capsys, tmp_path):
    run_dir, model = exported
    text = tmp_path / "new.txt"
    text.write_text("我想就这样牵着你的手\n爱可不可以\n" * 5, encoding="utf-8")
    runs = cli(capsys, "perplexity", "--file", str(text), "--run-dir", str(run_dir), "--device", "cpu", "--no-mix")
    models = cli(capsys, "perplexity", "--file", str(text), "--model", str(model), "--device", "cpu", "--no-mix")
    assert runs[1].splitlines()[1:] == models[1].splitlines()[1:]
    assert models[1].startswith(f"{model} (best, epoch")


def test_export_refuses_an_existing_folder_and_fills_an_empty_one(exported, tmp_path, capsys):
    run_dir, model = exported
    before = {p.name: p.stat().st_mtime_ns for p in model.iterdir()}
    code, _, err = cli(capsys, "export", "--run-dir", str(run_dir), "--out", str(model))
    assert code == 2 and "already exists" in err and {p.name: p.stat().st_mtime_ns for p in model.iterdir()} == before
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = cli(capsys, "export", "--run-dir", str(run_dir), "--out", str(empty), "--checkpoint", "last")
    assert code == 0 and f"wrote {empty}/" in out and (empty / "model.safetensors").is_file()
    assert json.loads((empty / "config.json").read_text())["checkpoint"]["which"] == "last"
    assert cli(capsys, "export", "--run-dir", str(run_dir))[0] == 2  # --out is needed


def damaged_folders(model: Path, other: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a damaged copy of the model folder, a fragment of its one-line error)."""
    cases: dict[str, tuple[Path, str]] = {}

    def copy(name: str) -> Path:
        target = tmp / name
        shutil.copytree(model, target)
        return target

    for missing in ("model.safetensors", "config.json", "vocab.json"):
        folder = copy(f"no-{missing}")
        (folder / missing).unlink()
        cases[f"missing {missing}"] = (folder, f"has no {missing}")
    folder = copy("tampered")
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    meta["model"]["hidden_size"] = meta["model"]["embed_size"] = 48
    (folder / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    cases["tampered config.json"] = (folder, "describes (lstm 1x48, embedding input")
    folder = copy("gru-weights")
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    cases["another architecture"] = (folder, "does not hold the model config.json describes")
    folder = copy("extra-tensor")
    weights = load_file(folder / "model.safetensors")
    save_file({**weights, "decoder.weight": torch.zeros(3)}, folder / "model.safetensors")
    cases["a foreign tensor"] = (folder, "has decoder.weight")
    folder = copy("garbage")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    cases["not safetensors"] = (folder, "not a readable safetensors file")
    folder = copy("short-vocab")
    (folder / "vocab.json").write_text(json.dumps({"chars": ["a", "b"]}), encoding="utf-8")
    cases["vocabulary of another export"] = (folder, "has 2 characters")
    folder = copy("not-json")
    (folder / "config.json").write_text("{", encoding="utf-8")
    cases["config.json not JSON"] = (folder, "not readable JSON")
    folder = copy("bad-value")
    meta["model"]["kind"] = "transformer"
    (folder / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    cases["an invalid config value"] = (folder, "model.kind")
    return {**cases, **tampered_files(copy, meta)}


VOCAB_TAMPERING = {  # vocab.json text -> a fragment of the one-line error
    '{"chars": [1, 2, 3]}': "entry 0 is 1, not one character",
    '{"chars": ["ab"]}': "entry 0 is 'ab', not one character",
    '{"chars": ["a", "a"]}': "entry 1 ('a') is listed twice",
    '{"chars": ["a", "\\ud800"]}': "lone surrogate",
    '{"chars": []}': "its list of characters is empty",
    '{"chars": "abc"}': "not a list but 'abc'",
    '["a", "b"]': 'not an object with a "chars" list',
    '{"chars": [["a"]]}': "not one character",
    '{"chars": ["a", null]}': "entry 1 is None",
    '{"chars": ["a", NaN]}': "holds NaN",
    '{"chars": [': "not valid JSON",
    "[" * 100_000: "nested too deeply",
}
CONFIG_TAMPERING = {  # (key path, value as JSON text) -> fragment
    (("vocab_size",), '"12"'): "'12' is not a whole number",
    (("vocab_size",), "12.0"): "12.0 is not a whole number",
    (("vocab_size",), "true"): "True is not a whole number",
    (("vocab_size",), "0"): "0 is not a whole number >= 1",
    (("checkpoint", "epoch"), "-1"): "-1 is not a whole number >= 0",
    (("checkpoint", "best_loss"), "NaN"): "holds NaN",
    (("checkpoint", "best_loss"), "-3.5"): "best_loss -3.5 is not a loss",
    (("checkpoint", "best_loss"), '"low"'): "best_loss 'low' is not a loss",
    (("checkpoint", "eval"), "[1]"): "checkpoint.eval an object",
    (("corpus", "sha256"), "12345"): "corpus.sha256 must be text",
    (("corpus",), '"x"'): "string indices",
    (("version",), '"1"'): "is model folder version '1'",
}


def tampered_files(copy, meta: dict) -> dict[str, tuple[Path, str]]:
    """Model folders whose vocab.json or config.json was edited, or replaced by something that is not a file."""
    cases = {}
    for n, (text, fragment) in enumerate(VOCAB_TAMPERING.items()):
        folder = copy(f"vocab-{n}")
        (folder / "vocab.json").write_text(text, encoding="utf-8")
        cases[f"vocab.json {text[:30]}"] = (folder, fragment)
    for n, ((keys, value), fragment) in enumerate(CONFIG_TAMPERING.items()):
        folder = copy(f"config-{n}")
        edited = json.loads(json.dumps(meta))
        edited["model"]["kind"] = "lstm"
        target = edited
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = "VALUE"
        (folder / "config.json").write_text(json.dumps(edited).replace('"VALUE"', value), encoding="utf-8")
        cases[f"config.json {keys}={value}"] = (folder, fragment)
    for name, limit in (("vocab.json", 32), ("config.json", 4), ("model.safetensors", 16)):
        folder = copy(f"huge-{name}")
        with open(folder / name, "wb") as f:
            f.truncate((limit + 1) * 1024 * 1024)  # sparse: the limit is checked before anything is read
        cases[f"huge {name}"] = (folder, f"{name} ")
    if hasattr(os, "mkfifo"):
        for name in ("vocab.json", "config.json", "model.safetensors"):
            folder = copy(f"fifo-{name}")
            (folder / name).unlink()
            os.mkfifo(folder / name)  # opened without waiting for a writer, then refused
            cases[f"{name} a FIFO"] = (folder, "not a regular file (a FIFO)")
            folder = copy(f"zero-{name}")
            (folder / name).unlink()
            (folder / name).symlink_to("/dev/zero")
            cases[f"{name} -> /dev/zero"] = (folder, "not a regular file (a device)")
    return cases


def test_bad_model_folders_are_one_line_exit_2(exported, tmp_path, capsys):
    _, model = exported
    other = export_model(run(tmp_path, "gru-run", "model.hidden_size=32"), tmp_path / "gru-model")  # tiny: a GRU
    failures = []
    for case, (folder, fragment) in damaged_folders(model, other, tmp_path).items():
        for argv in (
            ["generate", "--prefix", "分", "--model", str(folder)],
            ["perplexity", "--model", str(folder)],
            ["train", "--init-from", str(folder), "--run-dir", str(tmp_path / "never")],
        ):
            code, out, err = cli(capsys, *argv)
            if code != 2 or fragment not in err or str(folder) not in err or err.count("\n") != 1 or out:
                failures.append(f"{case} / {argv[0]}: exit {code}, {err!r}")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["generate", "--prefix", "分", "--model", "{model}", "--checkpoint", "last"], "holds one checkpoint"),
        (["generate", "--prefix", "分", "--model", "{model}", "--run-dir", "{run}"], "not both"),
        (["perplexity", "--model", "{run}"], "is not a model folder"),
        (["perplexity", "--model", "{missing}"], "model folder"),
    ],
)
def test_misused_model_options_are_one_line(exported, tmp_path, capsys, argv, fragment):
    run_dir, model = exported
    filled = [a.format(model=model, run=run_dir, missing=tmp_path / "nope") for a in argv]
    code, _, err = cli(capsys, *filled)
    assert code == 2 and fragment in err and err.count("\n") == 1


def test_export_help_has_an_example(capsys):
    assert main(["export", "--help"]) == 0
    assert "Example: charlm export --run-dir" in capsys.readouterr().out


def slow_export(run_dir: Path, out: Path) -> subprocess.Popen:
    """`charlm export --out` in its own process, stopped on its way: returns once the temp folder exists."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_FSYNC, "5", "export", "--run-dir", str(run_dir), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".charlm-tmp-") for p in out.parent.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the export did not start writing"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", [s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", 0)) if s])
def test_a_stop_signal_during_export_leaves_nothing(exported, tmp_path, signum):
    run_dir, _ = exported
    proc = slow_export(run_dir, tmp_path / "model")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert err.count("\n") == 1 and err.startswith("interrupted: ") and "nothing left behind" in err, err
    assert list(tmp_path.iterdir()) == []  # no temp folder, no half model folder


def test_what_sigkill_left_is_named_by_runs_and_removed_by_the_next_export(exported, tmp_path, capsys):
    run_dir, _ = exported
    proc = slow_export(run_dir, tmp_path / "model")
    proc.kill()  # no chance to clean up
    proc.communicate(timeout=60)
    (debris,) = list(tmp_path.iterdir())
    assert debris.name.startswith(f".charlm-tmp-{proc.pid}-") and debris.is_dir()
    code, _, err = cli(capsys, "runs", "--root", str(tmp_path))
    assert code == 0 and f"warning: {debris} was left by an interrupted charlm write (process {proc.pid})" in err
    assert debris.exists()  # runs only reads
    code, _, err = cli(capsys, "export", "--run-dir", str(run_dir), "--out", str(tmp_path / "model"))
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert cli(capsys, "runs", "--root", str(tmp_path))[2].count("left by an interrupted") == 0


def test_a_page_write_removes_what_a_killed_page_write_left(exported, tmp_path, capsys):
    """A temp file of an atomic write whose process died (SIGKILL mid-write), named as charlm names it."""
    from charlm.files import fsio

    run_dir, _ = exported
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that has ended
    debris = tmp_path / f".charlm-tmp-{proc.pid}-{fsio.host_tag()}-demo.html.k2j4h5.tmp"
    debris.write_text("<!doctype html><html>half a pa")
    code, _, err = cli(capsys, "runs", "--root", str(tmp_path))
    assert str(debris) in err
    code, _, err = cli(capsys, "export", "--run-dir", str(run_dir), "--html", str(tmp_path / "demo.html"))
    assert code == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["demo.html"]


def edited_copy(model: Path, target: Path, *, config=None, weights=None, raw: bytes | None = None) -> Path:
    """A copy of the model folder with config.json's model section changed (`config`: key -> value), its weights
    replaced (`weights`: name -> tensor, or a function of the old ones) or model.safetensors replaced by `raw`."""
    shutil.copytree(model, target)
    if config:
        meta = json.loads((target / "config.json").read_text(encoding="utf-8"))
        meta["model"].update(config)
        (target / "config.json").write_text(json.dumps(meta), encoding="utf-8")
    if weights is not None:
        old = load_file(target / "model.safetensors")
        save_file(weights(old) if callable(weights) else weights, target / "model.safetensors")
    if raw is not None:
        (target / "model.safetensors").write_bytes(raw)
    return target


def refused(capsys, folder: Path, fragment: str, code: int = 2) -> float:
    """generate and perplexity --json on `folder`: one line naming `fragment`, nothing on stdout; the seconds."""
    started = time.monotonic()
    for argv in (["generate", "--model", str(folder), "-n", "5"], ["perplexity", "--model", str(folder), "--json"]):
        got, out, err = cli(capsys, *argv)
        assert (got, out) == (code, "") and fragment in err and err.count("\n") == 1, (argv, got, err)
        assert "unexpected" not in err and "Traceback" not in err
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"num_layers": 100_000}, "model.num_layers must be in 1..1,024, got 100000"),
        ({"num_layers": 1025}, "model.num_layers must be in 1..1,024"),
        ({"num_layers": 1024}, "it lacks rnn.weight_ih_l1"),  # allowed, and refused by its weights at once
        ({"hidden_size": 10**9, "embed_size": 10**9}, "model.hidden_size must be in 1..65,536, got 1000000000"),
        ({"hidden_size": 65_537, "embed_size": 65_537}, "model.hidden_size must be in 1..65,536"),
        ({"hidden_size": 65_536, "embed_size": 65_536}, "embedding.weight is ["),  # allowed: 137 GB it does not hold
        ({"embed_size": 2**40, "tie_weights": False}, "model.embed_size must be in 1..65,536"),
        ({"hidden_size": 1e9}, "model.hidden_size must be int"),
        ({"num_layers": -5}, "model.num_layers must be in 1..1,024, got -5"),
    ],
)
def test_a_config_json_of_absurd_sizes_is_refused_before_anything_is_built(
    exported, tmp_path, capsys, change, fragment
):
    _, model = exported
    seconds = refused(capsys, edited_copy(model, tmp_path / "m", config=change), fragment)
    assert seconds < 30  # was 180 s of building 100,000 layers


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("sparse 20 GB", "is not a readable safetensors file (not a safetensors file"),
        ("a header claiming 20 GB", "embedding.weight is [100000000, 50]"),
        ("a header claiming the right tensors and a file 20 GB long", "bytes, where its header describes"),
        ("a header longer than the file", "a header of"),
        ("the right header, the data cut short", "bytes, where its header describes"),
        ("the right header, bytes appended", "bytes, where its header describes"),
        ("offsets that overlap", "do not tile the data"),
        ("offsets of the wrong length", "where its shape and dtype make"),
        ("an unknown dtype", "unknown dtype 'Q9'"),
        ("a shape of text", "not a list of whole numbers"),
        ("a header that is a list", "its header is not a JSON object"),
        ("NaN in the header", "holds NaN"),
    ],
)
def test_weights_are_judged_by_their_header_before_a_byte_of_data_is_read(exported, tmp_path, capsys, damage, fragment):
    """model.safetensors is read only once its header matches config.json and its size the header: a sparse
    20 GB file, or a header claiming 20 GB, costs nothing (it was read into memory: 5.6 GB, then MemoryError)."""
    _, model = exported
    folder = edited_copy(model, tmp_path / "m")
    path = folder / "model.safetensors"
    weights = load_file(path)
    good = path.read_bytes()
    length = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + length])
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])  # not at 0
    entry = header[name]
    if damage == "sparse 20 GB":
        path.unlink()
        with open(path, "wb") as f:
            f.truncate(20 * 1024**3)
    elif damage == "a header claiming 20 GB":
        path.write_bytes(
            safetensors_bytes(
                {"embedding.weight": {"dtype": "F32", "shape": [10**8, 50], "data_offsets": [0, 2 * 10**10]}}
            )
        )
    elif damage == "a header claiming the right tensors and a file 20 GB long":
        with open(path, "r+b") as f:
            f.truncate(20 * 1024**3)
    elif damage == "a header longer than the file":
        path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    elif damage == "the right header, the data cut short":
        path.write_bytes(good[:-10])
    elif damage == "the right header, bytes appended":
        path.write_bytes(good + b"\0" * 10)
    else:
        edits = {
            "offsets that overlap": ("data_offsets", [0, entry["data_offsets"][1] - entry["data_offsets"][0]]),
            "offsets of the wrong length": ("data_offsets", [entry["data_offsets"][0], entry["data_offsets"][1] - 4]),
            "an unknown dtype": ("dtype", "Q9"),
            "a shape of text": ("shape", ["4", 4]),
        }
        if damage in edits:
            key, value = edits[damage]
            header[name] = {**entry, key: value}
            text = json.dumps(header).encode()
        else:
            text = (
                b"[1, 2]"
                if damage == "a header that is a list"
                else json.dumps(header).encode().replace(b"[", b"[NaN, ", 1)
            )
        path.write_bytes(len(text).to_bytes(8, "little") + text + good[8 + length :])
    assert weights  # the folder was whole before
    refused(capsys, folder, fragment)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.bool, torch.int64, torch.int32, torch.float64])
def test_weights_of_a_type_the_model_does_not_compute_in_are_refused(exported, tmp_path, capsys, dtype):
    """int8 or bool weights loaded as a garbage model: the dtype must be a float type the model uses."""
    _, model = exported
    folder = edited_copy(model, tmp_path / "m", weights=lambda old: {k: v.to(dtype) for k, v in old.items()})
    name = {torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.int64: "I64", torch.int32: "I32"}
    refused(capsys, folder, f"is {name.get(dtype, 'F64')}, not F32 or F16 or BF16")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_as_the_model_they_round(exported, tmp_path, capsys, dtype):
    _, model = exported
    folder = edited_copy(model, tmp_path / "m", weights=lambda old: {k: v.to(dtype) for k, v in old.items()})
    loaded = charlm.load(folder)
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    assert cli(capsys, "generate", "--model", str(folder), "-n", "5", "--seed", "1")[0] == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["embedding.weight", "head.bias", "every weight"])
def test_weights_that_are_not_finite_are_refused_when_loaded(exported, tmp_path, capsys, value, where):
    """NaN weights scored NaN (perplexity --json printed NaN, which is not JSON) and sampled noise with exit 0."""
    _, model = exported

    def poisoned(old):
        return {k: torch.full_like(v, value) if where in (k, "every weight") else v for k, v in old.items()}

    folder = edited_copy(model, tmp_path / "m", weights=poisoned)
    refused(capsys, folder, "holds weights that are not finite numbers (NaN or infinity in")
    with pytest.raises(charlm.errors.CheckpointError, match="not finite"):
        charlm.load(folder)
