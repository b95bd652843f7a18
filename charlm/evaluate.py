"""Score text with a model: nats per character, bits per character and perplexity.

Protocol: the text is cut into `batch_size` contiguous streams that are read in windows of
`num_steps` with the hidden state carried through each whole stream. Every character after the first
of the text is a target once, except a tail shorter than `batch_size` characters; `chars` says how
many were scored. With `max_chars` (a fast estimate during training) each stream is read only for its
first max_chars / batch_size characters: a sample spread evenly over the whole text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from charlm.errors import CorpusError, UsageError, shown
from charlm.events import advancing
from charlm.units import check_finite_loss, perplexity

if TYPE_CHECKING:
    from charlm.data import Corpus, Vocab
    from charlm.model import CharRNN
    from charlm.store.checkpoint import Checkpoint


@dataclass(frozen=True)
class Streams:
    """How a text of n ids is read: `streams` rows of `length` inputs, each row's hidden state carried.

    Row s holds inputs ids[s*full_length : s*full_length + length] and their targets one further on, so
    in text order the scored targets are ids[1 : streams*full_length + 1] (with length == full_length).
    """

    streams: int
    length: int
    full_length: int

    @classmethod
    def of(cls, n: int, batch_size: int, max_chars: int | None = None) -> Streams:
        if n < 2:
            raise CorpusError(f"the text to score has {n} character(s): it needs at least 2")
        streams = min(batch_size, n - 1)
        length = full_length = (n - 1) // streams
        if max_chars is not None:
            length = max(1, min(length, max_chars // streams))
        return cls(streams, length, full_length)

    def rows(self, ids: torch.Tensor, shift: int, device: torch.device, mine=slice(None)) -> torch.Tensor:
        """Inputs (shift 0) or targets (shift 1) as (streams, length), on `device`."""
        span = ids[shift : self.streams * self.full_length + shift].view(self.streams, self.full_length)
        return span[mine, : self.length].to(device)


def _windows(model, inputs: torch.Tensor, num_steps: int, reset_id: int | None = None):
    """(start, logits, hidden) of each window of `num_steps` inputs, the hidden state carried across windows
    (zeroed where a row reads `reset_id`, <eod>, when the model was trained so: the reset is part of the model)."""
    hidden = None
    for start in range(0, inputs.shape[1] if len(inputs) else 0, num_steps):
        x = inputs[:, start : start + num_steps]
        logits, hidden = model(x, hidden) if reset_id is None else model(x, hidden, starts=x == reset_id)
        yield start, logits, hidden


def reset_id(config, vocab) -> int | None:
    """The id whose reading zeroes the state when `config` trained with train.reset_state_at_documents."""
    return vocab.eod if config.train.reset_state_at_documents else None


def total_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # float64 where the device has it


@torch.inference_mode()
def evaluate(
    model,
    ids: torch.Tensor,
    *,
    batch_size: int,
    num_steps: int,
    device: torch.device | str = "cpu",
    max_chars: int | None = None,
    ranks=None,
    progress: Callable[[int], object] | None = None,
    reset: int | None = None,
) -> dict:
    """`ranks` (distributed.Ranks): score this process's share of the streams and add up all shares.
    `progress(chars)` is called after each window with the characters it scored (a progress bar)."""
    layout = Streams.of(len(ids), batch_size, max_chars)
    device = torch.device(device)
    mine = ranks.share(layout.streams) if ranks is not None and ranks.active else slice(None)
    inputs, targets = layout.rows(ids, 0, device, mine), layout.rows(ids, 1, device, mine)
    was_training = model.training
    model.eval()
    # summed on the device (one sync at the end)
    total = torch.zeros((), dtype=total_dtype(device), device=device)
    for start, logits, _ in _windows(model, inputs, num_steps, reset):
        y = targets[:, start : start + num_steps].T.reshape(-1).long()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y, reduction="sum").to(total.dtype)
        if progress is not None:
            progress(y.numel())
    model.train(was_training)
    if ranks is not None:
        ranks.sum_(total)
    chars = layout.streams * layout.length
    nats = total.item() / chars
    part = f"first {layout.length} chars of each of {layout.streams} streams"
    protocol = "full" if layout.length == layout.full_length else part
    return {
        "nats_per_char": nats,
        "bits_per_char": nats / math.log(2),
        "perplexity": perplexity(nats),
        "chars": chars,
        "protocol": protocol,
    }


@dataclass
class CharLosses:
    """The losses of a text's scored characters: their sums by character, and each one's for the first `keep`.

    `nats[i]` is the loss of ids[i + 1], for the first `keep` scored characters in text order (all of them
    without `keep`); `count` and `cost` add up every scored character by its id (occurrences, and nats in
    float64), so memory follows `keep` and the vocabulary, not the text. `total` is summed exactly as
    `evaluate` sums (the same operations in the same order), so total / chars is evaluate's nats_per_char
    to the last bit; cost.sum() equals it to float rounding.
    """

    nats: torch.Tensor  # (min(keep, chars),) float32 on the CPU
    total: float
    chars: int  # characters scored
    count: torch.Tensor  # (vocab,) int64: scored occurrences of each id
    cost: torch.Tensor  # (vocab,) float64: their summed nats
    top_ids: torch.Tensor | None = None  # (len(nats), k) the model's k most likely characters at each kept position
    top_probs: torch.Tensor | None = None  # (len(nats), k) their probabilities
    features: torch.Tensor | None = None  # (len(nats), 2) the distribution's entropy and top log-prob (mixing)

    @property
    def nats_per_char(self) -> float:
        return self.total / self.chars


@torch.inference_mode()
def char_losses(
    model,
    ids: torch.Tensor,
    *,
    batch_size: int,
    num_steps: int,
    device: torch.device | str = "cpu",
    top_k: int = 0,
    keep: int | None = None,
    reset: int | None = None,
    progress: Callable[[int], object] | None = None,
    features: bool = False,
) -> CharLosses:
    """The losses of `ids` under the protocol of `evaluate` (whole streams, hidden state carried): summed by
    character for all, each one kept for the first `keep` scored characters (None: all).

    With top_k, also the k most likely next characters at each kept position and their probabilities, with `features`
    its entropy and top log-prob; `progress(chars)` after each window, as `evaluate`'s (its exception ends it)."""
    layout = Streams.of(len(ids), batch_size)
    device = torch.device(device)
    inputs, targets = layout.rows(ids, 0, device), layout.rows(ids, 1, device)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=total_dtype(device), device=device)
    vocab, chars = model.vocab_size, layout.streams * layout.length
    count = torch.zeros(vocab, dtype=torch.int64, device=device)
    cost = torch.zeros(vocab, dtype=total_dtype(device), device=device)
    kept = Kept(
        chars if keep is None else min(keep, chars), layout.length, min(top_k, vocab), device, features=features
    )
    for start, logits, _ in _windows(model, inputs, num_steps, reset):
        steps = logits.shape[0]
        y = targets[:, start : start + num_steps].T.reshape(-1).long()
        # cross_entropy is log_softmax then nll_loss: the same two calls give evaluate's sum bit for bit
        log_probs = F.log_softmax(logits.reshape(-1, logits.shape[-1]).float(), dim=1)
        total += F.nll_loss(log_probs, y, reduction="sum").to(total.dtype)
        nats = -log_probs.gather(1, y[:, None]).squeeze(1)  # time-major: row t * streams + s
        count += torch.bincount(y, minlength=vocab)
        cost += torch.bincount(y, weights=nats.to(cost.dtype), minlength=vocab)
        kept.add(start, nats.view(steps, -1), log_probs.view(steps, layout.streams, -1))
        if progress is not None:
            progress(y.numel())
    model.train(was_training)
    return kept.losses(total, chars, count, cost)


