"""`create_app(model, limits)`: the HTTP API of one loaded model, a FastAPI app for any ASGI server
(`charlm serve` runs it on uvicorn). All its state is on `app.state`: the model, the limits, the scheduler.

POST /generate (JSON, or server-sent events with "stream": true), POST /perplexity, GET /model, GET /health;
/docs and /openapi.json come with FastAPI. Every error is JSON {"error": "..."} with a 4xx or 5xx status.
"""

# no `from __future__ import annotations`: FastAPI reads the request models from the handlers' annotations,
# and those models are made per app (for its limits), so the annotations must be the classes themselves

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from charlm import __version__
from charlm.errors import UsageError
from charlm.serve.body_limit import BodyLimit
from charlm.serve.jobs import Job, Reply
from charlm.serve.limits import Limits
from charlm.serve.scheduler import Scheduler
from charlm.serve.schemas import request_models
from charlm.serve.work import generation_job, model_facts, scoring_job

ERROR = {"content": {"application/json": {"example": {"error": "length: ..."}}}}
ANSWERS = {400: ERROR, 413: ERROR, 422: ERROR, 503: ERROR, 504: ERROR}


def create_app(model, limits: Limits | None = None) -> FastAPI:
    """The app serving `model` (what `charlm.load` returns: net, vocab, checkpoint, device) within `limits`."""
    limits = limits or Limits()
    scheduler = Scheduler(model.net, limits, device=model.device)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        scheduler.close()

    app = FastAPI(
        title="charlm",
        version=__version__,
        description=f"A character-level language model ({model_facts(model)['kind']}) over HTTP.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, limit=limits.body_bytes)
    app.state.model, app.state.limits, app.state.scheduler = model, limits, scheduler
    _errors(app)
    _routes(app, *request_models(limits, vocab_size=len(model.vocab)))
    return app


def _routes(app: FastAPI, generate_request, perplexity_request) -> None:
    state = app.state

    @app.post("/generate", responses=ANSWERS, summary="Sample text (the objects of `charlm generate --json`)")
    async def generate(body: generate_request):
        job, options = generation_job(state.model, body, Reply(asyncio.get_running_loop()))
        records = _records(body.length, options)
        if body.stream:
            return _admitted(job) or StreamingResponse(_events(job, records), media_type="text/event-stream")
        return _admitted(job) or await _answer(job, records)

    @app.post("/perplexity", responses=ANSWERS, summary="Score a text (`charlm perplexity --json`'s figures)")
    async def perplexity(body: perplexity_request):
        job = scoring_job(state.model, body, Reply(asyncio.get_running_loop()))
        return _admitted(job) or await _answer(job, lambda result: result)

    @app.get("/model", summary="The model's facts (those of its model card)")
    async def facts():
        return model_facts(state.model)

    @app.get("/health", summary="Up, and how busy")
    async def health():
        return {"status": "ok", **state.scheduler.stats()}

    def _admitted(job: Job) -> JSONResponse | None:
        """None when the job has a place; else the 503 that says to come back."""
        job.deadline = time.monotonic() + state.limits.time_limit
        if state.scheduler.submit(job):
            return None
        return JSONResponse(
            {"error": "the server is busy (its queue is full): try again shortly"},
            status_code=503,
            headers={"Retry-After": str(state.limits.retry_after)},
        )

    async def _answer(job: Job, present) -> JSONResponse | dict:
        try:
            kind, value = await job.reply.get(job.deadline - time.monotonic())
        except asyncio.TimeoutError:
            return _error(504, _too_long(state.limits))
        finally:
            state.scheduler.withdraw(job)  # done, timed out or the request cancelled: nothing more to compute
        return present(value) if kind == "done" else _error(*value)

    async def _events(job: Job, present) -> AsyncIterator[str]:
        try:
            while True:
                try:
                    kind, value = await job.reply.get(job.deadline - time.monotonic())
                except asyncio.TimeoutError:
                    yield _event("error", {"error": _too_long(state.limits)})
                    return
                if kind == "chars":
                    yield _event("chars", {"chars": value})
                    continue
                yield _event("done", present(value)) if kind == "done" else _event("error", {"error": value[1]})
                return
        finally:  # also when the client left: its generation stops at the next step
            state.scheduler.withdraw(job)


def _records(length: int, options):
    return lambda samples: {"samples": [sample.record(n, length, options) for n, sample in enumerate(samples, 1)]}


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _too_long(limits: Limits) -> str:
    return f"the request took longer than the server's time limit ({limits.time_limit:g} s): ask for less"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI) -> None:
    """Every error as {"error": "one line"}: bad options 400 (the library's words), bad JSON or a limit 422."""

    @app.exception_handler(UsageError)
    async def usage(request: Request, error: UsageError):
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        problems = [_problem(e) for e in error.errors()[:3]]
        return _error(422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


def _problem(error: dict) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where or 'body'}: {error.get('msg', 'invalid')}"
