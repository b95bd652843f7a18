"""Score a text with dynamic evaluation: one stream read in segments of num_steps characters, the hidden state
carried as in static scoring, and after each segment has been scored, one update (adapter.py) on its loss.

 text   c0 c1 c2 ... c63 | c64 ... c127 | c128 ...
        └─ segment 1 ──┘  └ segment 2 ┘
        score 1 (the model as trained) ─► step on 1's loss ─► score 2 (adapted to 1) ─► step ─► ...

A character's loss is taken before any step on a segment that holds it: changing the text after position t
changes no loss up to t (tests/test_dynamic_scoring.py checks it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from charlm.dynamic.adapter import Adapter
from charlm.evaluate import CharLosses, Kept, Streams, total_dtype
from charlm.model import detach_hidden
from charlm.runtime.capability import autocast_dtype
from charlm.units import perplexity

# an adapted model this many times worse than a uniform guess has diverged: dynamic evaluation moves a model a
# little toward the text it reads, and none that it helps (or leaves as it was) scores near this
DIVERGED = 4


def diverged(nats_per_char: float, vocab_size: int) -> bool:
    """Whether an adapted model's loss says its steps diverged: not a number, a perplexity past a float's range, or
    over DIVERGED times a uniform guess's among the vocabulary."""
    return not (math.isfinite(perplexity(nats_per_char)) and nats_per_char <= DIVERGED * math.log(max(vocab_size, 2)))


def precision_context(precision: str, device: torch.device):
    """Autocast for the precision the run trained in (fp32: none), so the steps cost what training's do."""
    dtype = autocast_dtype(precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def dynamic_losses(
    model,
    ids: torch.Tensor,
    adapter: Adapter,
    *,
    num_steps: int,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    reset: int | None = None,
    top_k: int = 0,
    keep: int | None = None,
    progress: Callable[[int], object] | None = None,
    features: bool = False,
) -> CharLosses:
    """The losses of `ids` read in one stream under dynamic evaluation, adapting `model` in place as it goes
    (the adapter holds the same parameters). Sums and kept losses as evaluate.char_losses gives them.

    With lr 0 no gradient is taken (there is no step to take), and the forward runs in inference mode as static
    scoring's does: the figures are then those of static scoring in one stream, to the last bit. `features`: as
    evaluate.char_losses's (the mix's gate reads them)."""
    device = torch.device(device)
    layout = Streams.of(len(ids), 1)
    inputs, targets = layout.rows(ids, 0, device), layout.rows(ids, 1, device)
    was_training = model.training
    model.eval()  # dropout off: the text is read as in scoring; the steps are the only change
    vocab, chars = model.vocab_size, layout.length
    total = torch.zeros((), dtype=total_dtype(device), device=device)
    count = torch.zeros(vocab, dtype=torch.int64, device=device)
    cost = torch.zeros(vocab, dtype=total.dtype, device=device)
    kept = Kept(chars if keep is None else min(keep, chars), chars, min(top_k, vocab), device, features=features)
    grad = torch.enable_grad() if adapter.adapts else torch.inference_mode()
    hidden = None
    with grad:
        for start in range(0, chars, num_steps):
            x = inputs[:, start : start + num_steps]
            with precision_context(precision, device):
                # reset: the id (<eod>) whose reading zeroes the state, for a run trained so (evaluate.reset_id)
                logits, hidden = model(x, hidden) if reset is None else model(x, hidden, starts=x == reset)
            y = targets[:, start : start + num_steps].T.reshape(-1).long()
            log_probs = F.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=1)
            loss = F.nll_loss(log_probs, y, reduction="sum")
            nats = -log_probs.detach().gather(1, y[:, None]).squeeze(1)
            total += loss.detach().to(total.dtype)
            count += torch.bincount(y, minlength=vocab)
            cost += torch.bincount(y, weights=nats.to(cost.dtype), minlength=vocab)
            kept.add(start, nats.view(-1, 1), log_probs.detach().view(-1, 1, vocab))
            if adapter.adapts:
                (loss / y.numel()).backward()
                adapter.step()
                hidden = detach_hidden(hidden)
            if progress is not None:
                progress(y.numel())
    model.train(was_training)
    return kept.losses(total, chars, count, cost)
