"""`create_app(model, limits)`: the HTTP API of one loaded model, a FastAPI app for any ASGI server
(`charlm serve` runs it on uvicorn). All its state is on `app.state`: the model, the limits, the scheduler,
the metrics, whether it is stopping.

Native routes: POST /generate (JSON, or server-sent events with "stream": true), POST /perplexity, POST
/tokenize and /detokenize, GET /model, GET /health, GET /metrics (Prometheus). OpenAI-compatible routes under
/v1 (openai_routes.py). /openapi.json comes with FastAPI (its /docs and /redoc pages, which load scripts
from a CDN, are not served). Every native error is JSON
{"error": "..."} with a 4xx or 5xx status; /v1's are in OpenAI's envelope (replies.py).
"""

# no `from __future__ import annotations`: FastAPI reads the request models from the handlers' annotations,
# and those models are made per app (for its limits), so the annotations must be the classes themselves

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from charlm import __version__
from charlm.errors import UsageError
from charlm.serve.access import Gate
from charlm.serve.body_limit import BodyLimit
from charlm.serve.jobs import Job, Reply
from charlm.serve.limits import Limits
from charlm.serve.metrics import Counting, ServeMetrics
from charlm.serve.openai_routes import add_openai_routes
from charlm.serve.openai_schemas import openai_models
from charlm.serve.replies import Streamed, admit, error_response, finished, next_event, openai_shaped, outcome
from charlm.serve.scheduler import Scheduler
from charlm.serve.schemas import request_models, token_models
from charlm.serve.work import detokenize, generation_job, model_facts, scoring_job, tokenize, tokenizer_info

NOT_JSON = "the body is not valid JSON (UTF-8 text, nested at most a few hundred deep): send a JSON object"
ERROR = {"content": {"application/json": {"example": {"error": "length: ..."}}}}
ANSWERS = {400: ERROR, 413: ERROR, 422: ERROR, 503: ERROR, 504: ERROR}


def create_app(
    model, limits: Limits | None = None, *, keys: tuple[str, ...] = (), cors_origins=(), hosts=None, mix=None
) -> FastAPI:
    """The app serving `model` (what `charlm.load` returns: net, vocab, checkpoint, device) within `limits`;
    with `keys`, only to requests that carry one (access.py); `cors_origins`: the browser origins allowed;
    `hosts`: the Host names served (None: any; access.host_names); `mix`: a mixing.ServedMix (serve --mix)."""
    limits = limits or Limits()
    scheduler = Scheduler(model.net, limits, device=model.device)
    metrics = ServeMetrics(scheduler)
    scheduler.on_batch_step = metrics.batch_rows.observe

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
        # the schema is served (/openapi.json); FastAPI's pages load their scripts from a CDN: blank offline
        docs_url=None,
        redoc_url=None,
    )
    app.state.model, app.state.limits, app.state.scheduler, app.state.metrics = model, limits, scheduler, metrics
    app.state.mix = mix
    app.state.active, app.state.draining = 0, False  # requests under way; stopping (server.py)
    app.add_middleware(BodyLimit, limit=limits.body_limit, read_time=limits.read_time, state=app.state)
    app.add_middleware(Gate, keys=tuple(keys), state=app.state, hosts=hosts)
    app.add_middleware(Counting, metrics=metrics)
    if cors_origins:  # outermost: a browser's preflight is answered before any key is asked for
        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"], allow_headers=["*"], max_age=600
        )
    _errors(app)
    vocab_size = len(model.vocab)
    _routes(app, *request_models(limits, vocab_size=vocab_size))
    _token_routes(app, *token_models(limits, vocab_size=vocab_size))
    add_openai_routes(app, *openai_models(limits, vocab_size=vocab_size))
    return app


