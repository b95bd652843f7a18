"""`charlm serve`: a run's (or a model folder's) model over HTTP, on 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from charlm.cli import app as cli
from charlm.cli.common import Device, ModelDir, RunDir, Which, model_source
from charlm.errors import UsageError

Host = Annotated[str, typer.Option(help="The address to listen on; 0.0.0.0 is every interface (a warning says so).")]
Port = Annotated[int, typer.Option(help="The port (0: any free one; the address printed is the real one).")]
Limit = Annotated[
    Optional[list[str]],
    typer.Option(
        "--limit",
        help="NAME=VALUE: one of the server's limits (repeatable), e.g. computing=4, length=500 (docs/serve.md).",
    ),
]
ApiKey = Annotated[
    Optional[list[str]],
    typer.Option(
        "--api-key",
        help="Require 'Authorization: Bearer KEY' on every route but /health (repeatable; or CHARLM_API_KEY=a,b).",
    ),
]
CorsOrigin = Annotated[
    Optional[list[str]],
    typer.Option("--cors-origin", help="A browser origin allowed to call the API, e.g. http://localhost:3000."),
]
AllowedHost = Annotated[
    Optional[list[str]],
    typer.Option(
        "--allowed-host", help="A name clients may call the server by (the Host header), e.g. lm.example.org."
    ),
]
EXTRA = "charlm serve needs the serve extra: pip install 'charlm[serve]'"


@cli.app.command(epilog="Example: charlm serve --model models/lyrics --port 8000")
def serve(
    run_dir: RunDir = None,
    model_dir: ModelDir = None,
    checkpoint: Which = "best",
    host: Host = "127.0.0.1",
    port: Port = 8000,
    device: Device = "cpu",
    limit: Limit = None,
    api_key: ApiKey = None,
    cors_origin: CorsOrigin = None,
    allowed_host: AllowedHost = None,
) -> None:
    """Serve a trained run (or an exported model) over HTTP: POST /generate and /perplexity, GET /model and
    /health, OpenAI's /v1/completions, /v1/chat/completions and /v1/models, /metrics, the OpenAPI schema at
    /openapi.json. Ctrl+C (or SIGTERM) stops it, letting the requests under way finish."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(EXTRA) from None
    from charlm.api import load
    from charlm.serve.access import KEY_VARIABLE, api_keys, host_names
    from charlm.serve.app import create_app
    from charlm.serve.limits import Limits
    from charlm.serve.server import everywhere, listen, loopback, run, url

    limits = Limits.of(limit or [])  # before the model is read: bad flags fail fast
    keys = api_keys(api_key)
    sock = listen(host, port)
    try:
        model = load(model_source(run_dir, model_dir), checkpoint, device)
        hosts = host_names(host, allowed_host)
        app = create_app(model, limits, keys=keys, cors_origins=tuple(cors_origin or ()), hosts=hosts)
    except BaseException:
        sock.close()
        raise
    if not keys and not loopback(host):
        where = f"on every interface ({host})" if everywhere(host) else f"on {host}"
        cli.err.print(
            f"warning: listening {where} without a key: anyone who can reach this machine can use the model "
            f"(pass --host 127.0.0.1 to keep it to this one, or require a key: {KEY_VARIABLE}=SECRET charlm serve ...)",
            markup=False,
        )
    cli.out.print(
        f"serving {model.path} at {url(sock)} (its schema: {url(sock)}/openapi.json); Ctrl+C stops", markup=False
    )
    run(app, sock)
