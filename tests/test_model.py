"""CharRNN: d2l equivalence, shapes and states of every kind, detaching, tied weights, vocabulary growth."""

from __future__ import annotations

import dataclasses
import math

import d2l_reference
import pytest
import torch
from helpers import make_rnn
from torch import nn

from charlm.config import ModelConfig
from charlm.model import (
    NEW_CHARS_MASS,
    CharRNN,
    detach_hidden,
    first_nonfinite,
    grow_vocab,
    match_layout,
    weight_bytes,
    weight_shapes,
)

KINDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
INPUTS = ["onehot", "embedding"]

pytestmark = pytest.mark.usefixtures("single_thread")


def test_onehot_rnn_tanh_is_exactly_d2l_rnn_model():
    torch.manual_seed(0)
    vocab, hidden, batch, steps = 23, 16, 3, 7
    model = make_rnn(vocab, kind="rnn_tanh", hidden_size=hidden, num_layers=1, dropout=0.0, input="onehot")
    ref = d2l_reference.RNNModel(nn.RNN(input_size=vocab, hidden_size=hidden), vocab)
    ref.rnn.load_state_dict(model.rnn.state_dict())
    ref.dense.load_state_dict(model.head.state_dict())
    x1 = torch.randint(0, vocab, (batch, steps))
    x2 = torch.randint(0, vocab, (batch, steps))

    logits, state = model(x1)
    ref_out, ref_state = ref(x1, None)
    assert logits.shape == (steps, batch, vocab)
    assert torch.equal(logits.reshape(-1, vocab), ref_out)
    assert torch.equal(state, ref_state)
    # the state carries over to the next window the same way
    logits, state = model(x2, state)
    ref_out, ref_state = ref(x2, ref_state)
    assert torch.equal(logits.reshape(-1, vocab), ref_out)
    assert torch.equal(state, ref_state)
    # and the parameters are the same set (no extra embedding)
    assert model.embedding is None
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("input_kind", INPUTS)
def test_every_kind_gives_logits_and_state_of_the_right_shape(kind, input_kind):
    torch.manual_seed(0)
    vocab, hidden, layers, batch, steps = 11, 12, 2, 3, 5
    model = make_rnn(
        vocab, kind=kind, hidden_size=hidden, num_layers=layers, dropout=0.0, input=input_kind, embed_size=6
    )
    x = torch.randint(0, vocab, (batch, steps), dtype=torch.uint8)  # ids come in the corpus's narrow dtype
    logits, state = model(x)
    assert logits.shape == (steps, batch, vocab)
    assert logits.dtype == torch.float32
    if kind == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        assert all(s.shape == (layers, batch, hidden) for s in state)
    else:
        assert isinstance(state, torch.Tensor) and state.shape == (layers, batch, hidden)
    # a zero begin_hidden is what None means
    logits0, _ = model(x, model.begin_hidden(batch))
    assert torch.equal(logits, logits0)
    # the state matters: continuing from it differs from starting afresh
    logits2, _ = model(x, state)
    assert not torch.allclose(logits2, logits)
    # the right layer type with the right nonlinearity
    expected = {"rnn_tanh": nn.RNN, "rnn_relu": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    assert type(model.rnn) is expected
    if kind.startswith("rnn_"):
        assert model.rnn.nonlinearity == kind[4:]


def test_logits_at_step_t_depend_only_on_inputs_up_to_t():
    torch.manual_seed(0)
    model = make_rnn(9, kind="gru", hidden_size=8, dropout=0.0, input="embedding", embed_size=4)
    x = torch.randint(0, 9, (2, 6))
    y = x.clone()
    y[:, 4] = (y[:, 4] + 1) % 9
    a, _ = model(x)
    b, _ = model(y)
    assert torch.equal(a[:4], b[:4])
    assert not torch.allclose(a[4], b[4])


@pytest.mark.parametrize("kind", KINDS)
def test_begin_hidden_is_zeros_of_the_right_shape(kind):
    model = make_rnn(5, kind=kind, hidden_size=7, num_layers=3)
    state = model.begin_hidden(4)
    parts = state if kind == "lstm" else (state,)
    assert isinstance(state, tuple) == (kind == "lstm")
    for s in parts:
        assert s.shape == (3, 4, 7) and s.dtype == torch.float32
        assert not s.any()
    if kind == "lstm":
        assert state[0].data_ptr() != state[1].data_ptr()  # h and c are separate tensors


def test_detach_hidden_cuts_the_graph_of_a_tensor():
    model = make_rnn(5, kind="gru", hidden_size=4)
    _, state = model(torch.randint(0, 5, (2, 3)))
    assert state.grad_fn is not None
    detached = detach_hidden(state)
    assert detached.grad_fn is None and not detached.requires_grad
    assert torch.equal(detached, state)


def test_detach_hidden_cuts_the_graph_of_an_lstm_tuple():
    model = make_rnn(5, kind="lstm", hidden_size=4)
    _, state = model(torch.randint(0, 5, (2, 3)))
    assert all(s.grad_fn is not None for s in state)
    detached = detach_hidden(state)
    assert isinstance(detached, tuple) and len(detached) == 2
    for d, s in zip(detached, state, strict=True):
        assert d.grad_fn is None and not d.requires_grad
        assert torch.equal(d, s)
    # a backward pass through the next window stops at the cut
    logits, _ = model(torch.randint(0, 5, (2, 3)), detached)
    logits.sum().backward()
    assert detached[0].grad is None


def test_detach_hidden_of_none():
    assert detach_hidden(None) is None


def test_tie_weights_shares_one_tensor():
    model = make_rnn(13, kind="lstm", hidden_size=8, input="embedding", embed_size=8, tie_weights=True)
    assert model.head.weight is model.embedding.weight
    assert model.head.weight.data_ptr() == model.embedding.weight.data_ptr()
    with torch.no_grad():
        model.embedding.weight[0, 0] = 42.0
    assert model.head.weight[0, 0] == 42.0
    untied = make_rnn(13, kind="lstm", hidden_size=8, input="embedding", embed_size=8)
    assert model.num_parameters() == untied.num_parameters() - 13 * 8  # counted once


@pytest.mark.parametrize(("input_kind", "embed_size"), [("embedding", 6), ("onehot", 8)])
def test_tie_weights_with_mismatched_sizes_raises(input_kind, embed_size):
    with pytest.raises(ValueError, match="tie_weights"):
        make_rnn(13, kind="lstm", hidden_size=8, input=input_kind, embed_size=embed_size, tie_weights=True)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="lstn"):
        make_rnn(5, kind="lstn")


