"""What the OpenAI-compatible routes ask of the model, in charlm's own terms, and their answers in OpenAI's.

A completion request becomes one generation `Job` per prompt (work.py's `generation_job`, the native route's
checks and messages) with `n` samples each; a choice is a sample without its prompt and without the stop text
that ended it (OpenAI leaves the stop sequence out; `charlm generate` keeps it). Log-probabilities are the
model's own, read again over the prompt and the choice in one stream (the protocol of `charlm perplexity
--text`), so the chosen character's figure is the one perplexity gives for it, whatever the sampling options.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from charlm.errors import UsageError
from charlm.evaluate import char_losses, reset_id
from charlm.generation.sampling import read_first
from charlm.generation.text_form import normalise_prefix
from charlm.serve.jobs import Job, Reply
from charlm.serve.limits import Limits
from charlm.serve.work import generation_job

CHAT_LENGTH = 100  # a chat answer's characters when the request names none (`charlm generate`'s default)


class Refusal(UsageError):
    """A request the /v1 routes refuse with 400, naming the field (`param`) as OpenAI's errors do."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass
class Prompt:
    """One prompt of a request: its text as the model reads it, and its job (None: nothing to generate)."""

    index: int  # its first choice's index: prompt i's choices are i * n ... i * n + n - 1
    text: str
    job: Job | None = None
    outcome: list | None = None  # its job's samples, once done


def model_id(model) -> str:
    """The id /v1/models lists: the run's (or the model folder's) name."""
    return model.path.name or str(model.config.name)


def envelope(model, kind: str) -> dict:
    """The fields every answer and chunk starts with."""
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model_id(model)}


def prompts_of(body, model) -> list[str]:
    """The request's prompts as texts in the run's own form: a text, a list of texts, or character ids."""
    given = body.prompt
    if isinstance(given, str):
        given = [given]
    if not given:
        raise Refusal("prompt is an empty list: send a text, a list of texts or a list of character ids", "prompt")
    if isinstance(given[0], int):
        given = [given]
    chars = model.vocab.chars
    texts = [text if isinstance(text, str) else "".join(chars[i] for i in text) for text in given]
    return [known(normalise_prefix(text, model.config.data), model.vocab, "prompt") for text in texts]


def known(text: str, vocab, param: str) -> str:
    """The text, when the model knows each of its characters; else a 400 naming the first few it does not."""
    missing = vocab.missing(text)
    if missing:
        shown = " ".join(repr(c) for c in missing[:10])
        raise Refusal(
            f"{param} has characters the model never saw: {shown}; use characters of its training text", param
        )
    return text


def chat_prompt(body, vocab) -> str:
    """charlm's chat template: each message's content (text parts joined) on its own line (for a model without
    line breaks, after a space); the answer follows. Roles are not written: a character model has none."""
    lines = []
    for message in body.messages:
        content = message.content or ""
        if not isinstance(content, str):
            content = "".join(part.text or "" for part in content if part.type == "text")
        lines.append(content)
    between = "\n" if "\n" in vocab.index else " "  # a model that never saw a line break reads a space
    return known(between.join(lines) + between, vocab, "messages")


