"""Per-character surprisal: what each character of a text costs a run's model, and why.

`analyse` scores a text with the protocol of `charlm perplexity` (`evaluate.char_losses`: whole streams,
the hidden state carried), so its totals are that command's figures; it sums the bits by character as it
goes and keeps each character's bits only for the first characters, those --show and --html show.
`Surprisal.breakdown` groups the characters by how often they occur in the run's training split (never,
rarely, often) and names the costliest ones; `page` lays the same out as a self-contained HTML page.

A text with characters outside the vocabulary is refused, as by `charlm perplexity`: the model has no
id for them, so they cannot be scored; the error counts them and shows the first 20.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charlm.errors import CharlmError
from charlm.evaluate import TextSource, char_losses, load_text_to_score, reset_id
from charlm.units import check_finite_loss, figures

RARE = 5  # a character seen fewer times than this in training is "rare"
COSTLY = 10  # how many of the costliest characters the breakdown names
TOP_PREDICTIONS = 5  # predictions per character on the page
# white (certain) to dark red (as costly as a uniform guess over the vocabulary, or more): (fraction, rgb)
HEAT_STOPS = ((0.0, (255, 255, 255)), (0.35, (254, 224, 139)), (0.7, (244, 109, 67)), (1.0, (165, 0, 38)))


@dataclass
class Band:
    name: str  # unseen | rare | common
    description: str
    chars: int
    share_of_text: float
    mean_bits: float | None  # None for an empty band
    share_of_loss: float


@dataclass
class CostlyChar:
    char: str
    count: int  # occurrences among the scored characters
    train_count: int | None  # occurrences in the training split (None: the training corpus was not readable)
    mean_bits: float
    share_of_loss: float


@dataclass
class Breakdown:
    bands: list[Band] | None  # None when the training split could not be read (see note)
    costly: list[CostlyChar]
    note: str | None = None

    def to_dict(self) -> dict:
        return {
            "rare_below": RARE,
            "bands": None if self.bands is None else [asdict(b) for b in self.bands],
            "costly": [asdict(c) for c in self.costly],
            "note": self.note,
        }


@dataclass
class Surprisal:
    """A scored text: the figures of all of it, its bits summed by character, and each character's bits and
    top predictions for the first characters only (what --show and --html show), so that memory follows
    --show-chars and the vocabulary, never the text.

    `shown_ids` are the text's first characters; `bits[i]` is the cost of shown_ids[i + 1] (the first has
    no prediction; a tail shorter than the number of streams is not scored either, as in `evaluate`)."""

    run_dir: Path
    checkpoint: str  # best | last
    epoch: int
    source: str
    chars_of_vocab: list[str]
    shown_ids: torch.Tensor  # the text's first characters
    bits: torch.Tensor  # float32: the cost of each of shown_ids[1:] that was scored
    chars: int  # characters scored
    text_chars: int  # characters of the whole text
    count: torch.Tensor  # (vocab,) scored occurrences of each character
    cost: torch.Tensor  # (vocab,) float64: their summed bits
    nats_per_char: float  # exactly evaluate's figure (charlm perplexity)
    train_counts: torch.Tensor | None  # occurrences of each id in the training split
    train_note: str | None = None  # why train_counts is None
    top_ids: torch.Tensor | None = None  # (len(bits), TOP_PREDICTIONS)
    top_probs: torch.Tensor | None = None
    copied: list[tuple[int, int]] | None = None  # with copied_min: the [start, end) spans found in training
    copied_min: int | None = None  # among the shown characters, spans at least this long (None: not asked)
    unknown_share: float | None = None  # the share of the text that is <unk> (None: the model has no <unk>)

    @property
    def uniform_bits(self) -> float:
        """The cost of a uniform guess over the vocabulary: the top of the colour scale."""
        return math.log2(len(self.chars_of_vocab))

    def figures(self) -> dict:
        """The figures of `charlm perplexity --json`."""
        return {
            **figures(self.nats_per_char, self.chars),
            # a model with <unk> scores rare characters as one easy symbol: say how much of the text that was
            **({} if self.unknown_share is None else {"unknown_share": self.unknown_share}),
        }

    def breakdown(self) -> Breakdown:
        count, cost = self.count.long(), self.cost.double()
        total = float(cost.sum())
        order = [int(i) for i in cost.argsort(descending=True)[:COSTLY] if count[i] > 0]
        costly = [
            CostlyChar(
                self.chars_of_vocab[i],
                int(count[i]),
                None if self.train_counts is None else int(self.train_counts[i]),
                float(cost[i] / count[i]),
                float(cost[i]) / total,
            )
            for i in order
        ]
        if self.train_counts is None:
            return Breakdown(None, costly, self.train_note)
        seen = self.train_counts.long()  # a band holds the characters seen this often in training
        masks = {"unseen": seen == 0, "rare": (seen > 0) & (seen < RARE), "common": seen >= RARE}
        descriptions = {
            "unseen": "unseen (0 in training)",
            "rare": f"rare (1-{RARE - 1} in training)",
            "common": f"common ({RARE}+ in training)",
        }
        bands = []
        for name, mask in masks.items():
            n = int(count[mask].sum())
            band_bits = float(cost[mask].sum())
            bands.append(
                Band(name, descriptions[name], n, n / self.chars, band_bits / n if n else None, band_bits / total)
            )
        return Breakdown(bands, costly)

    def display(self, limit: int) -> list[tuple[str, float | None]]:
        """The first `limit` characters of the text (at most those kept) with their bits (None: not scored)."""
        shown = self.shown_ids[:limit].tolist()
        bits = self.bits[: max(0, limit - 1)].tolist()
        return [(self.chars_of_vocab[c], bits[i - 1] if 0 < i <= len(bits) else None) for i, c in enumerate(shown)]


def analyse(
    run_dir: Path,
    which: str,
    source: TextSource,
    *,
    device: torch.device | str = "cpu",
    predictions: bool = False,
    keep: int = 0,
    losses_of=None,
    copied_min: int | None = None,
    say=lambda line: None,
) -> Surprisal:
    """Score a text (a split, a file or a string) under a run's checkpoint: the figures and the bits by
    character of all of it, and each of the first `keep` characters' bits (what --show and --html show).

    `losses_of(scored, keep=, top_k=)` scores by another protocol (dynamic.run.DynamicLosses; its `label` is
    added to the source's name).
    With `predictions`, also the model's TOP_PREDICTIONS most likely characters at each of those (for the page);
    with `copied_min`, the spans of those characters at least that long found in the training split (the
    novelty index, novelty_index.checker; `say` hears whether it was built).
    """
    scored = load_text_to_score(run_dir, which, source, device=device)
    losses = _losses(scored, device, top_k=TOP_PREDICTIONS if predictions else 0, keep=max(0, keep - 1), by=losses_of)
    check_finite_loss(losses.nats_per_char, scored.source)  # a NaN here would shade, sum and print as noise
    counts, note = _train_counts(scored)
    copied = None
    if copied_min is not None:
        from charlm.analysis.novelty_index import checker

        copied = checker(Path(run_dir), scored.checkpoint, say=say).copied(scored.ids[:keep].numpy(), copied_min)
    return Surprisal(
        Path(run_dir),
        which,
        scored.checkpoint.train_state.epoch,
        scored.source,
        scored.vocab.chars,
        scored.ids[:keep].clone(),
        losses.nats / math.log(2),
        losses.chars,
        len(scored.ids),
        losses.count,
        losses.cost / math.log(2),
        losses.nats_per_char,
        counts,
        note,
        losses.top_ids,
        losses.top_probs,
        copied,
        copied_min,
        scored.vocab.unknown_share(scored.ids),
    )


def _losses(scored, device, *, top_k: int, keep: int, by=None):
    """The text's losses by `evaluate`'s protocol, or by `by` (dynamic evaluation), whose label joins the source."""
    if by is not None:
        losses = by(scored, keep=keep, top_k=top_k)
        scored.source = f"{scored.source} ({by.label})"
        return losses
    return char_losses(
        scored.model,
        scored.ids,
        batch_size=scored.streams,
        num_steps=scored.checkpoint.config.train.num_steps,
        device=device,
        top_k=top_k,
        keep=keep,
        reset=reset_id(scored.checkpoint.config, scored.vocab),
    )


def _train_counts(scored) -> tuple[torch.Tensor | None, str | None]:
    """How often each character occurs in the run's training split, or why that cannot be known."""
    from charlm import data

    corpus = scored.corpus
    if corpus is None:
        try:
            corpus = data.load_corpus(scored.checkpoint.config.data)
        except CharlmError as e:
            return None, f"the training corpus could not be read ({e}): no bands"
        if corpus.sha256 != scored.checkpoint.corpus_sha256:
            return None, "the training corpus changed since this run was trained: no bands"
    return torch.bincount(corpus.train.long(), minlength=len(scored.vocab)), None


def heat(fraction: float) -> tuple[int, int, int]:
    """The shading of a cost that is `fraction` of the scale (clamped to [0, 1]), by HEAT_STOPS."""
    fraction = min(1.0, max(0.0, fraction))
    for (lo, low_rgb), (hi, high_rgb) in zip(HEAT_STOPS, HEAT_STOPS[1:], strict=False):
        if fraction <= hi:
            t = (fraction - lo) / (hi - lo)
            return tuple(round(a + (b - a) * t) for a, b in zip(low_rgb, high_rgb, strict=True))  # type: ignore[return-value]
    return HEAT_STOPS[-1][1]


def page_data(report: Surprisal, breakdown: Breakdown, limit: int) -> dict:
    """The data of the self-contained HTML page (ui/pages renders it): the shaded
    text (bits and top predictions on hover) and the breakdown."""
    shown = report.display(limit)
    top = []
    if report.top_ids is not None:
        scored = min(report.chars, max(0, len(shown) - 1))
        for ids, probs in zip(report.top_ids[:scored].tolist(), report.top_probs[:scored].tolist(), strict=True):
            top.append([[report.chars_of_vocab[i], round(p, 4)] for i, p in zip(ids, probs, strict=True)])
    data = {
        "title": f"{report.run_dir.name}: surprisal on {report.source}",
        "run": str(report.run_dir),
        "checkpoint": report.checkpoint,
        "epoch": report.epoch,
        "source": report.source,
        "figures": report.figures(),
        "vocab_size": len(report.chars_of_vocab),
        "scale_bits": report.uniform_bits,
        "stops": [[f, list(rgb)] for f, rgb in HEAT_STOPS],
        "text": [c for c, _ in shown],
        "bits": [None if b is None else round(b, 3) for _, b in shown],
        "top": top,
        "breakdown": breakdown.to_dict(),
        "total_text_chars": report.text_chars,
        "copied": None if report.copied is None else {"min_span": report.copied_min, "spans": report.copied},
    }
    return data
