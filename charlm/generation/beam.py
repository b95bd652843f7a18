"""Beam search over characters: the most likely continuations of a context under the model.

Each step scores every (beam, next character) pair by its summed log-probability, keeps the `beams`
best (ties go to the lower beam, then the lower character id, so the result is deterministic), and runs
all kept beams as one batched step (`step.FastStep`). A beam that emits a stop text is finished:
its score is final, and it leaves the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from charlm.generation.fast_step import DEFAULT_WEIGHTS, reset_rows, warm_up

Beam = tuple[list[int], float, int | None]  # ids written, summed log-probability (nats), stop text index


def beam_search(
    model,
    context: torch.Tensor,
    *,
    length: int,
    beams: int,
    num_results: int,
    stops: list[list[int]] = (),
    weights: str = DEFAULT_WEIGHTS,
    reset: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[Beam]:
    """The `num_results` best continuations of `context` (1, P): `length` characters each, fewer when a
    stop text ended one. Best first, by summed log-probability under the model. `reset`: an id (<eod>) whose
    reading zeroes a beam's state (train.reset_state_at_documents). `progress(steps)` is called after each
    step (an exception it raises ends the search: a server's request that is gone)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _search(
                model,
                context,
                length=length,
                beams=beams,
                num_results=num_results,
                stops=stops,
                weights=weights,
                reset=reset,
                progress=progress,
            )
    finally:
        model.train(was_training)


def _search(
    model,
    context: torch.Tensor,
    *,
    length: int,
    beams: int,
    num_results: int,
    stops: list[list[int]],
    weights: str,
    reset: int | None,
    progress: Callable[[int], object] | None,
) -> list[Beam]:
    hidden, step = warm_up(model, context, weights)
    current = context[:, -1]
    tokens = context.new_empty(1, 0)
    scores = torch.zeros(1, device=context.device)
    finished: list[tuple[float, list[int], int]] = []
    for done in range(length):
        if progress is not None:
            progress(done)
        logits, hidden = step(current, reset_rows(hidden, current, reset))
        total = (scores[:, None] + logits.float().log_softmax(-1)).flatten()
        order = torch.sort(total, descending=True, stable=True).indices[:beams]
        parent, current = order // logits.shape[1], order % logits.shape[1]
        scores, tokens = total[order], torch.cat([tokens[parent], current[:, None]], 1)
        hidden = _select(hidden, parent)
        if stops:
            which = _stop_index(context, tokens, stops)
            ended = which >= 0
            if bool(ended.any()):  # one host sync per step, with stop texts only
                for row in ended.nonzero().flatten().tolist():
                    finished.append((scores[row].item(), tokens[row].tolist(), int(which[row])))
                keep = (~ended).nonzero().flatten()
                if len(keep) == 0:
                    break
                scores, tokens, current, hidden = scores[keep], tokens[keep], current[keep], _select(hidden, keep)
    active = [(score, ids, None) for score, ids in zip(scores.tolist(), tokens.tolist(), strict=True)]
    ranked = sorted(finished + active, key=lambda beam: -beam[0])  # stable: finished first among equals
    return [(ids, score, which) for score, ids, which in ranked[:num_results]]


def _select(hidden, rows: torch.Tensor):
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, rows) for h in hidden)
    return hidden.index_select(1, rows)


def _stop_index(context: torch.Tensor, tokens: torch.Tensor, stops: list[list[int]]) -> torch.Tensor:
    """(beams,) the index of the first stop text each beam's text now ends with, or -1 (it may begin in the
    context)."""
    text = torch.cat([context.expand(tokens.shape[0], -1), tokens], 1)
    which = torch.full((tokens.shape[0],), -1, device=tokens.device)
    for k, stop in reversed(list(enumerate(stops))):  # reversed: the first listed wins
        if len(stop) <= text.shape[1]:
            hit = (text[:, -len(stop) :] == torch.tensor(stop, device=text.device)).all(1)
            which = torch.where(hit, k, which)
    return which
