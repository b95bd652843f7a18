"""The request bodies, made for a server's `Limits` and its model: FastAPI checks the types and the maxima
with them and lists both in /openapi.json. The options' own rules (temperature >= 0, top-p in
(0, 1], beam search without top-k, a prefix the model can read, ...) are the library's: `SamplingOptions`
and `Stream` check them as for `charlm generate`, with that command's messages.

Strict types: 5 is not "5", true is not 1. Unknown fields are refused, so a misspelt option is an error
rather than a default silently used. No field takes a path.
"""

# no `from __future__ import annotations`: the field types below use the limits, so they are evaluated here

from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field

from charlm.serve.limits import Limits

STRICT = ConfigDict(extra="forbid", strict=True)


def request_models(limits: Limits, *, vocab_size: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(GenerateRequest, PerplexityRequest) for these limits and a model of `vocab_size` characters."""
    stop_text = Annotated[str, Field(max_length=limits.stop_chars)]

    class GenerateRequest(BaseModel):
        """The options of `charlm generate`, with its defaults; `stream` sends characters as they are made."""

        model_config = STRICT
        prefix: Optional[str] = Field(
            None, max_length=limits.prefix_chars, description="Text to start from (default: a new line)."
        )
        length: int = Field(100, le=limits.length, description="Characters to generate (>= 0).")
        temperature: float = Field(0.8, description="0 is greedy; higher is more varied (>= 0; beam ignores it).")
        top_k: int = Field(0, le=vocab_size, description="Sample among the k most likely (0: all).")
        top_p: float = Field(1.0, description="Sample among the most likely holding this probability, in (0, 1].")
        num_samples: int = Field(
            1, le=limits.num_samples, description="Independent samples, >= 1 (with beam: the best beams)."
        )
        seed: Optional[int] = Field(
            None, description="Random seed in 0..2^63-1: the text `charlm generate --seed` gives, made alone."
        )
        stop: list[stop_text] = Field(
            [], max_length=limits.stop_texts, description="End a sample when it emits one of these texts."
        )
        beam: int = Field(0, le=limits.beam, description="Beam search with this many beams (0: sample).")
        repetition_penalty: float = Field(
            1.0, description="Divide the logits of recently seen characters by this, > 0 (1: off)."
        )
        repetition_window: int = Field(
            64, le=limits.repetition_window, description="Characters the repetition penalty looks back on, >= 1."
        )
        weights: str = Field("fp32", description="The step's weights: fp32, bf16 or int8 (bf16 and int8: CPU).")
        stream: bool = Field(False, description="Server-sent events: each step's characters, then the samples.")

    class PerplexityRequest(BaseModel):
        """A text scored as `charlm perplexity --file` scores one (the run's normalisation, its eval streams)."""

        model_config = STRICT
        text: str = Field(max_length=limits.text_chars, description="The text to score (2 characters or more).")
        bits: bool = Field(False, description="Also each scored character's bits (the first has none).")

    return GenerateRequest, PerplexityRequest


def token_models(limits: Limits, *, vocab_size: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(TokenizeRequest, DetokenizeRequest): a text to count as charlm does, or ids to read back."""

    class TokenizeRequest(BaseModel):
        """A text in, its character ids out (one token is one character of the model's vocabulary)."""

        model_config = STRICT
        prompt: str = Field(max_length=limits.text_chars, description="The text, read in the run's own form.")
        add_special_tokens: bool = Field(False, description="Accepted for vLLM's clients: charlm adds none.")

    class DetokenizeRequest(BaseModel):
        """Character ids in, their text out."""

        model_config = STRICT
        tokens: list[Annotated[int, Field(ge=0, lt=vocab_size)]] = Field(max_length=limits.text_chars)

    return TokenizeRequest, DetokenizeRequest
