"""Items: whole documents sampled from a model trained on documents (data.documents lines, paragraphs or
files), N at once in one batch.

An item starts where a document starts in training: the model reads <eod> (the end of the document before;
with train.reset_state_at_documents from a zero state, as in training), then the prefix if one is given,
and writes until it emits <eod>, a stop text, or `length` characters. Its text leaves the <eod> out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.data import Vocab
from charlm.errors import UsageError
from charlm.generation.options import SamplingOptions
from charlm.generation.sampling import Stream

NO_END = (
    "this model has no end-of-document symbol, so it cannot write whole items: train it with "
    "data.documents: lines, paragraphs or files"
)


@dataclass(frozen=True)
class Item:
    """One item: `text` is the prefix followed by what the model wrote, without the <eod> that ended it."""

    prefix: str
    text: str
    generated: int  # characters the model wrote (the <eod> not counted)
    ended: bool  # True: it ended at <eod>; False: at a stop text (`stop`) or after `length` characters
    stop: str | None
    bits_per_char: float | None  # mean -log2 p of what it wrote, the <eod> included (ending is a choice too)

    def record(self, number: int, length: int, options: SamplingOptions) -> dict:
        """The JSON object of `charlm generate --items N --json`."""
        return {
            "item": number,
            "prefix": self.prefix,
            "text": self.text,
            "generated": self.generated,
            "ended": self.ended,
            "stop": self.stop,
            "bits_per_char": self.bits_per_char,
            "options": {"length": length, **options.to_dict()},
        }


def items(
    model,
    vocab: Vocab,
    count: int,
    *,
    length: int,
    prefix: str | None = None,
    device: torch.device | str = "cpu",
    unknown: str = "refuse",
    **options,
) -> list[Item]:
    """`count` items sampled in one batch (one Stream of `count` rows); `options` are SamplingOptions' fields
    but num_samples (it is `count`) and beam (items are sampled)."""
    if vocab.eod is None:
        raise UsageError(NO_END)
    if "num_samples" in options:
        raise UsageError("items takes the number of items as its count: drop num_samples")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"the number of items must be a whole number >= 1, not {count!r}")
    chosen = SamplingOptions.of({**options, "num_samples": count})
    if chosen.beam:
        raise UsageError("items are sampled, not searched: drop --beam")
    stream = Stream(
        model,
        vocab,
        prefix,
        length=length,
        options=chosen,
        device=device,
        unknown=unknown,
        start=[vocab.eod],
        end=vocab.eod,
        rows=("item", "--items"),
    )
    samples = stream.samples()
    which = stream.stops.which.tolist()
    made = []
    for sample, k in zip(samples, which, strict=True):
        ended = k == len(chosen.stop)
        text = sample.text[: -len(vocab.chars[vocab.eod])] if ended else sample.text
        generated = sample.generated - 1 if ended else sample.generated
        made.append(Item(sample.prefix, text, generated, ended, sample.stop, sample.bits_per_char))
    return made
