"""Per-step controls of sampling, kept on the device: which samples emitted a stop text, and the
repetition penalty. Each step costs a few tensor ops, no per-character Python work."""

from __future__ import annotations

import torch


class StopTexts:
    """Which samples have emitted a stop text, and when: tracked on the device, one comparison per text."""

    def __init__(self, stops: list[list[int]], context: torch.Tensor):
        width = max(len(s) for s in stops)
        pad = context.new_full((context.shape[0], width), -1)
        self.recent = torch.cat([pad, context], 1)[:, -width:]  # a stop text may begin in the prefix
        self.patterns = [torch.tensor(s, device=context.device) for s in stops]
        self.ended = torch.full((context.shape[0],), -1, device=context.device)  # characters written, or -1
        self.which = torch.full_like(self.ended, -1)

    def push(self, ids: torch.Tensor, written: int) -> bool:
        """Record the step's ids; True once every sample has stopped (one host sync per step)."""
        self.recent = torch.cat([self.recent[:, 1:], ids[:, None]], 1)
        for k, pattern in enumerate(self.patterns):
            hit = (self.recent[:, -len(pattern) :] == pattern).all(1) & (self.ended < 0)
            self.ended = torch.where(hit, written, self.ended)
            self.which = torch.where(hit, k, self.which)
        return bool((self.ended >= 0).all())


class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al. 2019) over the last `window` characters.

    The logit of a character seen in the window is divided by `penalty` when positive and multiplied by
    it when negative, so R > 1 makes every recent character less likely, whatever its sign.
    """

    def __init__(self, penalty: float, window: int, vocab_size: int, context: torch.Tensor):
        self.penalty, self.vocab_size = penalty, vocab_size
        pad = context.new_full((context.shape[0], window), vocab_size)  # an id past the vocabulary: no one
        self.recent = torch.cat([pad, context], 1)[:, -window:]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        seen = torch.zeros(logits.shape[0], self.vocab_size + 1, dtype=torch.bool, device=logits.device)
        seen = seen.scatter_(1, self.recent, True)[:, :-1]
        penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(seen, penalised, logits)

    def push(self, ids: torch.Tensor) -> None:
        self.recent = torch.cat([self.recent[:, 1:], ids[:, None]], 1)
