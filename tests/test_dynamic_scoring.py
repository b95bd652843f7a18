"""dynamic.scoring: dynamic evaluation scores before it adapts (causality), equals static scoring with lr 0, and
adapts (a passage read twice: tests/test_dynamic_run.py, on a trained model)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_rnn

from charlm.dynamic.adapter import Adapter, DynamicOptions
from charlm.dynamic.scoring import dynamic_losses
from charlm.evaluate import char_losses, evaluate

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = [("rnn_tanh", "onehot"), ("lstm", "embedding"), ("gru", "onehot"), ("lstm", "onehot"), ("gru", "embedding")]


def model_of(kind: str, input: str, vocab: int = 12):
    torch.manual_seed(0)
    return make_rnn(vocab, kind=kind, hidden_size=24, num_layers=2, input=input, embed_size=8)


def random_ids(n: int, vocab: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)


def read(model, ids, method="sgd", lr=0.1, decay=0.01, rms=None, keep=None, num_steps=7):
    """A copy of model read with dynamic evaluation: its losses (the model given is left alone)."""
    copied = copy.deepcopy(model)
    adapter = Adapter(copied, DynamicOptions(method, lr, decay), rms)
    return dynamic_losses(copied, ids, adapter, num_steps=num_steps, keep=keep)


@pytest.mark.parametrize(("kind", "input"), KINDS)
def test_lr_zero_is_static_scoring_in_one_stream_to_the_last_bit(kind, input):
    model, ids = model_of(kind, input), random_ids(300)
    static = evaluate(model, ids, batch_size=1, num_steps=7)
    losses = read(model, ids, lr=0.0, decay=0.05)
    assert losses.nats_per_char == static["nats_per_char"]
    assert losses.chars == static["chars"] == 299
    # the kept per-character losses are static char_losses' in one stream, character by character
    assert torch.equal(losses.nats, char_losses(model, ids, batch_size=1, num_steps=7).nats)


@pytest.mark.parametrize(("kind", "input"), KINDS[:3])
def test_a_step_too_small_to_matter_takes_the_gradient_path_and_agrees(kind, input):
    model, ids = model_of(kind, input), random_ids(300)
    static = evaluate(model, ids, batch_size=1, num_steps=7)["nats_per_char"]
    # lr 1e-12 moves no weight a representable amount; the forward with autograd may use other kernels
    # than inference's, so agreement to float32 rounding, not bit for bit
    assert read(model, ids, lr=1e-12).nats_per_char == pytest.approx(static, rel=1e-5)


@pytest.mark.parametrize("method", ["sgd", "rms"])
def test_no_loss_up_to_t_depends_on_the_text_after_t(method):
    model, ids = model_of("lstm", "embedding"), random_ids(400)
    rms = {n: torch.rand_like(p) + 0.1 for n, p in model.named_parameters()} if method == "rms" else None
    for t in (0, 6, 7, 100, 250):  # inside a segment, at its end, and further on
        changed = ids.clone()
        changed[t + 1 :] = (changed[t + 1 :] + 1 + random_ids(len(ids) - t - 1, 11, t).long()) % 12
        assert not torch.equal(changed[t + 1 :], ids[t + 1 :])
        a = read(model, ids, method, lr=0.5, rms=rms)
        b = read(model, changed, method, lr=0.5, rms=rms)
        # nats[i] is the loss of ids[i + 1]: the characters up to t are those before index t
        assert torch.equal(a.nats[:t], b.nats[:t]), f"t={t}"
        assert not torch.equal(a.nats[t:], b.nats[t:])


def test_the_model_given_is_adapted_in_place_and_a_copy_leaves_it_alone():
    model, ids = model_of("gru", "embedding"), random_ids(200)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    read(model, ids, lr=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    adapter = Adapter(model, DynamicOptions("sgd", 0.5, 0.0))
    dynamic_losses(model, ids, adapter, num_steps=7)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
