"""The app on uvicorn, the reference ASGI server: listening is done here first, so that a port in use is one
line, `--port 0` takes a free port, and the address printed is the one really listened on; and the server's
stop, which is charlm's own (`Server`), so that no request under way is cut without a word.

A first SIGTERM, SIGINT (Ctrl+C) or SIGHUP starts the stop: /health answers 503 "stopping", new requests get
503, and the requests under way (streams too) may finish for up to `Limits.shutdown_grace` seconds. Those
still running then get an error (a stream's last event says why), and the server exits 0. A second signal
exits at once, with 128 + its number.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import signal
import socket
import threading
import time

from charlm.errors import UsageError
from charlm.serve.connections import guarded, most_connections
from charlm.serve.scheduler import abort

LOCAL = "127.0.0.1"


def everywhere(host: str) -> bool:
    """Whether `host` listens on every interface (0.0.0.0, ::): reachable from other machines."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


def loopback(host: str) -> bool:
    """Whether `host` is this machine only (127.0.0.0/8, ::1, localhost): nothing else can reach it."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
LAST_WORDS = 1.0  # seconds for the requests cut at the grace's end to send their error, before connections close


def uvicorn_config(app):
    """uvicorn's config for `app`: charlm's connection bounds (connections.py), one-line logs."""
    import uvicorn

    limits = app.state.limits
    quiet_logs()
    return uvicorn.Config(
        app,
        log_level="warning",
        timeout_graceful_shutdown=LAST_WORDS,
        http=guarded(read_time=limits.read_time, most=most_connections(limits.connections)),
    )


def run(app, sock: socket.socket) -> None:
    """Serve until a stop signal, then let the requests under way finish (see the module's doc) and return."""
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with charlm's stop: a drain first, then uvicorn's own shutdown, and no signal
        raised again at the end (a clean stop exits 0)."""

        stop_at: float | None = None
        cut_at: float | None = None

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            # a signal the parent ignored (nohup's SIGHUP) stays ignored
            live = [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
            before = {sig: signal.signal(sig, self.handle_exit) for sig in live}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig, frame) -> None:
            if self.stop_at is not None:  # a second signal: at once
                os.write(2, b"charlm serve: a second stop signal: stopped at once, requests under way cut\n")
                os._exit(128 + sig)
            self.stop_at = time.monotonic() + app.state.limits.shutdown_grace
            app.state.draining = True

        async def on_tick(self, counter: int) -> bool:
            if self.stop_at is not None and not self.should_exit:
                self.should_exit = self._drained()
            return await super().on_tick(counter)

        def _drained(self) -> bool:
            """Whether the drain is over: nothing under way, or the grace spent (then the rest told, once)."""
            now = time.monotonic()
            if app.state.active == 0:
                return True
            if self.cut_at is None and now >= self.stop_at:
                abort(app.state.scheduler, 503, "the server stopped before this request finished: send it again")
                self.cut_at = now
            return self.cut_at is not None and now >= self.cut_at + LAST_WORDS

    server = Server(uvicorn_config(app))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class OneLine(logging.Filter):
    """A log record as one line without its traceback (which names this install's paths), and the same line
    at most once every `quiet` seconds (a flood of refused connections writes one line, not thousands)."""

    def __init__(self, quiet: float = 10.0):
        super().__init__()
        self.quiet, self.last = quiet, {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage().splitlines()[0]}: {type(error).__name__}", ()
            record.exc_info = record.exc_text = None
        line, now = record.getMessage(), time.monotonic()
        if now - self.last.get(line, -math.inf) < self.quiet:
            return False
        if len(self.last) > 1000:  # bounded, whatever a client makes the server say
            self.last.clear()
        self.last[line] = now
        return True


def quiet_logs() -> None:
    """uvicorn's and asyncio's loggers, one line a record (OneLine)."""
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLine) for f in logger.filters):
            logger.addFilter(OneLine())
