"""evaluate: perplexity and bits per character against hand-computed values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import make_rnn

from charlm.errors import CorpusError, UsageError
from charlm.evaluate import TextSource, char_losses, evaluate
from charlm.model import CharRNN

pytestmark = pytest.mark.usefixtures("single_thread")


def constant_model(vocab_size: int) -> CharRNN:
    model = make_rnn(vocab_size, kind="gru", hidden_size=8, input="embedding", embed_size=4)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # every logit is 0: a uniform prediction
    return model


@pytest.mark.parametrize(
    ("vocab_size", "n", "batch_size", "num_steps"), [(7, 101, 4, 5), (50, 37, 16, 8), (2, 10, 1, 3)]
)
def test_uniform_prediction_scores_vocab_size(vocab_size, n, batch_size, num_steps):
    ids = torch.randint(0, vocab_size, (n,), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    result = evaluate(constant_model(vocab_size), ids, batch_size=batch_size, num_steps=num_steps)
    assert result["perplexity"] == pytest.approx(vocab_size, rel=1e-6)  # float32 logits: 1e-6 relative
    assert result["bits_per_char"] == pytest.approx(math.log2(vocab_size), abs=1e-6)
    assert result["nats_per_char"] == pytest.approx(math.log(vocab_size), abs=1e-6)


@pytest.mark.parametrize(
    ("n", "batch_size", "expected"), [(101, 4, 100), (103, 4, 100), (37, 16, 32), (3, 16, 2), (2, 1, 1), (50, 1, 49)]
)
def test_chars_is_the_number_scored(n, batch_size, expected):
    ids = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(1))
    result = evaluate(constant_model(5), ids, batch_size=batch_size, num_steps=4)
    assert result["chars"] == expected


def manual_nats(model: CharRNN, ids: torch.Tensor) -> float:
    """Feed the whole text one character at a time, carrying the state: mean -log p(next char)."""
    model.eval()
    state, total = None, 0.0
    with torch.no_grad():
        for t in range(len(ids) - 1):
            logits, state = model(ids[t : t + 1].view(1, 1), state)
            total += F.cross_entropy(logits.view(1, -1), ids[t + 1 : t + 2].long(), reduction="sum").item()
    return total / (len(ids) - 1)


@pytest.mark.parametrize("kind", ["lstm", "rnn_tanh"])
@pytest.mark.parametrize("num_steps", [1, 7, 100])
def test_batch_size_one_equals_a_manual_loop(kind, num_steps):
    torch.manual_seed(0)
    model = make_rnn(9, kind=kind, hidden_size=16, input="onehot", dropout=0.0)
    ids = torch.randint(0, 9, (61,))
    result = evaluate(model, ids, batch_size=1, num_steps=num_steps)
    nats = manual_nats(model, ids)
    assert result["chars"] == 60
    assert result["nats_per_char"] == pytest.approx(nats, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nats), rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(nats / math.log(2), rel=1e-5)


def test_streams_are_scored_independently():
    """With batch_size streams, each stream is scored from a fresh state, as if scored alone."""
    torch.manual_seed(0)
    model = make_rnn(6, kind="gru", hidden_size=8, input="onehot")
    ids = torch.randint(0, 6, (41,))  # 40 targets: 4 streams of 10
    result = evaluate(model, ids, batch_size=4, num_steps=3)
    total = sum(manual_nats(model, ids[10 * s : 10 * s + 11]) * 10 for s in range(4))
    assert result["chars"] == 40
    assert result["nats_per_char"] == pytest.approx(total / 40, rel=1e-5)


def test_evaluation_uses_eval_mode_and_restores_training_mode():
    torch.manual_seed(0)
    model = make_rnn(8, kind="lstm", hidden_size=16, num_layers=2, dropout=0.5, input="embedding", embed_size=8)
    ids = torch.randint(0, 8, (200,))
    model.train()
    first = evaluate(model, ids, batch_size=4, num_steps=10)
    assert model.training  # put back as it was
    second = evaluate(model, ids, batch_size=4, num_steps=10)
    assert first == second  # no dropout while scoring
    model.eval()
    evaluate(model, ids, batch_size=4, num_steps=10)
    assert not model.training


def test_does_not_build_a_graph():
    model = make_rnn(5, kind="gru", hidden_size=4)
    ids = torch.randint(0, 5, (30,))
    evaluate(model, ids, batch_size=2, num_steps=4)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_chars_raises(n):
    with pytest.raises(CorpusError, match="at least 2"):
        evaluate(constant_model(5), torch.zeros(n, dtype=torch.long), batch_size=4, num_steps=5)


def test_max_chars_reads_the_start_of_every_stream():
    torch.manual_seed(0)
    model = make_rnn(7, "gru", hidden_size=8, input="embedding", embed_size=4).eval()
    ids = torch.randint(0, 7, (1001,))
    full = evaluate(model, ids, batch_size=4, num_steps=5)
    assert full["protocol"] == "full" and full["chars"] == 1000
    sampled = evaluate(model, ids, batch_size=4, num_steps=5, max_chars=100)
    assert sampled["chars"] == 100 and sampled["protocol"] == "first 25 chars of each of 4 streams"
    # the same as scoring each stream's first 25 characters (plus its next one as the last target) alone
    streams = ids[:1000].view(4, 250)
    nats = (
        sum(evaluate(model, torch.cat([s[:25], s[25:26]]), batch_size=1, num_steps=5)["nats_per_char"] for s in streams)
        / 4
    )
    assert sampled["nats_per_char"] == pytest.approx(nats, rel=1e-6)
    assert evaluate(model, ids, batch_size=4, num_steps=5, max_chars=10**9) == full


# --- char_losses: the per-character losses behind evaluate's figure --------------------------------------------

MODELS = [
    dict(kind="lstm"),
    dict(kind="gru", num_layers=2),
    dict(kind="rnn_tanh"),
    dict(kind="rnn_relu", num_layers=2, input="embedding", embed_size=6),
    dict(kind="lstm", num_layers=2, locked_dropout=True, dropout=0.3),
]  # one module per layer


@pytest.mark.parametrize("settings", MODELS, ids=lambda s: "-".join(str(v) for v in s.values()))
@pytest.mark.parametrize(("n", "batch_size", "num_steps"), [(503, 7, 9), (40, 1, 6), (12, 16, 5)])
def test_char_losses_total_is_evaluates_figure_bit_for_bit(settings, n, batch_size, num_steps):
    """The total is summed by the same operations as evaluate's, so it is equal to the last bit; the
    per-character values add up to it to float rounding (they are float32, summed in another order)."""
    torch.manual_seed(0)
    model = make_rnn(11, hidden_size=16, **settings)
    ids = torch.randint(0, 11, (n,))
    result = evaluate(model, ids, batch_size=batch_size, num_steps=num_steps)
    losses = char_losses(model, ids, batch_size=batch_size, num_steps=num_steps)
    assert losses.nats_per_char == result["nats_per_char"]
    assert len(losses.nats) == result["chars"]
    assert float(losses.nats.double().sum()) == pytest.approx(losses.total, rel=1e-6)


def test_char_losses_are_in_text_order():
    """nats[i] is the loss of ids[i + 1]: each stream scored alone from a fresh state gives the same values."""
    torch.manual_seed(0)
    model = make_rnn(6, kind="gru", hidden_size=8)
    ids = torch.randint(0, 6, (43,))  # 42 targets: 4 streams of 10, a tail of 2 not scored
    losses = char_losses(model, ids, batch_size=4, num_steps=3)
    assert len(losses.nats) == 40
    for s in range(4):
        stream = ids[10 * s : 10 * s + 11]
        alone = char_losses(model, stream, batch_size=1, num_steps=100)
        assert torch.allclose(losses.nats[10 * s : 10 * s + 10], alone.nats, atol=1e-6)
    manual = [
        F.cross_entropy(model(ids[: t + 1].view(1, -1))[0][-1], ids[t + 1 : t + 2].long()).item() for t in range(10)
    ]
    assert losses.nats[:10].tolist() == pytest.approx(manual, abs=1e-5)


def test_char_losses_top_predictions():
    torch.manual_seed(0)
    model = make_rnn(7, kind="lstm", hidden_size=8).eval()
    ids = torch.randint(0, 7, (30,))
    losses = char_losses(model, ids, batch_size=1, num_steps=4, top_k=5)
    assert losses.top_ids.shape == losses.top_probs.shape == (29, 5)
    with torch.no_grad():
        probs = model(ids[:-1].view(1, -1))[0][:, 0].softmax(-1)
    expected = probs.topk(5, dim=1)
    assert torch.equal(losses.top_ids, expected.indices)
    assert torch.allclose(losses.top_probs, expected.values, atol=1e-6)
    # where the true next character is the top prediction, its loss is -log of that probability
    hit = losses.top_ids[:, 0] == ids[1:]
    assert torch.allclose(losses.nats[hit], -losses.top_probs[hit, 0].log(), atol=1e-5)
    assert char_losses(make_rnn(3, hidden_size=4), ids % 3, batch_size=1, num_steps=4, top_k=5).top_ids.shape == (
        29,
        3,
    )  # k <= vocab


def test_progress_reports_every_scored_character():
    """issue: scoring a 200 MB file showed nothing for minutes; the CLI draws a bar on stderr from this."""
    torch.manual_seed(0)
    model = make_rnn(6, kind="gru", hidden_size=8, input="onehot")
    ids = torch.randint(0, 6, (1003,))
    seen = []
    result = evaluate(model, ids, batch_size=7, num_steps=10, progress=seen.append)
    assert len(seen) == -(-result["chars"] // (7 * 10)) and sum(seen) == result["chars"]
    assert (
        evaluate(model, ids, batch_size=7, num_steps=10)["nats_per_char"] == result["nats_per_char"]
    )  # the bar changes no figure


def test_text_source_defaults_to_the_val_split_and_names_itself():
    assert TextSource() == TextSource(split="val")
    assert TextSource().description == "val split"
    assert TextSource(split="test").description == "test split"
    assert TextSource(file=Path("notes.txt")).description == "notes.txt"
    assert TextSource(text="abc").description == "--text"  # the CLI's string, read as one stream
    assert TextSource(text="abc", text_as_file=True).description == "text"  # the Python API's
    assert TextSource(file=Path("notes.txt")).split is None  # only the default fills in the split


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"split": "val", "file": Path("a.txt")}, "--split and --file were given: pass one of them, not both"),
        ({"file": Path("a.txt"), "text": "ab"}, "--file and --text were given: pass one of them, not both"),
        (
            {"split": "val", "file": Path("a"), "text": "ab"},
            "--split and --file and --text were given: pass one of them, not all three",
        ),
        ({"split": "dev"}, "split 'dev' is not valid: use train, val or test"),
        ({"split": 5}, "split 5 is not valid: use train, val or test"),
        ({"text": b"ab"}, "the text to score must be a str, not b'ab'"),
    ],
)
def test_text_source_refuses_anything_but_one_valid_source(given, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        TextSource(**given)


@pytest.fixture
def overflowing(tmp_path):
    """A run whose weights are finite but so large that its numbers overflow: every loss is NaN or 1e30."""
    from helpers import save_untrained_run

    from charlm.store import checkpoint as ckpt

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 30, encoding="utf-8")
    run = save_untrained_run(tmp_path / "run", corpus)
    for name in ("best.pt", "last.pt"):
        saved = ckpt.load(run / name)
        saved.model = {k: v * 1e30 for k, v in saved.model.items()}
        ckpt.save(run / name, saved)
    return run


@pytest.mark.parametrize(
    "flags",
    [["--json"], [], ["--breakdown", "--json"], ["--show"], ["--text", "the lazy dog", "--json"], ["--split", "train"]],
)
def test_a_loss_with_no_finite_perplexity_is_one_line_never_nan_or_infinity(overflowing, capsys, flags):
    """perplexity --json printed NaN and Infinity (not JSON) with exit 0; now one line, exit 1, stdout empty."""
    from charlm.cli.main import main

    assert main(["perplexity", "--run-dir", str(overflowing), *flags]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "has no finite perplexity" in err and "unexpected" not in err


def test_the_api_refuses_such_a_figure_too(overflowing):
    import charlm
    from charlm.errors import RunError

    with pytest.raises(RunError, match="no finite perplexity"):
        charlm.load(overflowing).perplexity("the lazy dog")


@pytest.mark.parametrize("nats", [math.nan, math.inf, -math.inf, 700.0, 1e30])
def test_check_finite_loss_refuses_what_has_no_finite_perplexity(nats):
    from charlm.errors import RunError
    from charlm.units import check_finite_loss

    with pytest.raises(RunError, match="has no finite perplexity"):
        check_finite_loss(nats, "the val split")
    check_finite_loss(699.0, "the val split")  # e^699 is a float: a figure, however bad