def test_num_parameters_without_embedding():
    model = make_rnn(10, kind="gru", hidden_size=4, input="embedding", embed_size=3)
    assert model.num_parameters(embedding=False) == model.num_parameters() - 10 * 3
    onehot = make_rnn(10, kind="gru", hidden_size=4, input="onehot")
    assert onehot.num_parameters(embedding=False) == onehot.num_parameters()


def test_the_config_rebuilds_the_same_model():
    cfg = ModelConfig(
        kind="gru", input="embedding", embed_size=6, hidden_size=10, num_layers=2, dropout=0.25, tie_weights=False
    )
    model = CharRNN(cfg, 17)
    assert model.vocab_size == 17 and dataclasses.asdict(model.config) == dict(
        kind="gru",
        hidden_size=10,
        num_layers=2,
        dropout=0.25,
        input="embedding",
        embed_size=6,
        tie_weights=False,
        dropout_embed=None,
        dropout_hidden=None,
        dropout_output=None,
        locked_dropout=False,
        weight_drop=0.0,
    )
    twin = CharRNN(model.config, model.vocab_size)
    twin.load_state_dict(model.state_dict())  # same parameter names and shapes
    assert model.rnn.dropout == 0.25 and model.drop.p == 0.25


def test_the_config_ties_weights():
    cfg = ModelConfig(kind="lstm", input="embedding", embed_size=8, hidden_size=8, tie_weights=True)
    model = CharRNN(cfg, 5)
    assert model.head.weight is model.embedding.weight
    assert model.config.tie_weights is True


