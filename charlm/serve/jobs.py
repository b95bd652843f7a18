"""One request's work as the worker threads see it (`Job`), and the way its results go back to the request's
coroutine (`Reply`: events put from the worker's thread, awaited on the request's loop)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from charlm.errors import CharlmError, UsageError
from charlm.generation.sampling import Stream


class Withdrawn(Exception):
    """Raised inside a job's work once nobody waits for it (its client left, its time is up): it stops there."""


class Reply:
    """Events from a worker thread to the coroutine that awaits them: ("chars", [str]), ("done", result) or
    ("error", (status, message)).

    The worker appends under a lock and wakes the coroutine's loop only when the coroutine is waiting: a
    stream that reads every few steps (the OpenAI routes' chunks) costs the loop one wake-up per read, not one
    per step, which matters when the server's Python is its bottleneck (one core, the GIL)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.events, self.lock = loop, deque(), threading.Lock()
        self.waiter: asyncio.Future | None = None

    def put(self, kind: str, value: object) -> None:
        with self.lock:
            self.events.append((kind, value))
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            try:
                self.loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the server's loop is closed: nobody is waiting any more
                pass

    async def get(self, timeout: float) -> tuple[str, object]:
        """The next event; asyncio.TimeoutError after `timeout` seconds without one."""
        with self.lock:
            if self.events:
                return self.events.popleft()
            waiter = self.waiter = self.loop.create_future()
        try:
            await asyncio.wait_for(waiter, max(0.0, timeout))
        finally:
            with self.lock:
                self.waiter = None
        with self.lock:
            return self.events.popleft()

    def waiting_chars(self) -> list[list[str]]:
        """The ("chars", ...) events already queued, taken at once (a stream that fell behind the batch sends
        them in one chunk); the first other event stays for the next get."""
        found = []
        with self.lock:
            while self.events and self.events[0][0] == "chars":
                found.append(self.events.popleft()[1])
        return found


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():  # a get that timed out has cancelled it
        waiter.set_result(None)


@dataclass(eq=False)
class Job:
    """A request's work: a sampling `stream` (stepped in a batch with others when it has no seed, else alone),
    or `work(job)`, run alone in a worker, which gives the result (beam search, scoring a text)."""

    reply: Reply
    rows: int = 1  # sequences this job adds to a batch
    stream: Stream | None = None
    length: int = 0
    streamed: bool = False  # send each step's characters as they are made
    work: Callable[[Job], object] | None = None
    weights: str = "fp32"  # a batch shares one step: jobs batch with jobs of the same weights
    written: int = 0  # steps taken
    deadline: float = math.inf  # time.monotonic() by which it must be answered (the server's time limit)
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)
    first_at: float | None = None  # when its first step was taken (the time to its first character)
    last_at: float | None = None  # and its last, so far
    failed: tuple[int, str] | None = None  # (status, message) of an error its own rows met in a batch
    steps_timed: int = 0  # steps taken between first_at and last_at, batched or alone
    timed: bool = False  # its timings are counted (metrics.py), once

    def check(self, *_) -> None:
        """Between two steps of a job's work (beam search, scoring): stop once it is withdrawn or out of time."""
        if self.cancelled.is_set() or time.monotonic() > self.deadline:
            raise Withdrawn

    def stepped(self, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.steps_timed += 1

    @property
    def batched(self) -> bool:
        """Sampling without a seed; a seeded stream runs alone, by the code of `charlm generate --seed`, so it
        gives that command's text (a batch's matrix products may round its rows differently)."""
        return self.stream is not None and self.stream.options.seed is None

    def sampling(self) -> tuple | None:
        """What its rows are sampled with; jobs that agree are sampled in one call (None: on its own, for a
        repetition penalty or a mix, which keep state per stream)."""
        o = self.stream.options
        alone = o.repetition_penalty != 1 or self.stream.mixing is not None
        return None if alone else (o.temperature, o.top_k, o.top_p)

    def visible(self, ids: list[int]) -> list[str]:
        """This step's characters, one per sample ('' for a sample that emitted a stop text before)."""
        chars, stops = self.stream.vocab.chars, self.stream.stops
        ended = stops.ended.tolist() if stops is not None else [-1] * len(ids)
        return [chars[i] if end < 0 else "" for i, end in zip(ids, ended, strict=True)]


def failure(error: Exception) -> tuple[int, str]:
    """The status and message of an error met while computing: bad input 400, anything else 500."""
    if isinstance(error, CharlmError):
        return 400 if isinstance(error, UsageError) else 500, str(error)
    return 500, f"unexpected {type(error).__name__}: {error}"
