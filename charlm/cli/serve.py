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
) -> None:
    """Serve a trained run (or an exported model) over HTTP: POST /generate and /perplexity, GET /model and
    /health, the OpenAPI page at /docs. Ctrl+C stops it."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(EXTRA) from None
    from charlm.api import load
    from charlm.serve.app import create_app
    from charlm.serve.limits import Limits
    from charlm.serve.server import everywhere, listen, run, url

    limits = Limits.of(limit or [])  # before the model is read: bad flags fail fast
    sock = listen(host, port)
    try:
        model = load(model_source(run_dir, model_dir), checkpoint, device)
        app = create_app(model, limits)
    except BaseException:
        sock.close()
        raise
    if everywhere(host):
        cli.err.print(
            f"warning: listening on every interface ({host}): anyone who can reach this machine can use the model "
            "(pass --host 127.0.0.1 to keep it to this one)",
            markup=False,
        )
    cli.out.print(f"serving {model.path} at {url(sock)} (the API's page: {url(sock)}/docs); Ctrl+C stops", markup=False)
    run(app, sock)
