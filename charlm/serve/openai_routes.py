"""The OpenAI-compatible routes, beside the native ones and on the same scheduler and limits: GET /v1/models,
POST /v1/completions and POST /v1/chat/completions, whole or streamed (`data: {chunk}` lines, then
`data: [DONE]`), so that OpenAI's SDKs, LangChain, lm-evaluation-harness and any tool that speaks the
protocol use a charlm model unmodified. What a request asks becomes charlm's own jobs in openai_work.py.
"""

# no `from __future__ import annotations`: FastAPI reads the request models from the handlers' annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request

from charlm.generation.text_form import check_prefix
from charlm.serve.jobs import Reply
from charlm.serve.openai_work import (
    CHAT_LENGTH,
    Holdback,
    Prompt,
    Refusal,
    chat_prompt,
    check_penalties,
    choice_texts,
    envelope,
    generation,
    logprobs_job,
    model_id,
    prompts_of,
    usage,
)
from charlm.serve.replies import Streamed, admit, error_response, finished, next_event, outcome

COMPLETION, CHAT = "text_completion", "chat.completion"
STREAM_INTERVAL = 0.02  # seconds between two chunks of one stream, at least (vLLM's stream_interval, in time)


class Failed(Exception):
    """A job of the request ended in an error: (status, message), answered in OpenAI's envelope."""


def add_openai_routes(app: FastAPI, completion_request, chat_request) -> None:
    state, started = app.state, int(time.time())

    def card() -> dict:
        return {"id": model_id(state.model), "object": "model", "created": started, "owned_by": "charlm"}

    @app.get("/v1/models", summary="OpenAI's model list: the one model served")
    async def models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{name:path}", summary="The served model, by its id")
    async def one_model(name: str):
        if name != model_id(state.model):
            message = f"model {name!r} is not served here: this server serves {model_id(state.model)!r}"
            return error_response("/v1/models", 404, message, param="model")
        return card()

    @app.post("/v1/completions", summary="OpenAI's completions (a token is one character)")
    async def completions(body: completion_request, request: Request):
        check_penalties(body)
        max_tokens = 16 if body.max_tokens is None else body.max_tokens  # OpenAI's default
        ask = Ask(body, COMPLETION, prompts_of(body, state.model), max_tokens, bool(body.echo), body.logprobs)
        return await ask.answer(state, request)

    @app.post("/v1/chat/completions", summary="OpenAI's chat completions over charlm's plain template")
    async def chat(body: chat_request, request: Request):
        check_penalties(body)
        if body.logprobs:
            raise Refusal("chat completions give no logprobs here: ask /v1/completions with logprobs", "logprobs")
        given = [body.max_completion_tokens, body.max_tokens, min(CHAT_LENGTH, state.limits.length)]
        max_tokens = next(value for value in given if value is not None)
        ask = Ask(body, CHAT, [chat_prompt(body, state.model.vocab)], max_tokens, False, None)
        return await ask.answer(state, request)


