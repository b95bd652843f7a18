"""generate / sample_next: greedy d2l prediction, top-k, top-p, seeds, prefixes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import make_rnn

from charlm.data import Vocab
from charlm.errors import UsageError
from charlm.generation.fast_step import WARM_UP_WINDOW
from charlm.generation.sampling import (
    SamplingOptions,
    check_prefix,
    generate,
    read_prefix_file,
    sample_next,
    samples,
    start_text,
    stream,
)
from charlm.model import CharRNN

VOCAB = Vocab("分开不的我你爱abcdefgh ,.\n")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def model() -> CharRNN:
    torch.manual_seed(0)
    m = make_rnn(len(VOCAB), kind="lstm", hidden_size=32, input="embedding", embed_size=16)
    with torch.no_grad():
        m.head.weight.mul_(8.0)  # sharper predictions, so that sampling and argmax usually differ
    return m


def d2l_predict_rnn(prefix, num_chars, model, idx_to_char, char_to_idx):
    """d2l-zh (PyTorch) predict_rnn_pytorch: one character at a time, argmax."""
    state = None
    output = [char_to_idx[prefix[0]]]
    for t in range(num_chars + len(prefix) - 1):
        X = torch.tensor([output[-1]]).view(1, 1)
        Y, state = model(X, state)
        if t < len(prefix) - 1:
            output.append(char_to_idx[prefix[t + 1]])
        else:
            output.append(int(Y.argmax(dim=-1).item()))
    return "".join(idx_to_char[i] for i in output)


@pytest.mark.parametrize("prefix", ["分", "分开", "不分开的"])
def test_greedy_equals_d2l_predict(model, prefix):
    model.eval()
    with torch.no_grad():
        expected = d2l_predict_rnn(prefix, 40, model, VOCAB.chars, VOCAB.index)
    assert generate(model, VOCAB, prefix, 40) == [expected]
    assert generate(model, VOCAB, prefix, 40, temperature=0.0, seed=5) == [expected]


def test_top_k_one_and_tiny_top_p_equal_greedy(model):
    greedy = generate(model, VOCAB, "分开", 40)
    assert generate(model, VOCAB, "分开", 40, temperature=1.0, top_k=1, seed=3) == greedy
    assert generate(model, VOCAB, "分开", 40, temperature=1.5, top_p=1e-6, seed=3) == greedy


def test_same_seed_same_sample_different_seeds_differ(model):
    a = generate(model, VOCAB, "分开", 60, temperature=1.0, seed=1)
    b = generate(model, VOCAB, "分开", 60, temperature=1.0, seed=1)
    assert a == b
    others = {generate(model, VOCAB, "分开", 60, temperature=1.0, seed=s)[0] for s in range(2, 6)}
    assert len(others | {a[0]}) > 1
    assert a != generate(model, VOCAB, "分开", 60)  # sampling is not just greedy


def test_num_samples(model):
    samples = generate(model, VOCAB, "我爱", 25, temperature=1.0, num_samples=4, seed=0)
    assert len(samples) == 4
    for s in samples:
        assert s.startswith("我爱") and len(s) == 2 + 25
        assert not VOCAB.missing(s)
    assert len(set(samples)) > 1  # independent samples
    # greedy samples in a batch are all the greedy continuation
    assert generate(model, VOCAB, "我爱", 25, num_samples=3) == generate(model, VOCAB, "我爱", 25) * 3


def test_zero_length_returns_the_prefix(model):
    assert generate(model, VOCAB, "分开", 0, num_samples=2) == ["分开", "分开"]


def test_stream_yields_one_id_per_sample_and_step(model):
    steps = list(stream(model, VOCAB, "ab", length=6, temperature=1.0, num_samples=3, seed=0))
    assert len(steps) == 6
    assert all(s.shape == (3,) and s.dtype == torch.int64 for s in steps)


def test_empty_prefix_raises(model):
    with pytest.raises(UsageError, match="empty"):
        generate(model, VOCAB, "", 5)


def test_prefix_with_unseen_characters_names_them(model):
    with pytest.raises(UsageError) as info:
        generate(model, VOCAB, "分开XYX", 5)
    message = str(info.value)
    assert "'X'" in message and "'Y'" in message
    assert "'分'" not in message
    assert check_prefix(VOCAB, "分开") == VOCAB.encode("分开")


def test_sample_next_greedy_is_argmax():
    logits = torch.randn(20, 9, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next(logits), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=0.0, top_k=3), logits.argmax(-1))


def test_sample_next_top_k_never_leaves_the_top_k():
    gen = torch.Generator().manual_seed(0)
    rows, vocab, k = 400, 12, 3
    logits = torch.randn(rows, vocab, generator=gen)
    top = torch.topk(logits, k, dim=-1).indices
    seen = torch.zeros(rows, vocab, dtype=torch.bool)
    for _ in range(25):
        ids = sample_next(logits, temperature=2.0, top_k=k, generator=gen)
        assert (ids[:, None] == top).any(-1).all(), "a token outside the top k was sampled"
        seen[torch.arange(rows), ids] = True
    assert (seen.sum(-1) > 1).float().mean() > 0.9  # it samples, rather than always taking the argmax


def test_sample_next_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(3000, 1)
    ids = sample_next(logits, temperature=1.0, top_p=0.7, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=4)
    assert counts[2] == 0 and counts[3] == 0  # 0.5 + 0.3 already hold 0.7
    assert counts[0] > 0 and counts[1] > 0
    assert abs(counts[0].item() / 3000 - 0.5 / 0.8) < 0.05  # renormalised over the nucleus


def test_sample_next_follows_the_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1])
    logits = probs.log().repeat(5000, 1)
    ids = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=3).float() / 5000
    assert torch.allclose(freq, probs, atol=0.03)


def test_unseeded_sampling_leaves_the_global_rng_alone(model):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    generate(model, VOCAB, "分开", 5, temperature=1.0)
    assert torch.equal(torch.rand(4), expected)


# --- sampling controls: stop texts, no prefix, prefix files, the repetition penalty, samples and scores


def model_log_probs(model, context: str, written: str) -> list[float]:
    """log p of each written character under the model, by one plain forward over context + written."""
    ids = torch.tensor([VOCAB.encode(context + written)])
    with torch.inference_mode():
        logits, _ = model.eval()(ids[:, :-1], None)
    log_probs = logits[:, 0].log_softmax(-1)
    targets = ids[0, 1:]
    return log_probs[torch.arange(len(targets)), targets][len(context) - 1 :].tolist()


def test_a_stop_text_ends_the_sample_with_it(model):
    greedy = generate(model, VOCAB, "分开", 60)[0]
    stop = greedy[9:11]  # two characters the greedy text emits, first ending at or before position 11
    end = greedy.index(stop, 2) + len(stop)
    (sample,) = samples(model, VOCAB, "分开", length=60, stop=(stop,))
    assert sample.text == greedy[:end] and sample.stop == stop and sample.generated == end - 2
    assert len(list(stream(model, VOCAB, "分开", length=60, stop=(stop,)))) == end - 2  # the stream ends there
    assert samples(model, VOCAB, "分开", length=60, stop=("分分分",))[0].stop is None  # never emitted: runs its length


def test_each_sample_stops_on_its_own_and_the_first_listed_text_wins(model):
    free = samples(model, VOCAB, "我", length=40, temperature=1.0, num_samples=6, seed=3)
    stopped = samples(model, VOCAB, "我", length=40, temperature=1.0, num_samples=6, seed=3, stop=(" ", "a"))
    for a, b in zip(free, stopped, strict=True):
        written = a.text[1:]
        cut = min((written.index(s) + 1 for s in (" ", "a") if s in written), default=None)
        if cut is None:
            assert b == a
        else:
            assert b.text == a.text[: 1 + cut] and b.stop == b.text[-1] and b.generated == cut
    assert len({s.generated for s in stopped}) > 1  # they stopped at different places
    both = samples(model, VOCAB, "我", length=40, temperature=1.0, num_samples=6, seed=3, stop=(" ", " "))
    assert all(s.stop in (None, " ") for s in both)


def test_a_stop_text_may_begin_in_the_prefix(model):
    first = generate(model, VOCAB, "分开", 1)[0][-1]
    (sample,) = samples(model, VOCAB, "分开", length=30, stop=("开" + first,))
    assert sample.generated == 1 and sample.text == "分开" + first


def test_no_prefix_starts_after_a_new_line(model):
    after_newline = generate(model, VOCAB, "\n", 30, temperature=1.0, seed=4)[0]
    (sample,) = samples(model, VOCAB, None, length=30, temperature=1.0, seed=4)
    assert sample.prefix == "" and sample.text == after_newline[1:]
    spaced = Vocab("abc ")  # no newline in the vocabulary (data.newlines: space): a space instead
    assert start_text(spaced) == " " and start_text(VOCAB) == "\n"
    with pytest.raises(UsageError, match="pass --prefix"):
        start_text(Vocab("abc"))


def test_prefix_file_is_read_exactly(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeff分开\r\n你".encode())
    assert read_prefix_file(path) == "分开\r\n你"  # the BOM goes, line endings stay as written
    path.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        read_prefix_file(path)
    with pytest.raises(UsageError, match="not found"):
        read_prefix_file(tmp_path / "none.txt")
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        check_prefix(VOCAB, read_prefix_file(path))


def test_repetition_penalty_changes_greedy_as_a_reference_loop_says(model):
    def reference(prefix, length, r, window):
        text = prefix
        model.eval()
        with torch.inference_mode():
            for _ in range(length):
                logits, _ = model(torch.tensor([VOCAB.encode(text)]), None)
                last = logits[-1, 0].clone()
                seen = sorted(set(VOCAB.encode(text[-window:])))
                last[seen] = torch.where(last[seen] > 0, last[seen] / r, last[seen] * r)
                text += VOCAB.chars[int(last.argmax())]
        return text

    plain = generate(model, VOCAB, "分开", 40)[0]
    penalised = generate(model, VOCAB, "分开", 40, repetition_penalty=1.8, repetition_window=5)[0]
    assert penalised == reference("分开", 40, 1.8, 5)
    assert penalised != plain


def test_samples_are_scored_under_the_model(model):
    for options in ({}, {"temperature": 1.0, "top_k": 3, "seed": 0, "repetition_penalty": 1.5}):
        (sample,) = samples(model, VOCAB, "分开", length=25, **options)
        expected = -sum(model_log_probs(model, "分开", sample.text[2:])) / 25 / math.log(2)
        assert sample.bits_per_char == pytest.approx(expected, abs=1e-5)
    (stopped,) = samples(model, VOCAB, "分开", length=60, stop=(generate(model, VOCAB, "分开", 5)[0][-2:],))
    written = stopped.text[2:]
    expected = -sum(model_log_probs(model, "分开", written)) / len(written) / math.log(2)
    assert stopped.bits_per_char == pytest.approx(expected, abs=1e-5)  # up to the stop only
    assert samples(model, VOCAB, "分开", length=0)[0].bits_per_char is None


def test_a_sample_record_has_the_json_schema(model):
    options = SamplingOptions(temperature=0.5, seed=2, stop=("\n",))
    (sample,) = samples(model, VOCAB, "我", length=10, **vars(options))
    record = json.loads(json.dumps(sample.record(1, 10, options)))
    assert set(record) == {"sample", "prefix", "text", "generated", "stop", "bits_per_char", "options"}
    assert record["options"] == {
        "length": 10,
        "temperature": 0.5,
        "top_k": 0,
        "top_p": 1.0,
        "num_samples": 1,
        "seed": 2,
        "stop": ["\n"],
        "repetition_penalty": 1.0,
        "repetition_window": 64,
        "beam": 0,
        "weights": "fp32",
    }
    assert record["text"] == sample.text and record["prefix"] == "我"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number, got nan"),
        ({"temperature": float("inf")}, "temperature must be a finite number, got inf"),
        ({"repetition_penalty": 0}, "repetition-penalty must be > 0"),
        ({"repetition_window": 0}, "repetition-window must be >= 1"),
        ({"beam": -2}, "beam must be >= 0"),
        ({"beam": 2, "num_samples": 3}, "must be <= beam"),
        ({"beam": 2, "top_k": 3, "seed": 1}, "drop --top-k, --seed"),
        ({"stop": ("",)}, "stop text is empty"),
        ({"stop": ("分X",)}, "could never be emitted"),
    ],
)
def test_bad_sampling_options_are_usage_errors(model, options, message):
    with pytest.raises(UsageError, match=message):
        samples(model, VOCAB, "分开", length=5, **options)


def test_stream_refuses_beams(model):
    with pytest.raises(UsageError, match="does not stream"):
        stream(model, VOCAB, "分开", length=5, beam=2)


def test_a_long_prefix_is_read_once_for_all_samples(model):
    """issue: a 40,000-character prefix for 50 samples ran the prefix 50 times (4.7 GB)."""
    batches = []
    handle = model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape))
    prefix = "分开不分开" * 2000
    try:
        texts = generate(model, VOCAB, prefix, 5, temperature=1.0, num_samples=50, seed=3)
    finally:
        handle.remove()
    # one row, the prefix but its last character, read once in windows (their logits a window at a time)
    assert {rows for rows, _ in batches} == {1} and sum(n for _, n in batches) == len(prefix) - 1
    assert max(n for _, n in batches) == WARM_UP_WINDOW and len(batches) == -(-(len(prefix) - 1) // WARM_UP_WINDOW)
    assert len(texts) == 50 and all(t.startswith(prefix) and len(t) == len(prefix) + 5 for t in texts)
    alone = generate(model, VOCAB, prefix, 5, temperature=0.0, num_samples=1)[0]
    assert generate(model, VOCAB, prefix, 5, temperature=0.0, num_samples=4) == [alone] * 4


# --- a model trained on documents: <eod> in a plain sample ---------------------------------------------------

DOC_VOCAB = Vocab([*"abc ", "<eod>"])
EOD = DOC_VOCAB.eod


def documents_model() -> CharRNN:
    torch.manual_seed(1)
    m = make_rnn(len(DOC_VOCAB), kind="lstm", hidden_size=16).eval()
    with torch.no_grad():
        m.head.bias[EOD] = 1.5  # <eod> often: rows end documents at different steps
    return m


def forward_log_probs(m, inputs: torch.Tensor, written: torch.Tensor, *, reset: bool) -> torch.Tensor:
    """The log-probability of each written id under the model's own forward (training's code path), with
    the state zeroed where a row reads <eod> when `reset`."""
    with torch.inference_mode():
        logits, _ = m(inputs, None, starts=(inputs == EOD) if reset else None)
    prefix = inputs.shape[1] - written.shape[1] + 1
    scores = logits.log_softmax(-1)[prefix - 1 :].transpose(0, 1)  # (rows, written, vocab)
    return scores.gather(2, written[:, :, None]).squeeze(2)


@pytest.mark.parametrize("reset", [True, False])
def test_a_sample_that_writes_eod_restarts_its_state_as_training_did(reset):
    m = documents_model()
    steps = stream(m, DOC_VOCAB, "ab", length=40, num_samples=4, temperature=1.0, seed=3, reset=EOD if reset else None)
    for _ in steps:
        pass
    written = torch.stack(steps.ids, 1)
    assert bool((written[:, :-1] == EOD).any(1).all())  # every row read an <eod> it wrote
    inputs = torch.cat([torch.tensor(DOC_VOCAB.encode("ab")).repeat(4, 1), written[:, :-1]], 1)
    sampled = torch.stack(steps.log_probs, 1)
    # FastStep and nn.LSTM are different kernels: equal to float32 rounding, not bit for bit
    assert (sampled - forward_log_probs(m, inputs, written, reset=reset)).abs().max() < 1e-4
    other = forward_log_probs(m, inputs, written, reset=not reset)
    assert (sampled - other).abs().max() > 1e-2  # the reset changes what follows an <eod>


def test_beam_search_resets_at_eod_too():
    from charlm.generation.beam import beam_search

    m = documents_model()
    context = torch.tensor([DOC_VOCAB.encode("ab")])
    for reset in (EOD, None):
        ((ids, log_prob, _),) = beam_search(m, context, length=12, beams=3, num_results=1, reset=reset)
        written = torch.tensor([ids])
        assert EOD in ids[:-1]
        inputs = torch.cat([context, written[:, :-1]], 1)
        expected = forward_log_probs(m, inputs, written, reset=reset is not None).sum()
        assert abs(float(expected) - log_prob) < 1e-4  # a different kernel: equal to float32 rounding


def test_eod_prints_as_a_line_break_and_keeps_its_name_in_the_text(model):
    made = samples(documents_model(), DOC_VOCAB, "ab", length=40, num_samples=3, temperature=1.0, seed=3, reset=EOD)
    assert all("<eod>" in s.text for s in made)
    # these texts hold no literal "<eod>" (the vocabulary has no "<"): the name is the symbol
    assert all(s.printed == s.text.replace("<eod>", "\n") and s.record(1, 40, SamplingOptions())["text"] == s.text
               for s in made)  # fmt: skip
    plain = samples(model, VOCAB, "ab", length=20, temperature=1.0, seed=1)[0]
    assert plain.plain is None and plain.printed == plain.text  # no end symbol: nothing changes
