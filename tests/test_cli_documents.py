"""End-to-end: documents, items and vocabulary cleaning through the real command, every round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import TINY, charlm, make_corpus

SMALL = ["--set", "train.batch_size=4", "--set", "train.num_steps=16", "--device", "cpu"]


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    """A run on lyrics as lines, with state reset and rare characters as <unk>, trained then resumed."""
    root = tmp_path_factory.mktemp("documents")
    corpus = make_corpus(root / "lyrics.txt", chars=3000)
    settings = ["--config", TINY, "--corpus", str(corpus), *SMALL, "--set", "data.documents=lines"]
    settings += ["--set", "train.reset_state_at_documents=true", "--set", "data.min_char_count=100"]
    run = root / "run"
    first = charlm("train", *settings, "--set", "train.epochs=1", "--run-dir", str(run), cwd=root)
    assert first.returncode == 0, first.stderr
    resumed = charlm("train", *settings, "--set", "train.epochs=2", "--run-dir", str(run), "--resume", cwd=root)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after 1 epochs" in resumed.stdout + resumed.stderr
    return root, run, corpus


@pytest.mark.slow
def test_the_vocabulary_saves_the_end_and_unknown_symbols(lines_run):
    _, run, _ = lines_run
    chars = json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"]
    assert chars[-2:] == ["<eod>", "<unk>"]
    assert chars == [" ", "分", "开", "<eod>", "<unk>"]  # the rest appear under 100 times in training


@pytest.mark.slow
def test_items_one_per_line_and_as_json(lines_run):
    root, run, _ = lines_run
    plain = charlm("generate", "--run-dir", str(run), "--items", "4", "--length", "40", "--seed", "1", cwd=root)
    assert plain.returncode == 0, plain.stderr
    assert len(plain.stdout.splitlines()) == 4 and "<eod>" not in plain.stdout
    out = charlm("generate", "--run-dir", str(run), "--items", "3", "--json", "--prefix", "分开", cwd=root)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["item"] for r in records] == [1, 2, 3]
    assert all(r["text"].startswith("分开") and isinstance(r["ended"], bool) for r in records)
    assert all(r["options"]["num_samples"] == 3 for r in records)


def test_unknown_prefix_is_refused_by_default_and_mapped_when_asked(lines_run):
    root, run, _ = lines_run
    refused = charlm("generate", "--run-dir", str(run), "--prefix", "Ω分", "--length", "5", cwd=root)
    assert refused.returncode == 2 and "--unknown map" in refused.stderr
    mapped = charlm("generate", "--run-dir", str(run), "--prefix", "Ω分", "-n", "5", "--unknown", "map", cwd=root)
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.stdout.startswith("Ω分")


@pytest.mark.slow
def test_perplexity_reports_the_unknown_share(lines_run):
    root, run, _ = lines_run
    out = charlm("perplexity", "--run-dir", str(run), "--text", "love 分开 rain", "--json", cwd=root)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert 0 < result["unknown_share"] < 1  # "love" and "rain" hold rare letters
    text = charlm("perplexity", "--run-dir", str(run), cwd=root)
    assert "of the text is <unk>" in text.stdout


@pytest.mark.slow
def test_export_and_fine_tune_keep_the_symbols(lines_run):
    root, run, corpus = lines_run
    folder = root / "model"
    assert charlm("export", "--run-dir", str(run), "--out", str(folder), cwd=root).returncode == 0
    assert json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["chars"][-2:] == ["<eod>", "<unk>"]
    items = charlm("generate", "--model", str(folder), "--items", "2", "-n", "20", "--seed", "1", cwd=root)
    assert items.returncode == 0 and len(items.stdout.splitlines()) == 2
    other = Path(root / "other.txt")
    other.write_text("vivid words\nwoven lines\n" * 80, encoding="utf-8")
    child = root / "child"
    settings = ["--config", TINY, "--corpus", str(other), *SMALL, "--set", "data.documents=lines"]
    tuned = charlm(
        "train", *settings, "--set", "train.epochs=1", "--init-from", str(folder), "--run-dir", str(child), cwd=root
    )
    assert tuned.returncode == 0, tuned.stderr
    parent = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["chars"]
    chars = json.loads((child / "vocab.json").read_text(encoding="utf-8"))["chars"]
    assert chars[: len(parent)] == parent  # <eod> and <unk> keep their ids
    assert charlm("generate", "--run-dir", str(child), "--items", "2", "-n", "10", cwd=root).returncode == 0


@pytest.mark.slow
def test_a_stream_model_refuses_items_naming_the_fix(tmp_path):
    corpus = make_corpus(tmp_path / "lyrics.txt", chars=1500)
    run = tmp_path / "run"
    trained = charlm("train", "--config", TINY, "--corpus", str(corpus), *SMALL, "--set", "train.epochs=1",
                     "--run-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    out = charlm("generate", "--run-dir", str(run), "--items", "2", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "data.documents: lines, paragraphs or files" in out.stderr


@pytest.mark.slow
def test_a_plain_sample_resets_at_eod_and_prints_it_as_a_line_break(lines_run):
    root, run, _ = lines_run  # trained with train.reset_state_at_documents
    args = ("generate", "--run-dir", str(run), "--prefix", "分开", "-n", "150", "--seed", "2")
    plain = charlm(*args, cwd=root)
    assert plain.returncode == 0, plain.stderr
    record = json.loads(charlm(*args, "--json", cwd=root).stdout)
    assert "<eod>" in record["text"]  # the model ends its lines; --json names the symbol
    assert plain.stdout == record["text"].replace("<eod>", "\n") + "\n" and "<eod>" not in plain.stdout
    headed = charlm(*args, "--num-samples", "2", cwd=root).stdout
    assert "<eod>" not in headed and headed.count("--- sample") == 2


@pytest.mark.slow
def test_the_unknown_share_in_every_perplexity_output(lines_run, tmp_path):
    root, run, _ = lines_run
    text = ["--run-dir", str(run), "--text", "love 分开 rain"]
    share = json.loads(charlm("perplexity", *text, "--json", cwd=root).stdout)["unknown_share"]
    assert 0 < share < 1
    page = tmp_path / "page.html"
    for flags in (["--breakdown"], ["--html", str(page)]):
        out = charlm("perplexity", *text, *flags, "--json", cwd=root)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["unknown_share"] == share  # the same ids, the same count
    data = json.loads(page.read_text(encoding="utf-8").split('type="application/json">')[1].split("</script>")[0])
    assert data["figures"]["unknown_share"] == share
    for flags in (["--show"], ["--breakdown"]):
        out = charlm("perplexity", *text, *flags, cwd=root)
        assert out.returncode == 0 and f"unknown    {share:.2%} of the text is <unk>" in out.stdout, out.stderr


@pytest.mark.slow
def test_a_prefix_is_read_in_the_run_s_text_form(tmp_path):
    import charlm as api

    corpus = tmp_path / "upper.txt"
    corpus.write_text("Love In The Rain\nThe Rain Is Love\nIn Love\n" * 60, encoding="utf-8")
    run = tmp_path / "run"
    settings = ["--set", "data.documents=lines", "--set", "data.lowercase=true", "--set", "data.normalize=NFKC"]
    trained = charlm("train", "--config", TINY, "--corpus", str(corpus), *SMALL, *settings,
                     "--set", "train.epochs=1", "--run-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    chars = json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"]
    assert "T" not in chars and "t" in chars
    out = charlm("generate", "--run-dir", str(run), "--prefix", "ＴＨＥ", "-n", "10", "--seed", "1", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("the"), out.stderr  # NFKC, then lower case
    items = charlm("generate", "--run-dir", str(run), "--items", "2", "--prefix", "The", "-n", "10", cwd=tmp_path)
    assert items.returncode == 0 and all(line.startswith("the") for line in items.stdout.splitlines()), items.stderr
    model = api.load(run)
    assert model.generate("The", 5, seed=1).startswith("the")
    assert model.generate("The", 5, seed=1) == model.samples("THE", 5, 1, seed=1)[0]
    assert "".join(model.stream("The", 5, seed=1)) == model.generate("the", 5, seed=1)[3:]
    assert all(item.text.startswith("the") for item in model.items(2, 10, prefix="The", seed=1))


@pytest.mark.slow
def test_items_novelty_says_which_are_whole_training_items_and_where(tmp_path):
    from charlm.config import load_config
    from charlm.data.corpus import training_documents
    from charlm.data.vocab import Vocab

    # few distinct lines, many times over: some items are whole training lines, some are not
    lines = ["the cat sat", "a dog ran far", "the sun is up", "we go home now", "it is late"]
    corpus = tmp_path / "lines.txt"
    corpus.write_text("\n".join(lines[i % 5] + (" again" if i % 7 == 0 else "") for i in range(600)) + "\n")
    run = tmp_path / "run"
    trained = charlm("train", "--config", TINY, "--corpus", str(corpus), *SMALL, "--set", "data.documents=lines",
                     "--set", "train.epochs=2", "--run-dir", str(run), cwd=tmp_path)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    args = (
        "generate",
        "--run-dir",
        str(run),
        "--items",
        "12",
        "--seed",
        "3",
        "--temperature",
        "0.3",
        "--json",
        "--novelty",
    )
    done = charlm(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    config = load_config(run / "config.yaml")
    vocab = Vocab.in_order(json.loads((run / "vocab.json").read_text(encoding="utf-8"))["chars"])
    documents = training_documents(config.data, vocab)
    for record in records:
        novelty = record["novelty"]
        # against a plain search of the training documents: the item is one of them, or it is not
        assert novelty["training_item"] == (record["text"] in documents)
        longest = novelty["longest"]
        if longest["length"]:
            # the line named is the <eod>-ended document that holds the span
            assert longest["text"] in documents[longest["train_line"] - 1]
    assert any(r["novelty"]["training_item"] for r in records)


@pytest.mark.parametrize("mode", ["paragraphs", "files"])
@pytest.mark.slow
def test_every_documents_mode_round_trips(mode, tmp_path):
    """paragraphs (blank-line separated) and files (one per file of a folder): train, resume, items,
    perplexity, export and fine-tune, the end symbol kept throughout (lines: the tests above)."""
    paragraphs = [f"the cat {i % 7} sat\nand the dog {i % 5} ran" for i in range(80)]
    if mode == "files":
        corpus = tmp_path / "texts"
        corpus.mkdir()
        for i, text in enumerate(paragraphs):
            (corpus / f"{i:03}.txt").write_text(text + "\n", encoding="utf-8")
    else:
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    settings = ["--config", TINY, "--corpus", str(corpus), *SMALL, "--set", f"data.documents={mode}"]
    run = tmp_path / "run"
    for args in (
        ("train", *settings, "--set", "train.epochs=1", "--run-dir", str(run)),
        ("train", *settings, "--set", "train.epochs=2", "--run-dir", str(run), "--resume"),
        ("export", "--run-dir", str(run), "--out", str(tmp_path / "model")),
        ("train", *settings, "--set", "train.epochs=1", "--run-dir", str(tmp_path / "tuned"), "--init-from", str(run)),
    ):
        done = charlm(*args, cwd=tmp_path)
        assert done.returncode == 0, (args[0], done.stderr)
    for folder in (run, tmp_path / "tuned"):
        assert json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["chars"][-1] == "<eod>"
    items = charlm(
        "generate", "--model", str(tmp_path / "model"), "--items", "3", "--json", "--seed", "1", cwd=tmp_path
    )
    assert items.returncode == 0 and len(items.stdout.splitlines()) == 3, items.stderr
    scored = charlm("perplexity", "--run-dir", str(tmp_path / "tuned"), "--json", cwd=tmp_path)
    assert scored.returncode == 0 and json.loads(scored.stdout)["chars"] > 0, scored.stderr


@pytest.mark.parametrize("flags", [["--items", "1000000000"], ["--items", "40000", "-n", "10000000"]])
def test_generate_items_too_many_names_the_items_flag(lines_run, flags):
    root, run, _ = lines_run
    done = charlm("generate", "--run-dir", str(run), *flags, cwd=root)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "pass fewer --items or a shorter --length" in done.stderr and "--num-samples" not in done.stderr