class Ask:
    """One /v1 request: its prompts, each with a job writing its `n` choices, answered whole or streamed."""

    def __init__(self, body, kind: str, texts: list[str], max_tokens: int, echo: bool, top: int | None):
        self.body, self.kind, self.max_tokens, self.echo, self.top = body, kind, max_tokens, echo, top
        self.n = body.n or 1
        self.prompts = [Prompt(i * self.n, text) for i, text in enumerate(texts)]
        stop = body.stop if isinstance(body.stop, list) else [body.stop] if body.stop else []
        self.stops, self.written, self.request = stop, 0, None

    async def answer(self, state, request: Request):
        loop, path = asyncio.get_running_loop(), f"/v1/{'chat/' if self.kind == CHAT else ''}completions"
        streamed = bool(self.body.stream) and self.top is None  # logprobs are read once a choice is whole
        for prompt in self.prompts:
            if self.max_tokens > 0:
                prompt.job = generation(
                    state.model,
                    self.body,
                    prompt,
                    max_tokens=self.max_tokens,
                    limits=state.limits,
                    reply=Reply(loop),
                    streamed=streamed,
                    mix=state.mix,
                )
            elif prompt.text:
                check_prefix(state.model.vocab, prompt.text)  # refused now, not in a worker
        refused = admit(state, path, [prompt.job for prompt in self.prompts if prompt.job is not None])
        if refused is not None:
            return refused
        if self.body.stream:
            return Streamed(self.chunks(state), on_close=lambda: self.release(state))
        self.request = request  # watched while each job waits or computes: a client gone withdraws them
        try:
            return await self.whole(state)
        except Failed as failure:
            status, message = failure.args
            return error_response(path, status, message)
        finally:
            self.release(state)

    async def whole(self, state) -> dict:
        choices = []
        for prompt in self.prompts:
            results = await self.results(state, prompt)
            logprobs = await self.logprobs(state, prompt, [text for text, _, _ in results])
            for j, (text, finish, _) in enumerate(results):
                shown = prompt.text + text if self.echo else text
                choices.append(self.choice(prompt.index + j, shown, finish, logprobs[j]))
        return {**envelope(state.model, self.kind), "choices": choices, "usage": usage(self.prompts, self.written)}

    async def chunks(self, state) -> AsyncIterator[str]:
        head = envelope(state.model, f"{self.kind}.chunk" if self.kind == CHAT else self.kind)
        # every chunk is this head and one choice: the head encoded once
        opening = "data: " + json.dumps(head, ensure_ascii=False)[:-1] + ', "choices": ['
        try:
            for prompt in self.prompts:
                async for piece in self.streamed(state, prompt):
                    yield opening + json.dumps(piece, ensure_ascii=False) + "]}\n\n"
            options = self.body.stream_options
            if options is not None and options.include_usage:
                yield _data({**head, "choices": [], "usage": usage(self.prompts, self.written)})
        except Failed as failure:
            status, message = failure.args
            yield _data(json.loads(error_response("/v1", status, message).body))
        finally:
            self.release(state)
        yield "data: [DONE]\n\n"

    async def streamed(self, state, prompt: Prompt) -> AsyncIterator[dict]:
        """One prompt's choices as chunks: its characters as they are made (held back where they may start a
        stop text), then each choice's end."""
        holds = [Holdback(self.stops) for _ in range(self.n)]
        for j in range(self.n):
            if self.kind == CHAT:
                yield self.piece(prompt.index + j, "", None, None, role=True)
            elif self.echo and prompt.text:
                yield self.piece(prompt.index + j, prompt.text, None, None)
        sent = -STREAM_INTERVAL
        while prompt.job is not None and self.top is None:
            kind, value = await next_event(state, prompt.job)
            if kind != "chars":
                self._take(prompt, kind, value)
                break
            # the first characters at once; after that at most a chunk every STREAM_INTERVAL, holding what the
            # batch wrote since: fewer, longer chunks cost the server and each client far less under load
            await asyncio.sleep(max(0.0, sent + STREAM_INTERVAL - time.monotonic()))
            behind = prompt.job.reply.waiting_chars()
            for j, char in enumerate(value):
                out = holds[j].add(char + "".join(chars[j] for chars in behind))
                if out:
                    yield self.piece(prompt.index + j, out, None, None)
            sent = time.monotonic()
        results = await self.results(state, prompt)
        logprobs = await self.logprobs(state, prompt, [text for text, _, _ in results])
        for j, (text, finish, _) in enumerate(results):
            yield self.piece(prompt.index + j, holds[j].finish(text), finish, logprobs[j])

    async def results(self, state, prompt: Prompt) -> list[tuple[str, str, int]]:
        """(text, finish_reason, characters written) of the prompt's choices, once its job is done."""
        if prompt.job is None:
            return [("", "length", 0)] * self.n
        if prompt.outcome is None:
            kind, value = await outcome(state, prompt.job, self.request)
            self._take(prompt, kind, value)
        return choice_texts(prompt.outcome)

    def _take(self, prompt: Prompt, kind: str, value) -> None:
        if kind != "done":
            raise Failed(*value)
        prompt.outcome = value
        self.written += sum(sample.generated for sample in value)

    async def logprobs(self, state, prompt: Prompt, texts: list[str]) -> list:
        if self.top is None:
            return [None] * len(texts)
        job = logprobs_job(
            state.model,
            Reply(asyncio.get_running_loop()),
            prompt.text,
            texts,
            top=self.top,
            echo=self.echo,
            mix=state.mix,
        )
        refused = admit(state, "/v1", [job])
        if refused is not None:
            raise Failed(refused.status_code, json.loads(refused.body)["error"]["message"])
        kind, value = await outcome(state, job, self.request)
        if kind != "done":
            raise Failed(*value)
        return value

    def choice(self, index: int, text: str, finish: str, logprobs) -> dict:
        if self.kind == CHAT:
            message = {"role": "assistant", "content": text}
            return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    def piece(self, index: int, text: str, finish: str | None, logprobs, *, role: bool = False) -> dict:
        if self.kind == CHAT:
            delta = {"role": "assistant", "content": ""} if role else {"content": text} if text or not finish else {}
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}

    def release(self, state) -> None:
        for prompt in self.prompts:
            if prompt.job is not None:
                finished(state, prompt.job)


def _data(chunk: dict) -> str:
    return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
