"""What a connection may hold: uvicorn's h11 protocol with charlm's bounds, so that no client holds the server
for free and every refusal is the API's JSON error.

- A request's head (its request line and headers) must arrive within `Limits.read_time` seconds of the
  connection opening, or of the previous answer on a kept-alive connection: a slowloris client that sends a
  header byte a second gets 408 and is closed. (Its body is bounded the same way by body_limit.py.)
- At most `Limits.connections` connections are open at once (never more than the process's file limit
  allows, less a reserve for the model's own files and the listening socket): one more is answered 503 and
  closed at once, so a flood of idle connections cannot use up the file descriptors and stop /health.
- A request the HTTP parser refuses (a head over 16 KiB, broken framing) gets the API's JSON error rather
  than the parser's plain text.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

RESERVE = 64  # file descriptors kept for everything else the process opens


def most_connections(wanted: int) -> int:
    """`wanted`, within this process's file limit (less RESERVE): the file limit is the real bound."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        return wanted
    return wanted if soft == resource.RLIM_INFINITY else max(1, min(wanted, soft - RESERVE))


def raw_error(status: int, reason: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the API's JSON error, for a connection with no request to answer."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded(*, read_time: float, most: int) -> type[H11Protocol]:
    """The protocol class for uvicorn.Config(http=...): h11 with these bounds."""

    class Guarded(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > most:
                self._close_with(503, "Service Unavailable", "the server has too many open connections: try again")
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is in: the body has its own time (body_limit.py)
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's head, on a kept-alive connection

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self._close_with(400, "Bad Request", f"the request is not valid HTTP ({msg.rstrip('.')}): fix the client")

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.head_timer = self.loop.call_later(read_time, self._too_slow)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _too_slow(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                message = f"the request's head did not arrive within {read_time:g} s (--limit read_time)"
                self._close_with(408, "Request Timeout", message)

        def _close_with(self, status: int, reason: str, message: str) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(raw_error(status, reason, message))
                self.transport.close()

    return Guarded
