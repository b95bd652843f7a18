"""Sample text from a model, starting from a prefix: greedy, temperature, top-k and top-p."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.errors import UsageError


def check_prefix(vocab: Vocab, prefix: str) -> list[int]:
    if not prefix:
        raise UsageError("the prefix is empty: pass at least one character, e.g. --prefix 分开")
    missing = vocab.missing(prefix)
    if missing:
        shown = " ".join(repr(c) for c in missing[:10])
        raise UsageError(f"the prefix has characters the model never saw: {shown}; "
                         "use characters of the training corpus")
    return vocab.encode(prefix)


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (n, vocab) -> next ids (n,). temperature 0 is greedy (argmax), as in d2l."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p: the first always stays
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def check_sampling(length: int, temperature: float, top_k: int, top_p: float, num_samples: int) -> None:
    for ok, message in [(length >= 0, "length must be >= 0"), (temperature >= 0, "temperature must be >= 0"),
                        (top_k >= 0, "top-k must be >= 0"), (0 < top_p <= 1, "top-p must be in (0, 1]"),
                        (num_samples >= 1, "num-samples must be >= 1")]:
        if not ok:
            raise UsageError(message)


def stream(model, vocab: Vocab, prefix: str, length: int, temperature: float = 0.0, top_k: int = 0,
           top_p: float = 1.0, num_samples: int = 1, seed: int | None = None,
           device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Yield the next ids (num_samples,) one step at a time, after warming up on the prefix.

    The arguments are checked here, before the first step, so a caller can rely on them being valid
    before it prints anything.
    """
    check_sampling(length, temperature, top_k, top_p, num_samples)
    ids = torch.tensor(check_prefix(vocab, prefix), device=device).repeat(num_samples, 1)
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()  # fresh randomness without touching torch's global generator
        else:
            generator.manual_seed(seed)
    return _steps(model, ids, length, temperature, top_k, top_p, generator)


def _steps(model, ids, length, temperature, top_k, top_p, generator) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            state = None
            if ids.shape[1] > 1:  # the prefix but its last character, in one call
                _, state = model(ids[:, :-1], state)
            current = ids[:, -1:]
            for _ in range(length):
                logits, state = model(current, state)
                next_ids = sample_next(logits[-1], temperature, top_k, top_p, generator)
                yield next_ids
                current = next_ids[:, None]
    finally:
        model.train(was_training)


def generate(model, vocab: Vocab, prefix: str, length: int, **options) -> list[str]:
    """The prefix followed by `length` sampled characters, for each of `num_samples` samples."""
    steps = list(stream(model, vocab, prefix, length, **options))
    num_samples = options.get("num_samples", 1)
    if not steps:
        return [prefix] * num_samples
    ids = torch.stack(steps, dim=1).tolist()  # one transfer for the whole sample
    return [prefix + vocab.decode(row) for row in ids]