def _routes(app: FastAPI, generate_request, perplexity_request) -> None:
    state = app.state

    @app.post("/generate", responses=ANSWERS, summary="Sample text (the objects of `charlm generate --json`)")
    async def generate(body: generate_request, request: Request):
        job, options = generation_job(state.model, body, Reply(asyncio.get_running_loop()), state.mix)
        records = _records(body.length, options)
        if body.stream:
            return _admitted(job) or Streamed(_events(job, records), on_close=lambda: finished(state, job))
        return _admitted(job) or await _answer(job, records, request)

    @app.post("/perplexity", responses=ANSWERS, summary="Score a text (`charlm perplexity --json`'s figures)")
    async def perplexity(body: perplexity_request, request: Request):
        job = scoring_job(state.model, body, Reply(asyncio.get_running_loop()), state.mix)
        return _admitted(job) or await _answer(job, lambda result: result, request)

    @app.get("/model", summary="The model's facts (those of its model card)")
    async def facts():
        return model_facts(state.model, state.mix)

    @app.head("/health", include_in_schema=False)  # a load balancer's probe: the status alone
    @app.get("/health", summary="Up (200), or stopping (503), and how busy")
    async def health():
        if state.draining:
            return JSONResponse({"status": "stopping", **state.scheduler.stats()}, status_code=503)
        return {"status": "ok", **state.scheduler.stats()}

    @app.get("/metrics", summary="The server's figures in Prometheus' text format")
    async def prometheus():
        return Response(state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def _admitted(job: Job) -> JSONResponse | None:
        """None when the job has a place; else the 503 that says to come back (busy, or stopping)."""
        return admit(state, "/generate", [job])

    async def _answer(job: Job, present, request: Request) -> JSONResponse | dict:
        kind, value = await outcome(state, job, request)
        return present(value) if kind == "done" else _error(*value)

    async def _events(job: Job, present) -> AsyncIterator[str]:
        try:
            while True:
                kind, value = await next_event(state, job)
                if kind == "chars":
                    yield _event("chars", {"chars": value})
                    continue
                yield _event("done", present(value)) if kind == "done" else _event("error", {"error": value[1]})
                return
        finally:  # also when the client left: its generation stops at the next step
            finished(state, job)


def _token_routes(app: FastAPI, tokenize_request, detokenize_request) -> None:
    state = app.state

    @app.post("/tokenize", summary="A text's character ids, as the model reads it (one token is one character)")
    async def to_ids(body: tokenize_request):
        return tokenize(state.model, body.prompt)

    @app.get("/tokenizer_info", summary="How the model counts tokens: one per character")
    async def about_tokens():
        return tokenizer_info(state.model)

    @app.post("/detokenize", summary="The text of character ids")
    async def to_text(body: detokenize_request):
        return detokenize(state.model, body.tokens)


def _records(length: int, options):
    return lambda samples: {"samples": [sample.record(n, length, options) for n, sample in enumerate(samples, 1)]}


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI) -> None:
    """Every error in its route's shape: bad options 400 (the library's words), bad JSON or a limit 422 on the
    native routes and 400 on /v1 (OpenAI's clients expect 400 for a bad parameter)."""

    @app.exception_handler(UsageError)
    async def usage(request: Request, error: UsageError):
        return error_response(request.url.path, 400, str(error), param=getattr(error, "param", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        found, path = error.errors(), request.url.path
        if any(e.get("type") == "json_invalid" for e in found):
            return error_response(path, 400, NOT_JSON)
        problems = "; ".join(_problem(e) for e in found[:3])
        status = 400 if openai_shaped(path) else 422
        return error_response(path, status, problems, param=_where(found[0]) if found else None)

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException):
        # FastAPI's own words for a body it cannot decode (bad UTF-8, too deep, a number too long): as above
        message = NOT_JSON if error.status_code == 400 else str(error.detail)
        return error_response(request.url.path, error.status_code, message, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        # the app's last word: still JSON (the log gets one line, server.py)
        return error_response(request.url.path, 500, f"unexpected {type(error).__name__}: the server failed")


def _where(error: dict) -> str | None:
    # a union's members name themselves in the location ("constrained-str", "list[int]"): fields are identifiers
    parts = [
        str(part)
        for part in error.get("loc", ())
        if part != "body" and (str(part).isidentifier() or isinstance(part, int))
    ]
    return ".".join(parts) or None


def _problem(error: dict) -> str:
    return f"{_where(error) or 'body'}: {error.get('msg', 'invalid')}"
