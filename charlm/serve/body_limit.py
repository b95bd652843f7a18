"""A request body of at most `limit` bytes, sent within `read_time` seconds, else the API's JSON error (413,
408) before any handler runs; and 503 for a body still arriving when the server starts to stop.

A pure ASGI middleware: a declared Content-Length over the limit is refused unread; any other body is read
up to the limit (a chunked one too) and handed on whole. A body shorter than its Content-Length, or a chunked
body never finished, would otherwise hold its connection for as long as the client likes: the time to read
it is bounded here, since the server's time limit only starts once the request is in. Starlette's own limit
answers in plain text."""

from __future__ import annotations

import asyncio
import time

from charlm.serve.replies import STOPPING, error_response


class BodyLimit:
    def __init__(self, app, *, limit: int, read_time: float, state):
        self.app, self.limit, self.read_time, self.state = app, limit, read_time, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._too_large(path)(scope, receive, send)
            return
        body, refusal = await self._read(receive, path)
        if refusal is not None:
            await refusal(scope, receive, send)
        elif body is not None:
            await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive, path: str):
        """(the body, None), or (None, the refusal to send), or (None, None) when the client left first."""
        body, more, deadline, pending = b"", True, time.monotonic() + self.read_time, None
        while more:
            pending = pending or asyncio.ensure_future(receive())
            # a stop is noticed within a quarter of a second, while the client is still sending
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, min(0.25, deadline - time.monotonic())))
            if not done:
                if self.state.draining or time.monotonic() >= deadline:
                    pending.cancel()
                    return None, self._late(path) if not self.state.draining else self._stopping(path)
                continue
            message, pending = pending.result(), None
            if message["type"] != "http.request":  # the client left before its body was sent
                return None, None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return None, self._too_large(path)
        return body, None

    def _too_large(self, path: str):
        message = f"the request body is over {self.limit:,} bytes (the server's limit)"
        return error_response(path, 413, message, headers={"Connection": "close"})

    def _late(self, path: str):
        message = f"the request's body did not arrive within {self.read_time:g} s (--limit read_time)"
        return error_response(path, 408, message, headers={"Connection": "close"})

    def _stopping(self, path: str):
        return error_response(path, 503, STOPPING, headers={"Connection": "close"})


def _replay(body: bytes, receive):
    """The body as one message, then what comes after it (a client leaving mid-stream)."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
