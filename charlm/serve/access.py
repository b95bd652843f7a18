"""Who may use the server and when: API keys, and a server that is stopping.

`Gate` is a pure ASGI middleware in front of every route. With keys (`charlm serve --api-key`, or the
CHARLM_API_KEY variable), every request but GET /health must carry `Authorization: Bearer KEY`; a missing
or wrong key is 401 in the route's error shape. Keys are compared through their SHA-256 digests with
`hmac.compare_digest`, every key every time, so the answer's timing does not depend on how much of a key a
guess got right, nor on which key matched. Once the server is stopping (a first SIGTERM or Ctrl+C), every
new request is 503 and /health says "stopping"; the requests already inside are counted in `active` so the
server can wait for them.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from charlm.errors import UsageError
from charlm.serve.replies import STOPPING, error_response

KEY_VARIABLE = "CHARLM_API_KEY"  # one key, or several separated by commas
OPEN = ("/health",)


def api_keys(given: list[str] | None) -> tuple[str, ...]:
    """The keys of `--api-key` (repeatable) and of CHARLM_API_KEY; an empty or blank key is refused."""
    keys = list(given or [])
    variable = os.environ.get(KEY_VARIABLE)
    if variable is not None:
        keys += variable.split(",")
    for key in keys:
        if not key.strip():
            where = KEY_VARIABLE if key in (variable or "").split(",") else "--api-key"
            raise UsageError(f"{where} holds an empty key: give keys of at least one character (several: a,b)")
        if any(ord(c) < 33 or ord(c) == 127 for c in key.strip()) or not key.strip().isascii():
            raise UsageError("an API key has a space, a control or a non-ASCII character: use printable ASCII")
    return tuple(dict.fromkeys(key.strip() for key in keys))


class Gate:
    def __init__(self, app, *, keys: tuple[str, ...], state):
        self.app, self.state = app, state
        self.digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path not in OPEN and self.digests and not self.allowed(scope):
            refusal = error_response(
                path,
                401,
                "a missing or wrong API key: send the header 'Authorization: Bearer KEY' with a key of this server",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await refusal(scope, receive, send)
            return
        if self.state.draining and path not in OPEN:
            await error_response(path, 503, STOPPING, headers={"Connection": "close"})(scope, receive, send)
            return
        self.state.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.active -= 1

    def allowed(self, scope) -> bool:
        given = b""
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                given = value
        scheme, _, token = given.partition(b" ")
        digest = hashlib.sha256(token.strip() if scheme.lower() == b"bearer" else b"\0no key").digest()
        matched = False
        for known in self.digests:  # every key, whatever matched: no early exit
            matched |= hmac.compare_digest(digest, known)
        return matched
