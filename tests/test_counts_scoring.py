"""`perplexity --mix`: the network's figure unchanged beside the mix's, the index and the mix fitted once and kept,
fitted again when the weights change, rebuilt when tampered with; dynamic reading counts the text read too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import LINES, lines_run, save_untrained_run

from charlm.cli.main import main
from charlm.counts import kept
from charlm.errors import UsageError
from charlm.store.model_dir import load_checkpoint

pytest.importorskip("pydivsufsort")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder of an untrained model on a text of four lines repeated: the counts know it, the model not."""
    return lines_run(tmp_path / "run", lines=300, settings=["data.val_fraction=0.2"])


def perplexity(capsys, *args: str) -> tuple[int, dict | str, str]:
    capsys.readouterr()
    code = main(["perplexity", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in args and code == 0 else out), err


def test_the_mix_reports_the_networks_figure_unchanged_and_its_own_below_it(run, capsys):
    code, plain, _ = perplexity(capsys, "-r", str(run), "--json", "--no-mix")
    assert code == 0 and "mix" not in plain and not (run / kept.MIX_NAME).exists()
    code, mixed, err = perplexity(capsys, "-r", str(run), "--json", "--mix")
    assert code == 0
    assert {k: mixed[k] for k in plain} == plain and set(mixed) == {*plain, "mix"}  # the network's, to the last bit
    assert mixed["mix"]["reading"] == "static" and mixed["mix"]["chars"] == plain["chars"]
    assert mixed["mix"]["nats_per_char"] < 0.5 * plain["nats_per_char"]  # four lines: the counts know them
    assert mixed["mix"]["gain"] == pytest.approx(1 - mixed["mix"]["nats_per_char"] / plain["nats_per_char"])
    assert "counts index built" in err and "mix fitted on the val split" in err
    assert (run / kept.INDEX_NAME).is_file() and (run / kept.MIX_NAME).is_file()
    code, again, err = perplexity(capsys, "-r", str(run), "--json", "--mix")
    assert again == mixed and err == ""  # read back, not fitted again


def test_the_text_output_shows_both_columns(run, capsys):
    code, out, _ = perplexity(capsys, "-r", str(run), "--mix")
    assert code == 0
    assert "network" in out and "mix" in out and "below the network alone" in out


def test_the_mix_is_the_default_and_a_run_that_cannot_have_one_is_scored_alone_with_a_note(run, capsys):
    text = ["--text", "the cat sat on the mat\nand then ran far away\n"]
    code, default, _ = perplexity(capsys, "-r", str(run), "--json", *text)
    code, mixed, _ = perplexity(capsys, "-r", str(run), "--json", "--mix", *text)
    assert code == 0 and default == mixed
    # the corpus changed since training: no counts of its training split can be made
    (run.parent / "corpus.txt").write_text("the cat sat\n" * 50, encoding="utf-8")
    (run / kept.INDEX_NAME).unlink()
    code, alone, err = perplexity(capsys, "-r", str(run), "--json", *text)
    assert code == 0 and "mix" not in alone and alone == {k: mixed[k] for k in alone}
    assert err.startswith("note: scored by the network alone: corpus") and len(err.strip().splitlines()) == 1
    code, _, err = perplexity(capsys, "-r", str(run), "--json", "--mix", *text)
    assert code != 0 and err.strip().endswith("which is no longer there: drop --mix")
    code, _, err = perplexity(capsys, "-r", str(run), "--json", "--no-mix", *text)
    assert code == 0 and err == ""


def test_other_weights_fit_the_mix_again_and_a_tampered_index_is_rebuilt(run, capsys):
    perplexity(capsys, "-r", str(run), "--json", "--mix")
    saved = json.loads((run / kept.MIX_NAME).read_text())
    saved["weights"] = "0" * 32  # another checkpoint's mix
    (run / kept.MIX_NAME).write_text(json.dumps(saved))
    index = (run / kept.INDEX_NAME).read_bytes()
    (run / kept.INDEX_NAME).write_bytes(index[:-7] + b"garbage")
    code, _, err = perplexity(capsys, "-r", str(run), "--json", "--mix")
    assert code == 0 and "counts index rebuilt" in err and "mix fitted" in err
    assert json.loads((run / kept.MIX_NAME).read_text())["weights"] != "0" * 32


@pytest.mark.slow
def test_a_mix_json_that_is_not_the_mixers_is_fitted_again(run, capsys):
    perplexity(capsys, "-r", str(run), "--json", "--mix")
    saved = json.loads((run / kept.MIX_NAME).read_text())
    for broken in ({**saved, "static": {"gate": [[1e308] * 3]}}, {**saved, "format": "x"}, [1, 2]):
        (run / kept.MIX_NAME).write_text(json.dumps(broken))
        code, _, err = perplexity(capsys, "-r", str(run), "--json", "--mix")
        assert code == 0 and "mix fitted" in err


def test_dynamic_reading_mixes_the_counts_of_the_text_read_too(run, capsys):
    code, mixed, _ = perplexity(capsys, "-r", str(run), "--json", "--mix", "--dynamic")
    assert code == 0 and mixed["mix"]["reading"] == "dynamic"
    code, dynamic, _ = perplexity(capsys, "-r", str(run), "--json", "--dynamic")
    assert mixed["nats_per_char"] == pytest.approx(dynamic["dynamic"]["nats_per_char"], rel=1e-6)
    assert mixed["mix"]["nats_per_char"] < mixed["nats_per_char"]


def test_the_views_score_with_the_mix_and_add_up_to_its_figure(run, tmp_path, capsys):
    code, mixed, _ = perplexity(capsys, "-r", str(run), "--json", "--mix")
    code, viewed, _ = perplexity(capsys, "-r", str(run), "--json", "--mix", "--breakdown")
    assert code == 0
    assert viewed["nats_per_char"] == pytest.approx(mixed["mix"]["nats_per_char"], rel=1e-9)
    bands = viewed["breakdown"]["bands"]
    assert sum(b["chars"] for b in bands) == viewed["chars"] and sum(
        b["share_of_loss"] for b in bands
    ) == pytest.approx(1)
    spent = sum(b["chars"] * b["mean_bits"] for b in bands if b["chars"])
    assert spent / viewed["chars"] == pytest.approx(viewed["bits_per_char"], rel=1e-9)  # the bands add up to the mix's
    code, out, _ = perplexity(capsys, "-r", str(run), "--mix", "--show", "--show-chars", "200")
    assert code == 0 and "mixed with counts" in out
    code, _, _ = perplexity(capsys, "-r", str(run), "--mix", "--html", str(tmp_path / "page.html"))
    assert code == 0 and "mixed with counts" in (tmp_path / "page.html").read_text(encoding="utf-8")


def test_a_run_without_a_val_split_fits_on_the_end_of_its_train_split(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LINES * 60) + "\n", encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", str(corpus), ["data.val_fraction=0"])
    code, mixed, err = perplexity(capsys, "-r", str(run), "--json", "--mix", "--split", "train")
    assert code == 0 and "last 10% of the train split" in err
    assert mixed["mix"]["nats_per_char"] < mixed["nats_per_char"]
    saved = load_checkpoint(run)
    whole = kept.load_index(run, saved, print)
    text, index, name = kept.fit_text(saved, whole)
    cut = int(len(whole) * (1 - kept.HOLD_OUT))
    # fitted on the train split's end with counts of what comes before it only: never of the text it fits on
    assert len(index) == cut and len(text) == len(whole) - cut and name == "last 10% of the train split"


def generate(capsys, run: Path, *args: str) -> tuple[int, list[dict], str]:
    capsys.readouterr()
    code = main(["generate", "-r", str(run), "--json", "--length", "120", "--prefix", "the ", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()] if code == 0 else [], err


def test_sampling_from_the_mix_recites_what_the_counts_know_and_max_copy_stops_it(run, capsys):
    code, plain, _ = generate(capsys, run, "--temperature", "0")
    assert code == 0
    code, mixed, err = generate(capsys, run, "--temperature", "0", "--mix", "--novelty")
    assert code == 0 and "mix fitted" in err
    # an untrained network alone writes noise; the mix writes the training lines
    assert mixed[0]["text"] != plain[0]["text"] and mixed[0]["bits_per_char"] < plain[0]["bits_per_char"]
    assert mixed[0]["novelty"]["longest"]["length"] >= 40
    code, guarded, _ = generate(capsys, run, "--temperature", "0", "--mix", "--max-copy", "1")
    assert code == 0 and guarded[0]["text"] == plain[0]["text"]  # every context is in training: the network alone
    code, seeded, _ = generate(capsys, run, "--seed", "3", "--mix", "--num-samples", "2")
    code, again, _ = generate(capsys, run, "--seed", "3", "--mix", "--num-samples", "2")
    assert code == 0 and [s["text"] for s in seeded] == [s["text"] for s in again]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-copy", "5"], "--max-copy needs --mix"),
        (["--mix", "--max-copy", "0"], "a length >= 1"),
        (["--mix", "--beam", "3"], "drop --items and --beam"),
    ],
)
def test_mix_flags_that_cannot_work_are_refused_in_one_line(run, capsys, args, says):
    code, _, err = generate(capsys, run, *args)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_python_api_mixes_as_the_cli_does(run, capsys):
    import charlm

    model = charlm.load(run)
    code, cli_figures, _ = perplexity(capsys, "-r", str(run), "--json", "--mix")
    api_figures = model.perplexity(mix=True)
    assert api_figures["mix"]["nats_per_char"] == pytest.approx(cli_figures["mix"]["nats_per_char"], rel=1e-9)
    assert api_figures["nats_per_char"] == cli_figures["nats_per_char"]
    mixed = model.generate("the ", 80, temperature=0, mix=True)
    assert mixed != model.generate("the ", 80, temperature=0)
    with pytest.raises(UsageError, match="True or False"):
        model.perplexity(mix="yes")