class Kept:
    """The first `size` scored characters in text order, gathered window by window: stream s holds text positions
    s * length ..., so only the streams that reach into the first `size` are read (`features`: see char_losses)."""

    def __init__(self, size: int, length: int, top_k: int, device: torch.device, *, features: bool = False):
        self.size, self.length, self.top_k = size, length, top_k
        self.nats = torch.empty(size, device=device)
        self.top_ids = torch.empty(size, top_k, dtype=torch.int64, device=device)
        self.top_probs = torch.empty(size, top_k, device=device)
        self.features = torch.empty(size, 2, device=device) if features else None

    def losses(self, total: torch.Tensor, chars: int, count: torch.Tensor, cost: torch.Tensor) -> CharLosses:
        """The CharLosses of a text scored: these kept characters, and the sums (on the CPU, one sync)."""
        top = (self.top_ids.cpu(), self.top_probs.cpu()) if self.top_k else (None, None)
        features = (self.features.cpu(),) if self.features is not None else ()
        return CharLosses(self.nats.cpu(), total.item(), chars, count.cpu(), cost.cpu().double(), *top, *features)

    def add(self, start: int, nats: torch.Tensor, log_probs: torch.Tensor) -> None:
        """nats (steps, streams) and log_probs (steps, streams, vocab) of the window at `start`."""
        for s in range(min(nats.shape[1], -(-self.size // self.length))):
            at = s * self.length + start
            n = min(nats.shape[0], self.size - at)
            if n <= 0:
                continue
            self.nats[at : at + n] = nats[:n, s]
            if self.top_k:
                best = log_probs[:n, s].topk(self.top_k, dim=1)
                self.top_ids[at : at + n], self.top_probs[at : at + n] = best.indices, best.values.exp()
            if self.features is not None:
                lp = log_probs[:n, s]
                entropy = -(lp.exp() * lp.nan_to_num(neginf=0.0)).sum(1)
                self.features[at : at + n] = torch.stack([entropy, lp.max(1).values], dim=1)


@dataclass(frozen=True)
class TextSource:
    """What to score: a `split` of the run's own corpus (val when nothing is given), a text `file` or a string
    `text`, exactly one. A string is read as one stream: cut into eval_batch_size streams, a sentence would be
    scored mostly from a fresh state (`text_as_file`: as a file holding it, in eval_batch_size streams, as the
    Python API's Model.perplexity(text) documents). Checked when made: UsageError names the CLI's flags."""

    split: str | None = None
    file: Path | None = None
    text: str | None = None
    text_as_file: bool = False

    def __post_init__(self):
        flags = (("--split", self.split), ("--file", self.file), ("--text", self.text))
        given = [flag for flag, value in flags if value is not None]
        if len(given) > 1:
            many = "both" if len(given) == 2 else "all three"
            raise UsageError(f"{' and '.join(given)} were given: pass one of them, not {many}")
        if self.split is not None and (not isinstance(self.split, str) or self.split not in ("train", "val", "test")):
            raise UsageError(f"split {self.split!r} is not valid: use train, val or test")
        if self.text is not None and not isinstance(self.text, str):
            raise UsageError(f"the text to score must be a str, not {shown(self.text)}: pass text, or file=PATH")
        if not given:
            object.__setattr__(self, "split", "val")  # frozen: the default, set once here

    @property
    def description(self) -> str:
        """How outputs name it: "val split", the file's path, "--text" (the CLI) or "text" (the Python API)."""
        if self.file is not None:
            return str(self.file)
        if self.text is not None:
            return "text" if self.text_as_file else "--text"
        return f"{self.split} split"


@dataclass
class TextToScore:
    """A run's model and vocabulary with the text to score, encoded; `corpus` when the run's corpus was read."""

    model: CharRNN
    vocab: Vocab
    checkpoint: Checkpoint
    ids: torch.Tensor
    source: str  # TextSource.description: "val split", a file's path, or "--text"
    streams: int  # how many streams it is read in: the run's eval_batch_size, 1 for a string (a short text)
    corpus: Corpus | None = None


def load_text_to_score(
    run_dir: Path, which: str, source: TextSource, *, device: torch.device | str = "cpu"
) -> TextToScore:
    """A run's (or an exported model folder's) checkpoint (best or last) and a text to score: see text_to_score."""
    from charlm.store.model_dir import load_model

    return text_to_score(*load_model(run_dir, which, device), source)


def text_to_score(model, vocab, checkpoint: Checkpoint, source: TextSource) -> TextToScore:
    """A loaded model and a text to score: a split of its own corpus, a text file or a string (see TextSource), in
    the run's own normalisation (newlines, PTB spacing); a split is refused if the corpus changed since training."""
    from charlm import data

    cfg, file, text = checkpoint.config, source.file, source.text
    streams = cfg.train.eval_batch_size
    if file is not None or text is not None:
        ids = data.encode_file(file, vocab, cfg.data) if file is not None else data.encode_text(text, vocab, cfg.data)
        if len(ids) < 2:  # one character has nothing before it: no prediction to score
            named = f"file {file}" if file is not None else ("the text" if source.text_as_file else "--text")
            raise UsageError(
                f"{named} has {len(ids)} character{'' if len(ids) == 1 else 's'} (after the run's "
                "normalisation): a text to score needs at least 2"
            )
        one_stream = text is not None and not source.text_as_file
        return TextToScore(model, vocab, checkpoint, ids, source.description, 1 if one_stream else streams)
    corpus = data.load_corpus(cfg.data, vocab=vocab)  # the run's ids (a fine-tuned run's are its parent's)
    if corpus.sha256 != checkpoint.corpus_sha256:
        raise UsageError(f"corpus {cfg.data.corpus} changed since this run was trained: score it with --file")
    ids = corpus.split(source.split)
    if len(ids) < 2:
        raise UsageError(f"this run has no {source.split} split: choose another --split or pass --file")
    return TextToScore(model, vocab, checkpoint, ids, source.description, streams, corpus)


def score_run(
    run_dir: Path,
    which: str,
    source: TextSource,
    *,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], object] | None = None,
) -> tuple[dict, Checkpoint]:
    """Score a run's (or a model folder's) checkpoint on a split of its own corpus, a text file or a string:
    (result, the checkpoint). `progress(done, total)` follows the characters scored."""
    return _score(load_text_to_score(run_dir, which, source, device=device), device, progress)


def score_model(
    model, vocab, checkpoint: Checkpoint, *, source: TextSource, device: torch.device | str = "cpu"
) -> tuple[dict, Checkpoint]:
    """score_run for a model already loaded (model, vocab and checkpoint as model_dir.load_model gives them)."""
    return _score(text_to_score(model, vocab, checkpoint, source), device)


def _score(scored: TextToScore, device, progress=None) -> tuple[dict, Checkpoint]:
    result = evaluate(
        scored.model,
        scored.ids,
        batch_size=scored.streams,
        num_steps=scored.checkpoint.config.train.num_steps,
        device=device,
        progress=advancing(progress, len(scored.ids) - 1),
        reset=reset_id(scored.checkpoint.config, scored.vocab),
    )
    check_finite_loss(result["nats_per_char"], scored.source)
    if scored.vocab.unk is not None:  # <unk> scores better than the text it stands for: say how much there was
        result["unknown_share"] = scored.vocab.unknown_share(scored.ids)
    return {**result, "source": scored.source}, scored.checkpoint
