"""Sample text from a model, starting from a prefix (or from a new line).

Greedy, temperature, top-k and top-p sampling, a repetition penalty and stop texts, as keyword options
(`options.SamplingOptions`) of `stream`, `samples` and `generate`; `beam=N` switches to beam search (beam.py).
Each sample comes back as an `options.Sample`, scored under the model itself (its mean bits per character).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from charlm.data import Vocab
from charlm.data.vocab import not_utf8
from charlm.errors import UsageError
from charlm.files.limits import check_memory
from charlm.generation.controls import RepetitionPenalty, StopTexts
from charlm.generation.fast_step import reset_rows, warm_up
from charlm.generation.options import Sample, SamplingOptions

# the prefix's checks live with its text form; named here too, where callers have imported them from
from charlm.generation.text_form import UNKNOWN, check_prefix, plain_text, read_prefix_file, start_text  # noqa: F401, E402


def check_sizes(
    options: SamplingOptions, length: int, *, prefix_chars: int, model, device=None, rows=("sample", "--num-samples")
) -> None:
    """Refuse, before anything is allocated, a request bigger than what can exist or than the memory there
    is: top-k over the vocabulary, more beams than continuations, samples or beams that would not fit.
    `rows`: what the rows are and the flag that asks for them (an item's, --items), as the message names them."""
    vocab = model.vocab_size
    if options.top_k > vocab:
        raise UsageError(
            f"top-k {options.top_k} is more than this model's {vocab} characters: pass at most {vocab} "
            "(0 samples among all)"
        )
    texts = _continuations(vocab, length)
    if texts is not None and options.beam > texts:
        raise UsageError(
            f"beam {options.beam:,} is more than the {vocab}^{length} = {texts:,} texts of {length} "
            f"characters this model can write: pass at most {texts:,} beam{'s' if texts > 1 else ''}"
        )
    state = 4 * model.num_layers * model.hidden_size * (2 if model.kind == "lstm" else 1)
    if options.beam:  # per beam: scores and sort over every next character, its tokens, its state and copies
        rows, per_row = options.beam, 28 * vocab + 16 * length + 4 * state
        what, fix = f"beam search with {options.beam:,} beams", "pass fewer --beam or a shorter --length"
    else:  # per sample: the step's logits and sampling copies, its state, every written character's id and text
        (name, flag), rows = rows, options.num_samples
        per_row = 32 * vocab + 4 * state + 48 * length + 16 * prefix_chars
        what = f"{rows:,} {name}{'s' if rows > 1 else ''} of {length:,} characters"
        fix = f"pass fewer {flag} or a shorter --length"
    need = rows * per_row + 400 * length + 24 * prefix_chars  # the per-step tensors kept; the prefix's ids
    check_memory(need, what, fix, device)


def _continuations(vocab: int, length: int) -> int | None:
    """vocab^length, the texts of `length` characters; None past 2^64 (more beams than any memory holds:
    the memory check refuses those)."""
    return None if vocab > 1 and length * math.log2(vocab) > 64 else vocab**length


def stop_ids(vocab: Vocab, stop: tuple[str, ...]) -> list[list[int]]:
    for text in stop:
        if not_utf8(text):
            raise UsageError(
                f"the stop text {text!r} is not UTF-8 (it holds the byte or lone surrogate "
                f"{not_utf8(text)}): pass UTF-8 text"
            )
        if vocab.missing(text):
            shown = " ".join(repr(c) for c in vocab.missing(text)[:10])
            raise UsageError(
                f"the stop text {text!r} has characters the model never saw ({shown}), so it "
                "could never be emitted: use characters of the training corpus"
            )
    return [vocab.encode(text) for text in stop]


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (n, vocab) -> next ids (n,). temperature 0 is greedy (argmax), as in d2l.

    Every row gets a valid distribution, whatever the options and the logits: logits are measured from their
    row's largest before the temperature divides them (a temperature of 1e-40 is then greedy, not inf - inf),
    an infinite logit (a repetition penalty of 1e-40) is the largest finite one, the most likely character
    always survives top-p, and a row with no finite distribution at all (a model whose weights are NaN) takes
    its argmax. So one row can never fail the others sampled with it (a server's batch)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float().nan_to_num(nan=-math.inf, posinf=torch.finfo(torch.float32).max)
    logits = (logits - logits.amax(-1, keepdim=True)) / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p: the first always stays
        drop = probs.cumsum(-1) - probs >= top_p
        drop[:, 0] = False
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    broken = ~torch.isfinite(probs).all(-1, keepdim=True)
    probs = torch.where(broken, F.one_hot(logits.argmax(-1), probs.shape[-1]).to(probs.dtype), probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def read_first(
    vocab: Vocab, prefix: str | None, *, unknown: str = "refuse", start: list[int] | None = None
) -> list[int]:
    """The ids the model reads before it writes: `start` (an item's <eod>) then the prefix (checked), or
    without either the start text."""
    if prefix is not None:
        return (start or []) + check_prefix(vocab, prefix, unknown=unknown)
    return start if start else vocab.encode(start_text(vocab))


def stream(
    model,
    vocab: Vocab,
    prefix: str | None,
    *,
    length: int,
    device: torch.device | str = "cpu",
    unknown: str = "refuse",
    reset: int | None = None,
    mixing=None,
    **options,
) -> Stream:
    """The next ids (num_samples,) one step at a time (see `Stream`); `options` are SamplingOptions' fields.

    Everything is checked here, before the first step, so a caller can rely on it before it prints anything.
    prefix None starts at a new line (`start_text`). Beam search does not stream: use `samples`. `reset`:
    the id (<eod>) whose reading zeroes a row's state, for a model trained with train.reset_state_at_documents
    (evaluate.reset_id); None carries the state on, as before. `mixing`: see Stream.
    """
    chosen = SamplingOptions.of(options)
    if chosen.beam:
        raise UsageError("beam search does not stream: call samples() (or generate())")
    given = {"device": device, "unknown": unknown, "reset": reset, "mixing": mixing}
    return Stream(model, vocab, prefix, length=length, options=chosen, **given)


def samples(
    model,
    vocab: Vocab,
    prefix: str | None,
    *,
    length: int,
    device: torch.device | str = "cpu",
    unknown: str = "refuse",
    reset: int | None = None,
    progress=None,
    mixing=None,
    **options,
) -> list[Sample]:
    """`num_samples` samples (the best beams with beam=N), each with its stop and its bits per char; `reset`
    and `mixing` as in `stream` (beam search ranks by the network alone); `progress`: beam search's."""
    chosen = SamplingOptions.of(options)
    if not chosen.beam:
        given = {"device": device, "unknown": unknown, "reset": reset, "mixing": mixing}
        return Stream(model, vocab, prefix, length=length, options=chosen, **given).samples()
    if mixing is not None:
        raise UsageError("beam search ranks by the network alone: sample without --beam to use the mix")
    from charlm.generation.beam import beam_search

    chosen.check(length)
    first = read_first(vocab, prefix, unknown=unknown)
    check_sizes(chosen, length, prefix_chars=len(first), model=model, device=device)
    stops = stop_ids(vocab, chosen.stop)
    context = torch.tensor(first, device=device)[None]
    beams = beam_search(
        model,
        context,
        length=length,
        beams=chosen.beam,
        num_results=chosen.num_samples,
        stops=stops,
        weights=chosen.weights,
        reset=reset,
        progress=progress,
    )
    return [
        _sample(
            vocab,
            prefix,
            ids,
            stop=chosen.stop[which] if which is not None else None,
            bits=-log_prob / len(ids) / math.log(2) if ids else None,
        )
        for ids, log_prob, which in beams
    ]


def generate(model, vocab: Vocab, prefix: str | None, length: int, **options) -> list[str]:
    """The prefix followed by the sampled characters, for each of `num_samples` samples."""
    return [sample.text for sample in samples(model, vocab, prefix, length=length, **options)]


def _sample(vocab: Vocab, prefix: str | None, ids: list[int], *, stop: str | None, bits: float | None) -> Sample:
    prefix = prefix or ""
    plain = prefix + plain_text(vocab, ids) if vocab.eod is not None and vocab.eod in ids else None
    return Sample(prefix, prefix + vocab.decode(ids), len(ids), stop, bits, plain)


class Stream:
    """Iterate for the next ids (num_samples,) as they are made; then `samples()` has the results.

    Iteration ends after `length` steps, or as soon as every sample has emitted a stop text (a sample
    that stopped earlier keeps producing ids, which its result leaves out).
    """

    def __init__(
        self,
        model,
        vocab: Vocab,
        prefix: str | None,
        *,
        length: int,
        options: SamplingOptions,
        device: torch.device | str = "cpu",
        unknown: str = "refuse",
        start: list[int] | None = None,
        end: int | None = None,
        reset: int | None = None,
        rows: tuple[str, str] = ("sample", "--num-samples"),
        mixing=None,
    ):
        """`start`: ids read before the prefix (an item's <eod>); `end`: an id that ends a sample like a stop
        text (an item's <eod>: it ends with the stop index len(options.stop)); `reset`: an id (<eod>) whose
        reading zeroes a row's state first, as training with train.reset_state_at_documents did; `rows`: what
        each row is and the flag that counts them, for messages (items: ("item", "--items")); `mixing`: what
        makes the network's logits into another distribution's each step (counts.sampling.MixedNext: `start`,
        `log_probs`, `push`), None for the network's own."""
        options.check(length)
        first = read_first(vocab, prefix, unknown=unknown, start=start)
        check_sizes(options, length, prefix_chars=len(first), model=model, device=device, rows=rows)
        stops = stop_ids(vocab, options.stop) + ([[end]] if end is not None else [])
        self.vocab, self.prefix, self.options, self.reset = vocab, prefix, options, reset
        self.context = torch.tensor(first, device=device).repeat(options.num_samples, 1)
        self.stops = StopTexts(stops, self.context) if stops else None
        window = min(options.repetition_window, self.context.shape[1] + length)  # no more text than that exists
        self.penalty = (
            RepetitionPenalty(options.repetition_penalty, window, len(vocab), self.context)
            if options.repetition_penalty != 1
            else None
        )
        self.ids: list[torch.Tensor] = []
        self.log_probs: list[torch.Tensor] = []  # of each chosen id under the model's own distribution
        self.generator = _generator(options, device)  # this stream's own: a server batches streams apart
        self.mixing = mixing
        if mixing is not None:
            mixing.start(self.context)
        self._steps = self._run(model, length)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self._steps

    def close(self) -> None:
        """Stop before the end, in the thread that iterated: the loop's inference mode is that thread's (a
        generator left to the garbage collector would end it in whichever thread collects it)."""
        self._steps.close()

    def samples(self) -> list[Sample]:
        for _ in self._steps:  # finish the stream first
            pass
        return self.results()

    def results(self) -> list[Sample]:
        """The samples of the steps taken so far (`samples` takes them all first)."""
        n = self.options.num_samples
        if not self.ids:
            return [_sample(self.vocab, self.prefix, [], stop=None, bits=None) for _ in range(n)]
        ids = torch.stack(self.ids, dim=1)
        log_probs = torch.stack(self.log_probs, dim=1).double()
        ended = self.stops.ended if self.stops else torch.full((n,), -1, device=ids.device)
        lengths = torch.where(ended >= 0, ended, ids.shape[1])
        kept = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        bits = -(log_probs * kept).sum(1) / lengths.clamp(min=1) / math.log(2)
        which = self.stops.which.tolist() if self.stops else [-1] * n
        return [
            _sample(self.vocab, self.prefix, row[:size], stop=self._stop_text(k), bits=b)
            for row, size, k, b in zip(ids.tolist(), lengths.tolist(), which, bits.tolist(), strict=True)
        ]

    def _stop_text(self, k: int) -> str | None:
        return self.options.stop[k] if 0 <= k < len(self.options.stop) else None

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The next ids (num_samples,) from this step's logits (num_samples, vocab), recorded; a caller that
        steps the model itself (a server stepping many streams in one batch) calls it once per step."""
        o = self.options
        logits = self.mixing.log_probs(logits) if self.mixing is not None else logits
        chosen = self.penalty(logits) if self.penalty else logits
        current = sample_next(chosen, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, generator=self.generator)
        self.record(current, logits.float().log_softmax(-1).gather(1, current[:, None]).squeeze(1))
        return current

    def record(self, current: torch.Tensor, log_probs: torch.Tensor) -> None:
        """Record this step's ids and their log-probabilities under the model (`choose` does; so does a
        caller that samples the rows of many streams at once, for streams without a repetition penalty)."""
        self.ids.append(current)
        self.log_probs.append(log_probs)
        if self.mixing is not None:
            self.mixing.push(current)
        if self.penalty:
            self.penalty.push(current)

    def all_stopped(self, current: torch.Tensor, written: int) -> bool:
        """Record the step's ids against the stop texts; True once every sample has emitted one."""
        return bool(self.stops and self.stops.push(current, written))

    def _run(self, model, length: int) -> Iterator[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                hidden, step = warm_up(model, self.context, self.options.weights)
                current = self.context[:, -1]
                for t in range(length):
                    logits, hidden = step(current, reset_rows(hidden, current, self.reset))
                    current = self.choose(logits)
                    yield current
                    if self.all_stopped(current, t + 1):
                        return
        finally:
            model.train(was_training)


def _generator(options: SamplingOptions, device) -> torch.Generator | None:
    if options.temperature == 0:
        return None
    generator = torch.Generator(device=device)
    if options.seed is None:
        generator.seed()  # fresh randomness without touching torch's global generator
    else:
        generator.manual_seed(options.seed)
    return generator