def test_the_model_defaults_are_the_config_defaults():
    """One place for defaults: a model built from ModelConfig() is the default experiment's model."""
    model = CharRNN(ModelConfig(), 7)
    assert model.embedding is not None and model.head.weight is model.embedding.weight  # embedding, tied
    assert model.drop.p == ModelConfig().dropout == 0.5


def test_single_layer_has_no_inter_layer_dropout():
    model = make_rnn(5, kind="lstm", hidden_size=4, num_layers=1, dropout=0.5)
    assert model.rnn.dropout == 0.0 and model.drop.p == 0.5


@pytest.mark.parametrize("relu", [False, True])
def test_elman_recurrence_gradients_are_exact(relu):
    from charlm.model import ElmanRecurrence

    g = torch.Generator().manual_seed(0)
    args = [
        torch.randn(*shape, dtype=torch.double, generator=g, requires_grad=True)
        for shape in [(5, 3, 4), (3, 4), (4, 4), (4,)]
    ]
    assert torch.autograd.gradcheck(lambda *a: ElmanRecurrence.apply(*a, relu), args)


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu"])
def test_onehot_gather_path_has_the_gradients_of_the_onehot_matmul(kind):
    torch.manual_seed(0)
    fast = make_rnn(17, kind, hidden_size=8, input="onehot")
    assert fast.gather_onehot
    plain = make_rnn(17, kind, hidden_size=8, input="onehot")
    plain.load_state_dict(fast.state_dict())
    plain.gather_onehot = False  # the nn.RNN path on explicit one-hot vectors
    x = torch.randint(0, 17, (3, 6))
    h0 = torch.randn(1, 3, 8)
    for model in (fast, plain):
        logits, state = model(x, h0)
        (logits.square().mean() + state.sum()).backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), name


# ---------------------------------------------------------------------------------------------------
# Regularisers: locked dropout, weight drop, per-part dropout


def test_locked_dropout_uses_one_mask_for_all_time_steps():
    from charlm.model import LockedDropout

    torch.manual_seed(0)
    drop = LockedDropout(0.5).train()
    x = torch.ones(7, 3, 40)  # (time, batch, features)
    y = drop(x)
    dropped = y == 0
    assert 0.2 < dropped.float().mean() < 0.8
    assert all(torch.equal(dropped[t], dropped[0]) for t in range(7))  # the same units at every step
    assert torch.equal(y[~dropped], torch.full_like(y[~dropped], 2.0))  # kept units scaled by 1 / (1 - p)
    assert not torch.equal(drop(x), y)  # a new mask per call (per sequence batch)
    assert torch.equal(drop.eval()(x), x)


def test_plain_dropout_draws_a_new_mask_per_time_step():
    torch.manual_seed(0)
    model = make_rnn(11, "lstm", hidden_size=40, dropout=0.5, input="embedding", embed_size=40).train()
    dropped = model.drop(torch.ones(7, 3, 40)) == 0
    assert not all(torch.equal(dropped[t], dropped[0]) for t in range(7))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_locked_dropout_model_masks_each_sequence_once(kind):
    model = make_rnn(
        11, kind, hidden_size=16, num_layers=2, dropout=0.5, input="embedding", embed_size=16, locked_dropout=True
    )
    assert model.per_layer  # locked dropout between layers needs the layers apart
    for module in (model.drop_embed, model.drop_hidden, model.drop):
        assert type(module).__name__ == "LockedDropout" and module.p == 0.5
    x = torch.randint(0, 11, (3, 9))
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])  # eval: no dropout at all


def test_dropout_parts_default_to_dropout_and_can_differ():
    model = make_rnn(
        11,
        "lstm",
        hidden_size=8,
        num_layers=3,
        dropout=0.2,
        input="embedding",
        embed_size=8,
        dropout_embed=0.1,
        dropout_output=0.4,
    )
    assert (model.drop_embed.p, model.rnn.dropout, model.drop.p) == (0.1, 0.2, 0.4)