def check_penalties(body) -> None:
    """OpenAI's penalties subtract from logits by counts; charlm's divides them (CTRL's): only 0 is the same."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value not in (None, 0):
            raise Refusal(
                f"{name} {value:g} is not supported by a charlm model: leave it 0 and pass repetition_penalty "
                "(e.g. 1.2: charlm's own, CTRL's penalty of recent characters)",
                name,
            )


def generation(
    model, body, prompt: Prompt, *, max_tokens: int, limits: Limits, reply: Reply, streamed: bool, mix=None
) -> Job:
    """The job that writes `n` choices after `prompt` (refused here when the prompt is too long to continue)."""
    if len(prompt.text) > limits.prefix_chars:
        raise Refusal(
            f"prompt is {len(prompt.text):,} characters: this server continues at most {limits.prefix_chars:,} "
            "(--limit prefix_chars); shorten it, or score it with max_tokens 0 and echo",
            "prompt",
        )
    stop = body.stop if isinstance(body.stop, list) else [body.stop] if body.stop else []
    if len(stop) > limits.stop_texts:
        raise Refusal(f"stop has {len(stop)} texts: this server takes at most {limits.stop_texts}", "stop")
    ask = SimpleNamespace(
        prefix=prompt.text or None,  # "" starts at a new line, as `charlm generate` does without a prefix
        length=max_tokens,
        temperature=_given(body.temperature, 1.0),
        top_k=body.top_k or 0,
        top_p=_given(body.top_p, 1.0),
        num_samples=body.n or 1,
        seed=body.seed,
        stop=stop,
        beam=body.beam or 0,
        repetition_penalty=_given(body.repetition_penalty, 1.0),
        repetition_window=_given(body.repetition_window, 64),
        weights="fp32",
        stream=streamed,
    )
    job, _ = generation_job(model, ask, reply, mix)
    return job


def _given(value, default):
    return default if value is None else value


def choice_texts(samples) -> list[tuple[str, str, int]]:
    """(text, finish_reason, characters written) of each sample: what it wrote, less the stop text that ended it."""
    found = []
    for sample in samples:
        written = sample.text[len(sample.prefix) :]
        if sample.stop:
            written = written[: len(written) - len(sample.stop)]
        found.append((written, "stop" if sample.stop else "length", sample.generated))
    return found


def logprobs_job(model, reply: Reply, prompt: str, texts: list[str], *, top: int, echo: bool, mix=None) -> Job:
    """A job that reads each choice after its prompt again and gives its `logprobs` objects (the mix's with
    `mix`, serve --mix's ServedMix)."""
    return Job(
        reply,
        work=lambda job: [
            choice_logprobs(model, prompt, text, top=top, echo=echo, progress=job.check, mix=mix) for text in texts
        ],
    )


def choice_logprobs(model, prompt: str, text: str, *, top: int, echo: bool, progress=None, mix=None) -> dict:
    """OpenAI's `logprobs` of one choice: its characters (after the prompt's with `echo`), each one's
    log-probability given everything before it (None for the very first, which nothing predicts), the `top`
    most likely characters at each position, and each character's offset in prompt + text."""
    vocab = model.vocab
    head = read_first(vocab, prompt or None)  # the prompt's ids, or the new line a sample without one starts after
    ids = head + vocab.encode(text)
    shown = 0 if echo and prompt else len(head)
    chosen, best = [None] * len(ids), [None] * len(ids)
    if len(ids) >= 2:
        scores = char_losses(
            model.net,
            torch.tensor(ids),
            batch_size=1,
            num_steps=model.config.train.num_steps,
            device=model.device,
            # the mix needs the network's whole distribution at each position
            top_k=len(vocab) if mix is not None else top,
            reset=reset_id(model.config, vocab),
            progress=progress,
        )
        chosen[1:], best[1:] = _position_logprobs(scores, ids, vocab.chars, top=top, mix=mix)
    tokens = [vocab.chars[i] for i in ids[shown:]]
    offsets, at = [], 0 if shown == 0 else len(prompt)
    for token in tokens:
        offsets.append(at)
        at += len(token)
    top_logprobs = best[shown:] if top else None
    return {"tokens": tokens, "token_logprobs": chosen[shown:], "top_logprobs": top_logprobs, "text_offset": offsets}


def _position_logprobs(scores, ids: list[int], chars: list[str], *, top: int, mix) -> tuple[list, list]:
    """Each scored position's log-probability of its character and its `top` likeliest ({char: logprob})."""
    if mix is not None:
        log_probs = mix.log_probs(scores, ids)
        chosen = log_probs.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
        values, indices = log_probs.topk(min(top, log_probs.shape[1]), dim=1) if top else (None, None)
        pairs = [zip(i.tolist(), v.tolist(), strict=True) for i, v in zip(indices, values, strict=True)] if top else []
        return chosen, [{chars[i]: v for i, v in p} for p in pairs]
    chosen = [-float(n) for n in scores.nats]
    if not top:
        return chosen, [None] * len(chosen)
    best = []
    for i, p in zip(scores.top_ids.tolist(), scores.top_probs.tolist(), strict=True):
        best.append({chars[c]: math.log(q) if q > 0 else -math.inf for c, q in zip(i, p, strict=True)})
    return chosen, best


def usage(prompts: list[Prompt], written: int) -> dict:
    prompt_tokens = sum(len(prompt.text) for prompt in prompts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": written, "total_tokens": prompt_tokens + written}


class Holdback:
    """A streamed choice's text, sent only where it can no longer turn out to be the start of a stop text
    (OpenAI's streams leave the stop sequence out, as the whole answer does)."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent = stops, "", 0

    def add(self, chars: str) -> str:
        """What may be sent after these characters."""
        self.text += chars
        held = max(
            (k for stop in self.stops for k in range(1, len(stop) + 1) if self.text.endswith(stop[:k])), default=0
        )
        safe = len(self.text) - held
        out, self.sent = self.text[self.sent : safe], max(self.sent, safe)
        return out

    def finish(self, final: str) -> str:
        """The rest of the choice's final text (its stop text left out)."""
        out, self.sent = final[self.sent :], len(final)
        return out
