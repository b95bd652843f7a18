"""The bodies of the OpenAI-compatible routes (/v1/completions, /v1/chat/completions), made for a server's
`Limits` as the native ones are (schemas.py).

A "token" is one character of the model's vocabulary: `max_tokens` counts characters, and a prompt given
as token ids names characters by their ids. Unlike the native routes, fields the server does not know are
ignored here: OpenAI's clients send extras (`user`, `logit_bias`, `best_of`, ...) that a local model has no
use for. The types stay strict (5 is not "5"), and null means "the default", as OpenAI's API reads it.
"""

# no `from __future__ import annotations`: the field types below use the limits, so they are evaluated here

from typing import Annotated, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from charlm.serve.limits import Limits

LENIENT = ConfigDict(extra="ignore", strict=True)
TOP_LOGPROBS = 20  # the most likely next characters one position may list (OpenAI's own limit is 5)


class StreamOptions(BaseModel):
    model_config = LENIENT
    include_usage: Optional[bool] = Field(False, description="A last chunk with the usage and no choices.")


def openai_models(limits: Limits, *, vocab_size: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(CompletionRequest, ChatRequest) for these limits and a model of `vocab_size` characters."""
    sampling = _sampling(limits, vocab_size)
    token_id = Annotated[int, Field(ge=0, lt=vocab_size)]
    long_text = Annotated[str, Field(max_length=limits.text_chars)]
    ids = Annotated[list[token_id], Field(max_length=limits.text_chars)]

    class CompletionRequest(sampling):
        """OpenAI's completions: a prompt (or several, or token ids) continued by up to max_tokens characters."""

        prompt: Union[
            long_text,
            Annotated[list[long_text], Field(max_length=limits.num_samples)],
            ids,
            Annotated[list[ids], Field(max_length=limits.num_samples)],
        ] = Field(description="A text, a list of texts (each answered with n choices), or character ids.")
        max_tokens: Optional[int] = Field(16, ge=0, le=limits.length, description="Characters to generate.")
        echo: Optional[bool] = Field(False, description="Put the prompt before each choice's text.")
        logprobs: Optional[int] = Field(
            None, ge=0, le=min(TOP_LOGPROBS, vocab_size), description="This many most likely next characters."
        )

    class Part(BaseModel):
        model_config = LENIENT
        type: str = Field(max_length=100)
        text: Optional[long_text] = None

    class Message(BaseModel):
        model_config = LENIENT
        role: str = Field(max_length=100)
        content: Union[long_text, list[Part], None] = None

    class ChatRequest(sampling):
        """OpenAI's chat completions over charlm's plain template: each message's content on its own line, then
        the model writes the answer."""

        messages: list[Message] = Field(min_length=1, max_length=limits.text_chars // 10)
        max_tokens: Optional[int] = Field(None, ge=0, le=limits.length, description="Characters to generate.")
        max_completion_tokens: Optional[int] = Field(None, ge=0, le=limits.length, description="As max_tokens.")
        logprobs: Optional[bool] = Field(False, description="Not given by chat: use /v1/completions.")

    return CompletionRequest, ChatRequest


def _sampling(limits: Limits, vocab_size: int) -> type[BaseModel]:
    stop_text = Annotated[str, Field(max_length=limits.stop_chars)]

    class Sampling(BaseModel):
        """The options both routes share: OpenAI's, then charlm's own extras."""

        model_config = LENIENT
        model: Optional[str] = Field(None, description="The served model's id (GET /v1/models); any is accepted.")
        temperature: Optional[float] = Field(1.0, description="0 is greedy (>= 0).")
        top_p: Optional[float] = Field(1.0, description="Nucleus sampling, in (0, 1].")
        n: Optional[int] = Field(1, ge=1, le=limits.num_samples, description="Choices per prompt.")
        stop: Union[stop_text, Annotated[list[stop_text], Field(max_length=limits.stop_texts)], None] = Field(
            None, description="A text, or up to stop_texts texts, that ends a choice (left out of its text)."
        )
        seed: Optional[int] = Field(None, description="The same seed and options give the same text (0..2^63-1).")
        stream: Optional[bool] = Field(False, description="Server-sent events: `data: {chunk}` lines, then [DONE].")
        stream_options: Optional[StreamOptions] = None
        presence_penalty: Optional[float] = Field(0.0, description="Only 0: use repetition_penalty.")
        frequency_penalty: Optional[float] = Field(0.0, description="Only 0: use repetition_penalty.")
        top_k: Optional[int] = Field(0, ge=0, le=vocab_size, description="charlm: the k most likely only (0: all).")
        beam: Optional[int] = Field(0, ge=0, le=limits.beam, description="charlm: beam search with this many beams.")
        repetition_penalty: Optional[float] = Field(1.0, description="charlm: CTRL's penalty, > 0 (1: off).")
        repetition_window: Optional[int] = Field(64, ge=1, le=limits.repetition_window)

    return Sampling
