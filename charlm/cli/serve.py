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
Mix = Annotated[
    bool,
    typer.Option(
        "--mix",
        help="Serve the model mixed with counts of its training text: samples, figures and logprobs "
        "(as generate --mix and perplexity --mix). Needs charlm[novelty].",
    ),
]
MaxCopy = Annotated[
    Optional[int],
    typer.Option(
        "--max-copy", help="With --mix: the network alone once a sample's last N characters are in the training text."
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
    mix: Mix = False,
    max_copy: MaxCopy = None,
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

    if max_copy is not None and (not mix or max_copy < 1):
        raise UsageError(
            "--max-copy guards the mix: pass --mix, and a length >= 1" if mix else "--max-copy needs --mix"
        )
    limits = Limits.of(limit or [])  # before the model is read: bad flags fail fast
    keys = api_keys(api_key)
    sock = listen(host, port)
    try:
        model = load(model_source(run_dir, model_dir), checkpoint, device)
        hosts = host_names(host, allowed_host)
        served_mix = _mix(model, max_copy) if mix else None
        app = create_app(model, limits, keys=keys, cors_origins=tuple(cors_origin or ()), hosts=hosts, mix=served_mix)
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


def _mix(model, max_copy: Optional[int]):
    """The served model's mix, fitted and kept on first use (before the server answers anything)."""
    from charlm.serve.mixing import ServedMix

    return ServedMix.load(model, max_copy=max_copy, say=lambda line: cli.err.print(line, markup=False))