def weight_drop_model(**kw):
    torch.manual_seed(0)
    return make_rnn(
        11, "lstm", hidden_size=8, num_layers=2, dropout=0.0, input="embedding", embed_size=8, weight_drop=0.5, **kw
    )


def test_weight_drop_changes_w_hh_on_every_training_forward_and_never_in_eval():
    model = weight_drop_model()
    x = torch.randint(0, 11, (3, 9))
    raw = [layer.weight_hh_l0.detach().clone() for layer in model.rnn]
    model.train()
    a, b = model(x)[0], model(x)[0]
    assert not torch.allclose(a, b)  # a fresh DropConnect mask per forward
    assert all(torch.equal(layer.weight_hh_l0, w) for layer, w in zip(model.rnn, raw, strict=True))  # raw kept
    model.eval()
    c, d = model(x)[0], model(x)[0]
    assert torch.equal(c, d)
    model.weight_drop = 0.0  # the same weights without DropConnect: eval uses W_hh as it is
    model.train()
    assert torch.allclose(model(x)[0], c, atol=1e-6)


def test_weight_drop_gradient_reaches_only_the_kept_recurrent_weights():
    model = weight_drop_model().train()
    logits, _ = model(torch.randint(0, 11, (3, 9)))
    logits.square().mean().backward()
    for layer in model.rnn:
        zero = (layer.weight_hh_l0.grad == 0).float().mean()
        assert 0.3 < zero < 0.7  # about half of W_hh was dropped this forward
        assert (layer.weight_ih_l0.grad != 0).float().mean() > 0.9  # W_ih is not dropped


def test_weight_drop_model_rebuilds_from_its_args():
    model = weight_drop_model(locked_dropout=True)
    twin = CharRNN(model.config, model.vocab_size)
    twin.load_state_dict(model.state_dict())
    x = torch.randint(0, 11, (2, 5))
    assert torch.equal(model.eval()(x)[0], twin.eval()(x)[0])


# --- vocabulary growth (fine-tuning on a corpus with new characters) -----------------------------------

GROWTH_CASES = {
    "embedding": dict(kind="lstm", input="embedding", embed_size=12, hidden_size=16),
    "tied": dict(kind="gru", input="embedding", embed_size=16, hidden_size=16, tie_weights=True),
    "onehot rnn (gathered)": dict(kind="rnn_tanh", input="onehot", hidden_size=16),
    "onehot lstm, layer per module": dict(kind="lstm", input="onehot", hidden_size=16, num_layers=2, weight_drop=0.3),
}


def trained_like(old: int, **settings) -> CharRNN:
    """A random model with a confident head (trained models are far from uniform), in eval mode."""
    torch.manual_seed(0)
    model = make_rnn(old, **settings)
    with torch.no_grad():
        model.head.weight.mul_(4)
        model.head.bias.copy_(torch.randn(old) * 3)
    return model.eval()


@pytest.mark.parametrize("case", GROWTH_CASES)
def test_growing_the_vocabulary_keeps_old_ids_rows_and_predictions(case):
    settings = GROWTH_CASES[case]
    old, new = 20, 27
    parent = trained_like(old, **settings)
    grown = CharRNN(parent.config, new)
    grown.load_state_dict(grow_vocab(parent.state_dict(), parent.config, old, new))
    grown.eval()
    before, after = parent.state_dict(), grown.state_dict()
    for key, value in before.items():  # every old character keeps its rows (its columns for one-hot input)
        if key in ("embedding.weight", "head.weight", "head.bias"):
            assert torch.equal(after[key][:old], value), key
        elif key.endswith("weight_ih_l0") and settings["input"] == "onehot" and key.startswith(("rnn.0.", "rnn.w")):
            assert torch.equal(after[key][:, :old], value), key
        else:
            assert torch.equal(after[key], value), key
    if settings.get("tie_weights"):
        assert grown.head.weight is grown.embedding.weight
    x = torch.randint(0, old, (4, 30))  # text of old characters only
    with torch.no_grad():
        p_old = parent(x)[0].log_softmax(-1)
        p_new = grown(x)[0].log_softmax(-1)
    new_mass = p_new[..., old:].exp().sum(-1)
    assert float(new_mass.max()) <= NEW_CHARS_MASS * 1.0001  # the bound holds at every position
    shift = (p_old - p_new[..., :old]).abs().max()
    assert 0 < float(shift) <= math.log1p(NEW_CHARS_MASS) + 1e-5
    x_new = torch.randint(0, new, (4, 30))  # the new characters can be read and predicted
    assert grown(x_new)[0].shape == (30, 4, new)


