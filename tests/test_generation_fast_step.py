"""step.FastStep: one generation step computes the model's forward, in fp32 exactly and in bf16 / int8 closely,
and its greedy choices follow fp32's on a trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import make_rnn
from test_cli import make_corpus

from charlm.api import load, train
from charlm.config import load_config
from charlm.errors import UsageError
from charlm.generation.fast_step import WEIGHTS, FastStep, greedy_agreement

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
COMPACT_TOLERANCE = {"bf16": 0.01, "int8": 0.015}  # the largest logit error, as a fraction of the largest |logit|


def step_logits(model, ids: torch.Tensor, weights: str) -> tuple[torch.Tensor, object]:
    """The logits of each step (steps, n, vocab) and the final hidden state, one FastStep call per column."""
    step, hidden, rows = FastStep(model, weights, rows=ids.shape[0]), model.begin_hidden(ids.shape[0]), []
    with torch.inference_mode():
        for t in range(ids.shape[1]):
            logits, hidden = step(ids[:, t], hidden)
            rows.append(logits)
    return torch.stack(rows), hidden


def flat(hidden) -> torch.Tensor:
    return torch.cat([h.flatten() for h in hidden]) if isinstance(hidden, tuple) else hidden.flatten()


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("input_kind", ["onehot", "embedding"])
@pytest.mark.parametrize("weight_drop", [0.0, 0.4])  # 0.4: the layers are separate modules
def test_fast_step_computes_the_model(kind, input_kind, weight_drop):
    torch.manual_seed(0)
    model = make_rnn(
        11, kind, hidden_size=8, num_layers=2, dropout=0.3, input=input_kind, embed_size=5, weight_drop=weight_drop
    ).eval()
    assert model.per_layer == (weight_drop > 0)
    ids = torch.randint(0, 11, (4, 7))
    with torch.inference_mode():
        expected, expected_state = model(ids, None)
    logits, state = step_logits(model, ids, "fp32")
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(flat(state), flat(expected_state), atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize("hidden_size", [24, 64])  # 24: int8 pads the inputs to a multiple of 16
@pytest.mark.parametrize("input_kind", ["onehot", "embedding"])
def test_compact_weights_stay_close_to_the_model(kind, weights, hidden_size, input_kind):
    torch.manual_seed(1)
    model = make_rnn(30, kind, hidden_size=hidden_size, num_layers=2, input=input_kind, embed_size=16).eval()
    ids = torch.randint(0, 30, (3, 20))
    with torch.inference_mode():
        expected, _ = model(ids, None)
    logits, _ = step_logits(model, ids, weights)
    error = (logits - expected).abs().max() / expected.abs().max()
    assert error <= COMPACT_TOLERANCE[weights]
    assert error > 1e-6  # the compact weights are really in use (fp32 is within 1e-7)


def test_compact_weights_need_a_float32_model_on_the_cpu():
    model = make_rnn(11, "lstm", hidden_size=8).double().eval()
    for weights in ("bf16", "int8"):
        with pytest.raises(UsageError, match="use --weights fp32"):
            FastStep(model, weights)
    with pytest.raises(UsageError, match="not one of"):
        FastStep(model, "fp16")
    assert FastStep(model, "fp32").head.mode == "dense"  # float64 keeps the model's own arithmetic


@pytest.fixture(scope="module")
def trained_lstm(tmp_path_factory):
    """A small LSTM trained for a few epochs on a lyrics-like text: greedy text with real near-ties."""
    root = tmp_path_factory.mktemp("step")
    corpus = make_corpus(root / "lyrics.txt", chars=20_000)
    config = load_config(
        str(REPO / "configs" / "tiny.yaml"),
        [
            f"data.corpus={corpus}",
            "train.device=cpu",
            "train.epochs=4",
            "model.hidden_size=64",
            "sample.preview_every=0",
        ],
    )
    train(config, root / "run")
    return load(root / "run")


@pytest.mark.parametrize("weights", WEIGHTS)
def test_greedy_choices_follow_fp32(trained_lstm, weights):
    model = trained_lstm
    context = torch.tensor([model.vocab.encode("分开")])
    same_until, agreement = greedy_agreement(model.net, context, 300, weights)
    if weights == "fp32":
        assert (same_until, agreement) == (300, 1.0)
    else:
        assert agreement >= 0.95, agreement


def test_generate_with_compact_weights_writes_text(trained_lstm):
    model = trained_lstm
    for weights in WEIGHTS:
        texts = model.samples("分开", 40, num_samples=3, seed=5, weights=weights)
        assert len(texts) == 3 and all(t.startswith("分开") and len(t) == 42 for t in texts)
    with pytest.raises(UsageError, match="weights must be fp32, bf16 or int8"):
        model.generate("分开", 5, weights="fp16")
