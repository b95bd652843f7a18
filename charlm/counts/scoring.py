"""Scoring with the mix: the network's losses of a text (evaluate.char_losses, or dynamic evaluation's) made
into the mix's, and the mix fitted where there is none for these weights.

The network reads the text as it always does (streams, or one stream adapting); the counts look up every
position's context in the whole text before it, window by window (reading.py), and the two meet per
character in the mixer. So the network's part of every figure is exactly what it was without the mix.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.analysis.novelty_index import index_key
from charlm.counts import kept
from charlm.counts.index import CountIndex
from charlm.counts.mixer import Mixer, fit
from charlm.counts.reading import chunks, concat, evidence_of
from charlm.evaluate import CharLosses, char_losses, reset_id
from charlm.events import advancing
from charlm.store.checkpoint import Checkpoint

# the mix is fitted on at most this many held-out characters (the first): on tiny shakespeare's val, fitted on
# its first 60,000 it scored the whole split 0.1% worse than fitted on all of it, in a quarter of the time
FIT_CHARS = 60_000


@dataclass
class Mix:
    """A model's counts: its training split's index, and its two mixers (static scoring: the network and the
    training text's counts; dynamic: also the counts of the text read so far)."""

    index: CountIndex
    static: Mixer
    dynamic: Mixer


def mixed_losses(
    losses: CharLosses, ids: torch.Tensor, index: CountIndex, mixer: Mixer, *, reset: int | None = None
) -> CharLosses:
    """`losses` (the network's, every character kept, with features) under the mix; `ids` the text scored;
    `reset`: the <eod> id where the run trained in document mode (the text read is counted per document)."""
    history = ids.numpy().astype(np.int64)
    chars = losses.chars
    nats = torch.empty(chars, dtype=torch.float64)
    for start, stop in chunks(1, chars + 1, reading=mixer.experts == 2):
        evidence = [evidence_of(index, history, start, stop, vocab_size=index.vocab_size)]
        if mixer.experts == 2:
            evidence.append(evidence_of(None, history, start, stop, vocab_size=index.vocab_size, reset=reset))
        window = slice(start - 1, stop - 1)
        network = -losses.nats[window].double()
        nats[window] = -mixer.log_probs(network, losses.features[window].double(), evidence)
    targets = ids[1 : chars + 1].long()
    count = torch.bincount(targets, minlength=index.vocab_size)
    cost = torch.bincount(targets, weights=nats, minlength=index.vocab_size)
    return CharLosses(nats.float(), float(nats.sum()), chars, count, cost, features=losses.features)


def load_mix(folder: Path, checkpoint: Checkpoint, model, *, device, say: Callable[[str], object]) -> Mix:
    """The mix of the model in `folder`: its counts' index and mixers, kept ones where they check out."""
    from charlm.dynamic.stats import weights_hash

    index = kept.load_index(folder, checkpoint, say)
    key, weights = index_key(checkpoint), weights_hash(model)
    path = kept.mix_path(folder, key, weights)
    mixers = kept.read_mixers(path, key=key, weights=weights, vocab_size=index.vocab_size)
    if mixers is None:
        started = time.perf_counter()
        mixers, report = fit_mix(model, checkpoint, index, device=device)
        report["seconds"] = round(time.perf_counter() - started, 2)
        where = kept.write_mixers(path, mixers, key=key, weights=weights, report=report)
        fitted = f"the {report['text']} ({report['chars']:,} characters) in {report['seconds']:.1f} s"
        say(f"mix fitted on {fitted}, {where}")
    return Mix(index, *mixers)


def fit_mix(model, checkpoint: Checkpoint, index: CountIndex, *, device) -> tuple[tuple[Mixer, Mixer], dict]:
    """The static and dynamic mixers fitted on the run's held-out text (kept.fit_text), and what they gave."""
    text, fit_index, name = kept.fit_text(checkpoint, index)
    ids = text[: FIT_CHARS + 1]
    cfg = checkpoint.config
    reset = reset_id(cfg, kept.vocab_of(checkpoint))  # the network's and the read counts' document boundary
    losses = char_losses(
        model,
        ids,
        batch_size=cfg.train.eval_batch_size,
        num_steps=cfg.train.num_steps,
        device=device,
        reset=reset,
        features=True,
    )
    history = ids.numpy().astype(np.int64)
    end = losses.chars + 1
    vocab_size = index.vocab_size
    static = concat([evidence_of(fit_index, history, *c, vocab_size=vocab_size) for c in chunks(1, end, reading=False)])
    read = concat(
        [evidence_of(None, history, *c, vocab_size=vocab_size, reset=reset) for c in chunks(1, end, reading=True)]
    )
    network, features = -losses.nats.double(), losses.features.double()
    static_mixer, static_loss = fit(index.vocab_size, network, features, [static])
    dynamic_mixer, dynamic_loss = fit(index.vocab_size, network, features, [static, read])
    report = {
        "text": name,
        "chars": losses.chars,
        "network_nats_per_char": losses.nats_per_char,
        "static_nats_per_char": static_loss,
        "dynamic_counts_nats_per_char": dynamic_loss,
    }
    kept.check_report(report)
    return (static_mixer, dynamic_mixer), report


@dataclass
class MixedScore:
    """A text scored by the network alone and by the mix, the same reading (static, or dynamic evaluation)."""

    source: str
    network: CharLosses
    mixed: CharLosses
    dynamic: bool
    unknown_share: float | None = None

    def to_dict(self) -> dict:
        """The figures as `perplexity --mix --json` prints them: the network's at the top, as with --no-mix."""
        mixed = figures(self.mixed)
        mixed["gain"] = 1 - self.mixed.nats_per_char / self.network.nats_per_char
        mixed["reading"] = "dynamic" if self.dynamic else "static"
        unknown = {} if self.unknown_share is None else {"unknown_share": self.unknown_share}
        return {**figures(self.network), **unknown, "mix": mixed}


def figures(losses: CharLosses) -> dict:
    from charlm.units import check_finite_loss, perplexity

    nats = losses.nats_per_char
    check_finite_loss(nats, "the text")
    return {
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
        "perplexity": perplexity(nats),
        "chars": losses.chars,
    }


def score_mixed(
    folder: Path,
    which: str,
    source,
    *,
    device,
    dynamic=None,
    say: Callable[[str], object] = lambda line: None,
    progress=None,
) -> MixedScore:
    """Score `source` with the model in `folder` alone and mixed with its counts (fitting the mix on first use);
    `dynamic` (DynamicOptions) reads it with dynamic evaluation, the counts then counting the text read too;
    `progress(done, total)`: the static reading's, a bar's."""
    from charlm.evaluate import load_text_to_score

    scored = load_text_to_score(folder, which, source, device=device)
    return score_text_mixed(scored, folder, which, device=device, dynamic=dynamic, say=say, progress=progress)


def score_text_mixed(
    scored, folder: Path, which: str, *, device, dynamic=None, say=lambda line: None, progress=None
) -> MixedScore:
    """score_mixed for a model and text already loaded (evaluate.TextToScore), the model from `folder`."""
    cfg = scored.checkpoint.config
    if dynamic is None:
        losses = char_losses(
            scored.model,
            scored.ids,
            batch_size=scored.streams,
            num_steps=cfg.train.num_steps,
            device=device,
            reset=reset_id(cfg, scored.vocab),
            features=True,
            progress=advancing(progress, len(scored.ids) - 1),
        )
    else:
        from charlm.dynamic.run import DynamicLosses

        losses = DynamicLosses(folder, which, dynamic, device=device)(scored, keep=None, top_k=0, features=True)
    figures(losses)  # a network whose loss is not finite: its one-line error, before any counting
    mix = load_mix(folder, scored.checkpoint, scored.model, device=device, say=say)
    mixer = mix.static if dynamic is None else mix.dynamic
    mixed = mixed_losses(losses, scored.ids, mix.index, mixer, reset=reset_id(cfg, scored.vocab))
    # <unk> scores better than the text it stands for: say how much there was, as without the mix
    unknown = scored.vocab.unknown_share(scored.ids) if scored.vocab.unk is not None else None
    return MixedScore(scored.source, losses, mixed, dynamic is not None, unknown)


class MixedLosses:
    """The per-character losses of the mix, for `surprisal.analyse` (--show, --html and --breakdown with --mix):
    the network's (static, or dynamic evaluation's with `dynamic`) made into the mix's. The top predictions
    shown on the page stay the network's; `label` says so."""

    def __init__(self, folder: Path, which: str, *, device, dynamic=None, say: Callable[[str], object]):
        self.folder, self.which, self.device, self.dynamic, self.say = folder, which, device, dynamic, say
        self.label = "mixed with counts; predictions: the network's"

    def __call__(self, scored, *, keep: int | None, top_k: int) -> CharLosses:
        mix = load_mix(self.folder, scored.checkpoint, scored.model, device=self.device, say=self.say)
        cfg = scored.checkpoint.config
        if self.dynamic is None:
            reading = dict(batch_size=scored.streams, num_steps=cfg.train.num_steps, device=self.device)
            losses = char_losses(
                scored.model, scored.ids, reset=reset_id(cfg, scored.vocab), top_k=top_k, features=True, **reading
            )
            mixer = mix.static
        else:
            from charlm.dynamic.run import DynamicLosses

            adapted = DynamicLosses(self.folder, self.which, self.dynamic, device=self.device)
            losses = adapted(scored, keep=None, top_k=top_k, features=True)
            self.label = f"{adapted.label}, {self.label}"
            mixer = mix.dynamic
        mixed = mixed_losses(losses, scored.ids, mix.index, mixer, reset=reset_id(cfg, scored.vocab))
        kept = slice(0, mixed.chars if keep is None else min(keep, mixed.chars))
        top = (losses.top_ids[kept], losses.top_probs[kept]) if top_k else (None, None)
        return CharLosses(mixed.nats[kept], mixed.total, mixed.chars, mixed.count, mixed.cost, *top)
