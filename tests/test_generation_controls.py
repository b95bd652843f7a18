"""Stop texts and the repetition penalty, step by step on id tensors."""

from __future__ import annotations

import torch

from charlm.generation.controls import RepetitionPenalty, StopTexts


def test_repetition_penalty_on_logits():
    context = torch.tensor([[0, 1, 2, 3]])
    penalty = RepetitionPenalty(2.0, 3, 6, context)  # the window holds ids 1, 2, 3
    logits = torch.tensor([[4.0, 4.0, -4.0, 0.5, 4.0, -4.0]])
    assert penalty(logits).tolist() == [[4.0, 2.0, -8.0, 0.25, 4.0, -4.0]]
    penalty.push(torch.tensor([5]))  # id 1 leaves the window, 5 enters
    assert penalty(logits).tolist() == [[4.0, 4.0, -8.0, 0.25, 4.0, -8.0]]


def test_repetition_penalty_window_longer_than_the_context():
    penalty = RepetitionPenalty(2.0, 10, 4, torch.tensor([[1], [2]]))  # one row per sample
    logits = torch.ones(2, 4)
    assert penalty(logits).tolist() == [[1.0, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 1.0]]


def test_stop_texts_record_when_and_which():
    context = torch.tensor([[0, 1], [0, 2], [3, 3]])
    stops = StopTexts([[1, 2], [3]], context)  # texts "ids 1 2" and "id 3"
    assert not stops.push(torch.tensor([2, 1, 0]), 1)  # sample 0 ends "1 2" (begun in the context)
    assert stops.ended.tolist() == [1, -1, -1] and stops.which.tolist() == [0, -1, -1]
    assert not stops.push(torch.tensor([3, 2, 1]), 2)  # sample 1 ends "1 2"; sample 0 stays stopped at 1
    assert stops.ended.tolist() == [1, 2, -1] and stops.which.tolist() == [0, 0, -1]
    assert stops.push(torch.tensor([0, 0, 3]), 3)  # sample 2 emits 3: all have stopped
    assert stops.ended.tolist() == [1, 2, 3] and stops.which.tolist() == [0, 0, 1]
