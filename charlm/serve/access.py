"""Who may use the server and when: by which name (the Host header), with which API key, and not once the
server is stopping.

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


def host_names(listened: str, allowed: list[str] | None) -> frozenset[str] | None:
    """The Host names a request may carry (against DNS rebinding: a page on another site that resolves its own
    name to 127.0.0.1 still sends its own name): the address listened on, this machine's own names when that
    is a loopback address, and those allowed by --allowed-host. None (any name) on every interface without
    --allowed-host: the names others use to reach this machine are not known here."""
    from charlm.serve.server import everywhere, loopback

    named = {name.strip().lower().strip("[]") for name in allowed or () if name.strip()}
    if everywhere(listened) and not named:
        return None
    named.add(listened.lower().strip("[]"))
    if loopback(listened):
        named.update({"localhost", "127.0.0.1", "::1"})
    return frozenset(named)


def host_of(scope) -> str | None:
    """The name in a request's Host header, without its port (None: no Host header)."""
    for name, value in scope.get("headers") or ():
        if name == b"host":
            text = value.decode("latin-1").strip().lower()
            if text.startswith("["):  # [::1]:8000
                return text[1:].split("]", 1)[0]
            return text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return None


class Gate:
    def __init__(self, app, *, keys: tuple[str, ...], state, hosts: frozenset[str] | None = None):
        self.app, self.state, self.hosts = app, state, hosts
        self.digests = [hashlib.sha256(key.encode()).digest() for key in keys]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        host = host_of(scope)
        if self.hosts is not None and host is not None and host not in self.hosts:
            message = f"the Host header names {host!r}, not this server: call it by its address (or --allowed-host)"
            await error_response(path, 400, message)(scope, receive, send)
            return
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
