"""Headless Chromium (Debian's `chromium`, driven by Playwright) and node, for tests of the pages charlm writes.

Tests take the `browser` or `node` fixture (tests/conftest.py); each skips with a message saying what to
install where Chromium, Playwright or node is absent. `open_page` fails a test whose page asks the network
for anything or logs a JavaScript error: the pages must work offline, from one file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_executable() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def node_executable() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


class OfflinePage:
    """A page opened from a file, with every request it makes and every error it logs recorded."""

    def __init__(self, browser, path: Path, width: int = 1100, height: int = 800):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.route("**/*", self._route)
        self.page.goto(Path(path).resolve().as_uri())

    def _route(self, route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def check_offline(self) -> None:
        assert not self.requests, f"the page asked the network for {self.requests}"
        assert not self.errors, f"the page logged errors: {self.errors}"

    def close(self) -> None:
        self.page.close()


def open_page(browser, path: Path, **size) -> OfflinePage:
    return OfflinePage(browser, path, **size)
