"""A request body of at most `limit` bytes, else 413 with the API's JSON error, before any handler runs.

A pure ASGI middleware: a declared Content-Length over the limit is refused unread; any other body is read
up to the limit (a chunked one too) and handed on whole. Starlette's own limit answers in plain text."""

from __future__ import annotations

import json


class BodyLimit:
    def __init__(self, app, *, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its body was sent
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(send)
                return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # then what comes after the body: a client leaving mid-stream
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        content = json.dumps({"error": f"the request body is over {self.limit:,} bytes (the server's limit)"})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": content.encode()})