def test_a_naive_growth_would_move_the_old_predictions():
    # what the bound protects against: new rows like the old ones (mean) with an ordinary bias take a share
    parent = trained_like(20, kind="lstm", input="embedding", embed_size=12, hidden_size=16)
    state = grow_vocab(parent.state_dict(), parent.config, 20, 40)
    state["head.bias"][20:] = parent.head.bias.max()
    grown = CharRNN(parent.config, 40)
    grown.load_state_dict(state)
    x = torch.randint(0, 20, (4, 30))
    with torch.no_grad():
        mass = grown.eval()(x)[0].softmax(-1)[..., 20:].sum(-1)
    assert float(mass.mean()) > 100 * NEW_CHARS_MASS


def test_growth_without_new_characters_is_the_same_state_and_a_smaller_vocabulary_is_refused():
    parent = trained_like(20, kind="gru", input="embedding", embed_size=8, hidden_size=8)
    state = parent.state_dict()
    same = grow_vocab(state, parent.config, 20, 20)
    assert same.keys() == state.keys() and all(torch.equal(same[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_vocab(state, parent.config, 20, 19)


@pytest.mark.parametrize("weight_drop", [0.0, 0.4])
def test_match_layout_moves_weights_between_one_module_and_a_module_per_layer(weight_drop):
    torch.manual_seed(0)
    fused = make_rnn(11, "lstm", hidden_size=8, num_layers=2, input="embedding", embed_size=8)
    split = make_rnn(11, "lstm", hidden_size=8, num_layers=2, input="embedding", embed_size=8, weight_drop=0.4)
    source, target = (fused, split) if weight_drop else (split, fused)
    target.load_state_dict(match_layout(source.state_dict(), target.per_layer))
    x = torch.randint(0, 11, (3, 7))
    assert torch.equal(source.eval()(x)[0], target.eval()(x)[0])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_layer_by_layer_is_the_fused_model_with_the_dropout_between_layers_drawn_by_torch(kind):
    cfg = ModelConfig(kind=kind, hidden_size=16, num_layers=3, embed_size=8, dropout=0.3, tie_weights=False)
    torch.manual_seed(0)
    fused = CharRNN(cfg, 11)
    torch.manual_seed(0)
    apart = CharRNN(cfg, 11, layer_by_layer=True)
    assert apart.per_layer and not fused.per_layer
    # the same random draws in the same order: the same weights, which match_layout names for the fused layout
    saved = match_layout(apart.state_dict(), False)
    assert saved.keys() == fused.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in fused.state_dict().items())
    x = torch.randint(0, 11, (4, 9))
    # without dropout (eval) the same function by another code path (three one-layer calls against one
    # three-layer call): equal within float rounding, not necessarily to the bit
    torch.testing.assert_close(apart.eval()(x)[0], fused.eval()(x)[0], rtol=1e-5, atol=1e-6)
    # training: its dropout masks come from torch's generator, which a checkpoint saves and restores
    apart.train()
    torch.manual_seed(1)
    first = apart(x)[0]
    torch.manual_seed(1)
    assert torch.equal(apart(x)[0], first)
    assert not torch.equal(apart(x)[0], first)  # the generator moved on: new masks


def test_layer_by_layer_changes_nothing_without_dropout_between_layers():
    one = ModelConfig(kind="lstm", hidden_size=8, num_layers=1, embed_size=8, dropout=0.3, tie_weights=False)
    undropped = dataclasses.replace(one, num_layers=2, dropout_hidden=0.0)
    assert not CharRNN(one, 11, layer_by_layer=True).per_layer
    assert not CharRNN(undropped, 11, layer_by_layer=True).per_layer


@pytest.mark.parametrize(
    "settings",
    [
        {"kind": "lstm", "input": "embedding", "embed_size": 8},
        {"kind": "gru", "num_layers": 2},
        {"kind": "rnn_tanh"},  # the gathered one-hot path (ElmanRecurrence)
        {"kind": "lstm", "num_layers": 2, "weight_drop": 0.1},  # one module per layer
    ],
)
def test_starts_reset_the_state_of_their_rows_only(settings):
    from helpers import make_rnn

    torch.manual_seed(0)
    model = make_rnn(6, hidden_size=12, **settings).eval()
    x = torch.randint(0, 5, (3, 10))
    x[0, 4] = 5  # row 0 starts a document at step 4, row 2 at step 7; row 1 never
    x[2, 7] = 5
    hidden = model(torch.randint(0, 5, (3, 5)))[1]  # a carried state, not zeros
    logits, _ = model(x, hidden, starts=x == 5)
    plain, _ = model(x, hidden)
    fresh0, _ = model(x[:1, 4:])
    fresh2, _ = model(x[2:, 7:])
    # the same function by two paths (pieces against whole windows): equal to float rounding
    tol = {"atol": 1e-5, "rtol": 1e-5}
    assert torch.allclose(logits[:, 1], plain[:, 1], **tol)  # no start: as without resets
    assert torch.allclose(logits[:4, 0], plain[:4, 0], **tol)  # before its start: as before
    assert torch.allclose(logits[4:, 0], fresh0[:, 0], **tol)  # from its start: as a new document
    assert torch.allclose(logits[7:, 2], fresh2[:, 0], **tol)
    assert not torch.allclose(logits[4:, 0], plain[4:, 0], **tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("input_kind", INPUTS)
@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"num_layers": 3},
        {"num_layers": 2, "weight_drop": 0.3},
        {"num_layers": 3, "locked_dropout": True},
        {"tie": 1},
    ],
)
def test_weight_shapes_are_the_state_dict_of_the_model_counted_not_built(kind, input_kind, layout):
    """What a config implies (judged before anything is allocated) is exactly what CharRNN holds, in every layout."""
    tie = layout.pop("tie", 0) and input_kind == "embedding"
    cfg = ModelConfig(
        kind=kind, input=input_kind, hidden_size=12, embed_size=12 if tie else 7, tie_weights=tie, **layout
    )
    built = {k: tuple(v.shape) for k, v in CharRNN(cfg, 9).state_dict().items()}
    assert weight_shapes(cfg, 9) == built
    assert weight_bytes(cfg, 9) == 4 * sum(math.prod(s) for s in built.values())


def test_weight_shapes_of_the_largest_config_take_no_memory_or_time():
    import time

    cfg = ModelConfig(kind="lstm", hidden_size=2**16, embed_size=2**16, num_layers=1024)
    started = time.monotonic()
    assert weight_bytes(cfg, 10**6) > 10**14  # a hundred terabytes, counted in a moment
    assert time.monotonic() - started < 1
    with pytest.raises(ValueError, match="unknown model kind"):
        weight_shapes(dataclasses.replace(cfg, kind="transformer"), 5)


def test_first_nonfinite_names_the_first_weight_with_nan_or_infinity():
    weights = {"a": torch.ones(3), "ids": torch.tensor([1, 2]), "b": torch.tensor([1.0, math.inf]), "c": torch.ones(1)}
    assert first_nonfinite(weights) == "b"
    weights["b"][1] = math.nan
    assert first_nonfinite(weights) == "b"
    assert first_nonfinite({"a": torch.ones(2, dtype=torch.bfloat16)}) is None