@pytest.mark.slow
def test_an_exported_folder_says_the_mix_is_left_out_and_builds_it_in_the_cache(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    capsys.readouterr()
    assert main(["export", "-r", str(run), "--out", str(tmp_path / "model")]) == 0
    assert "the mix with counts (--mix) is left out" in capsys.readouterr().err
    code, from_run, _ = perplexity(capsys, "-r", str(run), "--json", "--mix")
    code, from_folder, err = perplexity(capsys, "--model", str(tmp_path / "model"), "--json", "--mix")
    assert code == 0 and str(tmp_path / "cache") in err  # kept in the user cache, never in the folder
    assert not any(p.name.startswith(("counts", "mix")) for p in (tmp_path / "model").iterdir())
    assert from_folder["mix"]["nats_per_char"] == pytest.approx(from_run["mix"]["nats_per_char"], rel=1e-9)


@pytest.mark.slow
def test_adapting_counts_the_text_read_too_and_leaves_the_kept_mix_alone(tmp_path, capsys):
    import torch

    import charlm
    from charlm.counts.sampling import sampler
    from charlm.counts.scoring import load_mix

    # val long enough for the counts of the text read to know something in the fit
    run = lines_run(tmp_path / "run", lines=400, settings=["data.val_fraction=0.5", "data.max_chars=30000"])
    # a line the training text never holds, in its characters: only the counts of the text read know it
    read = tmp_path / "read.txt"
    read.write_text("a rat sat on the dog\n" * 30, encoding="utf-8")
    generate(capsys, run, "--mix")  # the mix fitted and kept
    kept_mix = (run / kept.MIX_NAME).read_bytes()
    code, adapted, err = generate(
        capsys, run, "--prefix", "a rat s", "--temperature", "0", "--mix", "--adapt", str(read)
    )
    assert code == 0 and "adapted to" in err and "mix fitted" not in err
    # the Python API's adapted copy samples from the same mix, and neither fits the trained mix again
    model = charlm.load(run)
    copy = model.adapt(file=read)
    assert copy.generate("a rat s", 120, temperature=0, mix=True) == adapted[0]["text"]
    assert (run / kept.MIX_NAME).read_bytes() == kept_mix
    # the counts of the text read make its next character likely where the training text's alone do not
    mix = load_mix(run, model.checkpoint, model.net, device=model.device, say=print)
    context = torch.tensor([model.vocab.encode("a rat sat on the ")])
    chances = []
    for mixing in (sampler(mix), sampler(mix, read=copy._read)):
        mixing.start(context)
        chances.append(mixing.log_probs(torch.zeros(1, len(model.vocab)))[0, model.vocab.encode("d")[0]].exp())
    assert chances[0] < 0.01 < 0.1 < chances[1]


@pytest.mark.slow
def test_a_resumed_run_fits_its_mix_again_and_a_fine_tuned_one_counts_its_own_text(tmp_path, capsys):
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    corpus, new = tmp_path / "corpus.txt", tmp_path / "new.txt"
    corpus.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    new.write_text("a dog ran far away\n" * 100, encoding="utf-8")
    quiet = ["--set", "train.device=cpu", "--set", "sample.preview_every=0"]
    run, tuned = tmp_path / "run", tmp_path / "tuned"
    assert main(["train", "--config", str(tiny), "--corpus", str(corpus), "--run-dir", str(run), *quiet]) == 0
    code, first, err = perplexity(capsys, "-r", str(run), "--json")
    assert code == 0 and "counts index built" in err and "mix fitted" in err
    assert main(["train", "--resume", "--run-dir", str(run), "--set", "train.epochs=4", *quiet]) == 0
    code, resumed, err = perplexity(capsys, "-r", str(run), "--json")
    # the same training text (its index kept), new weights (their mix fitted again)
    assert code == 0 and "counts index" not in err and "mix fitted" in err
    assert resumed["nats_per_char"] < first["nats_per_char"] and resumed["mix"] != first["mix"]
    assert main(["train", "--init-from", str(run), "--corpus", str(new), "--run-dir", str(tuned), *quiet]) == 0
    code, ft, err = perplexity(capsys, "-r", str(tuned), "--json")
    assert code == 0 and "counts index built" in err and "mix fitted" in err
    assert ft["mix"]["nats_per_char"] < 0.5 * ft["nats_per_char"]  # its own text's counts, known by heart


def test_a_run_that_resets_at_documents_scores_its_mix_dynamically(tmp_path, capsys):
    settings = ["data.val_fraction=0.2", "data.documents=lines", "train.reset_state_at_documents=true"]
    run = lines_run(tmp_path / "run", lines=300, settings=settings)
    code, mixed, err = perplexity(capsys, "-r", str(run), "--json", "--mix", "--dynamic")
    assert code == 0 and mixed["mix"]["reading"] == "dynamic", err
    # every line a document: the counts of the text read know nothing of the lines before, the training
    # text's know them all
    assert mixed["mix"]["nats_per_char"] < 0.5 * mixed["nats_per_char"]
