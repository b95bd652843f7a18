"""charlm.generation.items: whole documents sampled in one batch, each ending at <eod>."""

from __future__ import annotations

import pytest
import torch
from helpers import make_rnn

from charlm.data import Vocab
from charlm.errors import UsageError
from charlm.generation.items import items
from charlm.generation.options import SamplingOptions

VOCAB = Vocab([*"abc ", "<eod>", "<unk>"])
EOD = VOCAB.eod

pytestmark = pytest.mark.usefixtures("single_thread")


def model_with_end_bias(bias: float):
    torch.manual_seed(0)
    m = make_rnn(len(VOCAB), hidden_size=16).eval()
    with torch.no_grad():
        m.head.bias[EOD] = bias  # large: every item ends at once; very negative: none ever ends
    return m


def test_items_end_at_the_end_symbol_without_it():
    made = items(model_with_end_bias(50.0), VOCAB, 4, length=30, seed=1)
    assert len(made) == 4
    assert all(item.ended and item.text == "" and item.generated == 0 for item in made)


def test_items_that_never_end_run_their_length():
    made = items(model_with_end_bias(-50.0), VOCAB, 3, length=12, prefix="ab", seed=2, temperature=1.0)
    assert all(not item.ended and item.generated == 12 and item.text.startswith("ab") for item in made)
    assert all("<eod>" not in item.text and len(item.text) >= 14 for item in made)
    assert len({item.text for item in made}) > 1  # independent rows of one batch


def test_items_are_one_batch_and_repeat_with_a_seed():
    m = model_with_end_bias(0.0)
    first = items(m, VOCAB, 5, length=20, seed=3, temperature=1.0)
    assert [i.text for i in first] == [i.text for i in items(m, VOCAB, 5, length=20, seed=3, temperature=1.0)]
    record = first[0].record(1, 20, SamplingOptions())
    assert record["item"] == 1 and record["ended"] == first[0].ended and record["text"] == first[0].text


def test_a_model_without_an_end_symbol_refuses_naming_the_fix():
    with pytest.raises(UsageError, match="data.documents: lines, paragraphs or files"):
        items(make_rnn(4, hidden_size=8), Vocab("abc "), 2, length=5)


def test_a_prefix_with_unseen_characters_maps_to_unk_when_asked():
    m = model_with_end_bias(50.0)
    with pytest.raises(UsageError, match="--unknown map"):
        items(m, VOCAB, 1, length=5, prefix="aΩ")
    assert items(m, VOCAB, 1, length=5, prefix="aΩ", unknown="map")[0].text == "aΩ"


@pytest.mark.parametrize(
    ("count", "length", "says"),
    [
        (10**9, 100, "1,000,000,000 items of 100 characters"),
        (10**30, 5, "items of 5 characters"),
        (50_000, 10**6, "50,000 items of 1,000,000 characters"),
        (2, 10**11, "2 items of 100,000,000,000 characters"),
    ],
)
def test_items_too_many_to_fit_name_the_items_flag(monkeypatch, count, length, says):
    """What does not fit is refused before anything is allocated, naming --items (it named --num-samples)."""
    import charlm.files.limits as limits

    monkeypatch.setattr(limits, "available_memory", lambda device=None: 16 * 10**9)
    with pytest.raises(UsageError) as info:
        items(model_with_end_bias(0.0), VOCAB, count, length=length, seed=1)
    message = str(info.value)
    assert says in message and "pass fewer --items or a shorter --length" in message and "num-samples" not in message
