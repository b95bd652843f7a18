"""generate / sample_next: greedy d2l prediction, top-k, top-p, seeds, prefixes."""

from __future__ import annotations

import pytest
import torch
from helpers import make_rnn

from charlm.data import Vocab
from charlm.errors import UsageError
from charlm.generate import check_prefix, generate, sample_next, stream
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
    steps = list(stream(model, VOCAB, "ab", 6, temperature=1.0, num_samples=3, seed=0))
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


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("input_kind", ["onehot", "embedding"])
@pytest.mark.parametrize("weight_drop", [0.0, 0.4])  # 0.4: the layers are separate modules
def test_fast_step_computes_the_model(kind, input_kind, weight_drop):
    from charlm.generate import FastStep

    torch.manual_seed(0)
    model = make_rnn(11, kind, hidden_size=8, num_layers=2, dropout=0.3, input=input_kind, embed_size=5,
                    weight_drop=weight_drop).eval()
    assert model.per_layer == (weight_drop > 0)
    ids = torch.randint(0, 11, (4, 7))
    with torch.inference_mode():
        expected, expected_state = model(ids, None)
        step = FastStep(model)
        state = model.begin_hidden(4)
        for t in range(7):
            logits, state = step(ids[:, t], state)
            assert torch.allclose(logits, expected[t], atol=1e-5), t
    flat = (lambda s: torch.cat([x.flatten() for x in s])) if kind == "lstm" else (lambda s: s.flatten())
    assert torch.allclose(flat(state), flat(expected_state), atol=1e-5)
