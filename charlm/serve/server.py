"""The app on uvicorn, the reference ASGI server: listening is done here first, so that a port in use is one
line, `--port 0` takes a free port, and the address printed is the one really listened on."""

from __future__ import annotations

import ipaddress
import os
import socket

from charlm.errors import UsageError

LOCAL = "127.0.0.1"


def everywhere(host: str) -> bool:
    """Whether `host` listens on every interface (0.0.0.0, ::): reachable from other machines."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: one the system picks)."""
    if isinstance(port, bool) or not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port: pass 1-65535 (0: any free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise UsageError(f"--host {host} cannot be listened on ({_reason(e)}): pass an address, e.g. {LOCAL}") from None
    try:
        if os.name == "posix":  # a restarted server may reuse a port whose old connections linger (not Windows)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({_reason(e)}): pass another --port or --host") from None
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app, sock: socket.socket) -> None:
    """Serve until Ctrl+C (or SIGTERM), then finish the requests under way and return."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
