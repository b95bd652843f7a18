"""benchmarks/gpt_baseline.py: the GPT is scored with charlm's protocol exactly, its schedule, its trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gpt_baseline import GPT, SMOKE, Race, Recipe, StreamGPT, lr_at, train_to_budget

from charlm.evaluate import evaluate

TOY = Recipe(n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.0)


def brute_force_nats(gpt: GPT, ids: torch.Tensor, streams: int, window: int) -> float:
    """charlm's protocol written out: the text cut into `streams` streams of equal length, every input
    character's successor scored once, each with the context StreamGPT promises (the current window up to
    it, after the block - window characters of the stream before the window)."""
    length = (len(ids) - 1) // streams
    total = 0.0
    for s in range(streams):
        stream = ids[s * length : (s + 1) * length + 1]
        for j in range(length):
            start = max(0, j // window * window - (gpt.block_size - window))
            logits = gpt(stream[start : j + 1][None])[0, -1]
            total += F.cross_entropy(logits[None], stream[j + 1][None]).item()
    return total / (streams * length)


@pytest.mark.parametrize(("streams", "window"), [(3, 4), (2, 3), (1, 7)])
def test_stream_gpt_under_charlm_evaluate_scores_every_character_with_the_promised_context(streams, window):
    torch.manual_seed(0)
    gpt = GPT(TOY, vocab_size=7).eval()
    ids = torch.randint(0, 7, (50,), dtype=torch.uint8)  # charlm's corpora are small integer tensors
    result = evaluate(StreamGPT(gpt, window), ids, batch_size=streams, num_steps=window)
    with torch.no_grad():
        expected = brute_force_nats(gpt, ids.long(), streams, window)
    assert result["chars"] == streams * ((len(ids) - 1) // streams)
    assert result["nats_per_char"] == pytest.approx(expected, rel=1e-5)


def test_a_window_must_leave_room_for_context():
    with pytest.raises(ValueError, match="window"):
        StreamGPT(GPT(TOY, vocab_size=7), TOY.block_size)


def test_schedule_warms_up_then_follows_iterations_or_the_clock_whichever_leads():
    r = Recipe()
    assert lr_at(0, 0.0, r) == pytest.approx(1e-3 / 101)
    assert lr_at(99, 0.0, r) == pytest.approx(1e-3 * 100 / 101)
    assert lr_at(100, 0.0, r) == pytest.approx(1e-3)
    halfway = r.min_lr + 0.5 * (r.lr - r.min_lr)
    assert lr_at(2550, 0.0, r) == pytest.approx(halfway)  # nanoGPT's cosine over 5,000 iterations
    assert lr_at(200, 0.5, r) == pytest.approx(halfway)  # the budget half used: the clock leads
    assert lr_at(200, 1.0, r) == pytest.approx(r.min_lr) and lr_at(9000, 0.0, r) == pytest.approx(r.min_lr)


def test_training_to_a_budget_evaluates_on_the_clock_and_at_the_end(single_thread):
    torch.manual_seed(0)
    text = torch.tensor([i % 5 for i in range(3000)], dtype=torch.uint8)  # a cycle: learnable in seconds
    gpt = GPT(SMOKE, vocab_size=5)
    race = Race(text[:2700], text[2700:], streams=4, budget=1.0, eval_every=0.25, device=torch.device("cpu"))
    evals = train_to_budget(gpt, SMOKE, race, log=lambda line: None)
    seconds = [e["train_seconds"] for e in evals]
    assert seconds == sorted(seconds) and seconds[-1] >= 1.0 and len(evals) >= 2
    assert all(math.isfinite(e["val_loss"]) and e["val_chars"] == 4 * (299 // 4) for e in evals)  # the whole split
    assert evals[-1]["chars_seen"] == evals[-1]["iter"] * SMOKE.batch_size * SMOKE.block_size
