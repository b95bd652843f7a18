"""What one request, and the server as a whole, may ask for: `Limits`, checked once when the server starts.

The defaults keep a server on a laptop safe from a burst of requests or one greedy client: a request is
small (its body, its prefix, its text), bounded in work (length, samples, beams, time) and waits in a
bounded queue; past it, 503 with Retry-After.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from charlm.errors import UsageError


@dataclass(frozen=True)
class Limits:
    body_bytes: int = 0  # a request's JSON body; more is 413. 0: enough for text_chars of any characters (body_limit)
    prefix_chars: int = 1_000  # /generate's prefix
    length: int = 2_000  # characters generated per sample
    num_samples: int = 16
    beam: int = 8
    stop_texts: int = 8  # how many stop texts, each at most stop_chars long
    stop_chars: int = 100
    repetition_window: int = 4_096
    text_chars: int = 50_000  # /perplexity's text
    time_limit: float = 30.0  # seconds from arrival to the last character: 504, or a stream's error event
    computing: int = 2  # batches or lone requests computing at once (each a worker thread)
    queue: int = 32  # requests waiting for a worker; one more is 503
    batch_rows: int = 64  # sequences stepped together in one batch (a request brings num_samples rows)
    retry_after: int = 1  # seconds, in a 503's Retry-After
    shutdown_grace: float = 10.0  # seconds the requests under way may take to finish once the server is stopping
    read_time: float = 10.0  # seconds a client has to send a request's head, and again its body: else 408
    connections: int = 256  # connections open at once (at most the file limit allows); one more is 503 and closed

    @property
    def body_limit(self) -> int:
        """body_bytes, or when 0, enough for the longest text a request may hold written in JSON's longest form
        (12 bytes a character: a surrogate pair of \\u escapes), and 64 KiB for the rest."""
        return self.body_bytes or 12 * max(self.text_chars, self.prefix_chars) + 64 * 1024

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            least = {"queue": 0, "time_limit": 0.001, "shutdown_grace": 0, "body_bytes": 0, "read_time": 0.001}.get(
                field.name, 1
            )  # a queue may be none; seconds need not be whole
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= least:
                raise UsageError(f"--limit {field.name} must be a number >= {least:g}, not {value!r}")
        if self.num_samples > self.batch_rows or self.beam > self.batch_rows:
            raise UsageError(
                f"--limit batch_rows ({self.batch_rows}) must be at least num_samples ({self.num_samples}) "
                f"and beam ({self.beam}): a request's rows go in one batch"
            )
        for name in ("time_limit", "shutdown_grace", "read_time"):
            if not getattr(self, name) < 86_400 * 365:
                raise UsageError(f"--limit {name} {getattr(self, name)} is too long: pass seconds, e.g. 30")

    @classmethod
    def of(cls, items: list[str]) -> Limits:
        """From `name=value` texts (`charlm serve --limit`): an unknown name or a value of the wrong type is
        a UsageError naming it."""
        from charlm.coerce import build
        from charlm.files import safeyaml

        raw = {}
        for item in items:
            name, equals, text = item.partition("=")
            if not equals or not text.strip():
                raise UsageError(f"--limit {item!r} is not NAME=VALUE: write it like --limit computing=4")
            raw[name.strip()] = safeyaml.load_value(text, f"--limit {name.strip()}")
        return build(cls, raw, "--limit ")
