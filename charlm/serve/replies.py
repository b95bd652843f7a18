"""What every route shares: a job admitted to the scheduler (or refused: busy, or the server stopping), its
outcome awaited within the time limit, and an error in the shape of the route that met it.

Two shapes: the native routes answer {"error": "one line"}; the OpenAI-compatible routes (/v1/...) answer
OpenAI's envelope {"error": {"message", "type", "param", "code"}}, which its clients raise as their own
exception classes. A full queue is 503 on the native routes and 429 on /v1 (OpenAI's clients retry a 429
after its Retry-After); a stopping server is 503 on both.
"""

from __future__ import annotations

import asyncio
import time

from fastapi.responses import JSONResponse, StreamingResponse

from charlm.serve.jobs import Job

BUSY = "the server is busy (its queue is full): try again shortly"
STOPPING = "the server is stopping: send the request to another server, or again once this one is back"
KINDS = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 503: "server_error"}
CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 503: "server_unavailable", 504: "timeout"}


def openai_shaped(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def error_response(path: str, status: int, message: str, *, param: str | None = None, headers=None) -> JSONResponse:
    """The error of a request to `path`, in that route's shape."""
    if not openai_shaped(path):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    kind = KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": message, "type": kind, "param": param, "code": CODES.get(status)}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def too_long(limits) -> str:
    return f"the request took longer than the server's time limit ({limits.time_limit:g} s): ask for less"


def admit(state, path: str, jobs: list[Job]) -> JSONResponse | None:
    """None when every job has a place (all of one request's jobs, or none of them); else the refusal."""
    if getattr(state, "draining", False):
        return error_response(path, 503, STOPPING)
    deadline = time.monotonic() + state.limits.time_limit
    admitted = []
    for job in jobs:
        job.deadline = deadline
        if not state.scheduler.submit(job):
            for taken in admitted:
                state.scheduler.withdraw(taken)
            status = 429 if openai_shaped(path) else 503
            return error_response(path, status, BUSY, headers={"Retry-After": str(state.limits.retry_after)})
        admitted.append(job)
    return None


async def next_event(state, job: Job) -> tuple[str, object]:
    """The job's next event: ("chars", [...]), ("done", result) or ("error", (status, message)); the time
    limit's 504 as an error."""
    try:
        return await job.reply.get(job.deadline - time.monotonic())
    except asyncio.TimeoutError:
        return "error", (504, too_long(state.limits))


async def outcome(state, job: Job, request=None) -> tuple[str, object]:
    """A job's result ("done", value) or its error; the job is withdrawn whatever happens: done, timed out, or
    its client gone (watched on `request` while the job waits or computes: nothing more to compute)."""
    try:
        if request is None:
            return await next_event(state, job)
        return await _unless_gone(next_event(state, job), request)
    finally:
        finished(state, job)


async def _unless_gone(awaited, request) -> tuple[str, object]:
    answer, gone = asyncio.ensure_future(awaited), asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (answer, gone):
            task.cancel()
    if answer.done() and not answer.cancelled():
        return answer.result()
    return "error", (499, "the client closed the connection before the answer")


async def _disconnected(request) -> None:
    """Returns once the client has closed the connection (its body was read before: what comes is the end)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Streamed(StreamingResponse):
    """Server-sent events whose jobs are withdrawn however the stream ends: finished, cut by the client, or
    never begun because the client left first (then the generator never runs, nor its `finally`)."""

    def __init__(self, events, *, on_close):
        super().__init__(events, media_type="text/event-stream")
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def finished(state, job: Job) -> None:
    state.scheduler.withdraw(job)
    metrics = getattr(state, "metrics", None)
    if metrics is not None:
        metrics.job_finished(job)
