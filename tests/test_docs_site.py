"""The user guide as a site: `mkdocs build --strict` passes, and the built site, served as any static host would
serve it, works in headless Chromium: every page of the nav linked from the home page, its picture loaded, a
click reaches a page, search finds a command, nothing asked of any other host, no JavaScript error. Skips, saying
what to install, without the docs extra or Chromium."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers import screenshot_colours

REPO = Path(__file__).resolve().parent.parent


def nav_pages(entries) -> list[str]:
    """The Markdown files of mkdocs.yml's nav, sections flattened."""
    pages = []
    for entry in entries:
        for value in entry.values():
            pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


SITE_CONFIG = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
NAV = nav_pages(SITE_CONFIG["nav"])
# lab notes kept beside the guide but left out of the site on purpose
EXCLUDED = set(SITE_CONFIG["exclude_docs"].split())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module, package in (("mkdocs", "mkdocs"), ("material", "mkdocs-material")):
        pytest.importorskip(module, reason=f"{package} not installed: pip install -e '.[docs]' (make docs does)")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-2000:]  # --strict: a broken link, anchor or nav entry fails
    return out


@pytest.fixture(scope="module")
def served(site):
    """The built site on a local port, as a static host serves it (the search index is fetched, which a page
    opened from disk may not do)."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_every_guide_page_is_in_the_nav_and_built(site):
    guide = sorted(p.name for p in (REPO / "docs").glob("*.md") if p.name not in EXCLUDED)
    assert sorted(NAV) == guide
    for page in NAV:
        assert (site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")).is_file(), page
    # the root files come in whole through the docs/ stubs of the same name
    assert "The documentation is tested" in (site / "CONTRIBUTING" / "index.html").read_text(encoding="utf-8")
    assert "## 1.0.0" not in (site / "CHANGELOG" / "index.html").read_text(encoding="utf-8")  # rendered


def test_the_home_page_works_in_chromium(served, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    elsewhere, errors = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))

    def route(request_route):
        if request_route.request.url.startswith(served):
            request_route.continue_()
        else:
            elsewhere.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    try:
        page.goto(served)
        assert page.locator("h1").first.inner_text().rstrip("¶") == "charlm"
        picture = page.locator("article img").first
        assert picture.evaluate("img => img.complete && img.naturalWidth") > 0  # the loss curve, from docs/
        linked = page.locator("nav.md-nav--primary a.md-nav__link[href]").evaluate_all(
            "links => links.map(a => a.getAttribute('href'))"
        )
        assert len({href for href in linked if not href.startswith("#")}) >= len(NAV)
        assert screenshot_colours(page.screenshot()) > 50  # rendered, not blank
        page.locator("article a", has_text="Sampling").first.click()
        page.wait_for_load_state()
        assert page.locator("h1").first.inner_text().rstrip("¶") == "Sampling"
        assert page.url == served + "sampling/"
        page.keyboard.press("s")  # Material's shortcut to the search box
        page.keyboard.type("repetition")
        best = page.locator(".md-search-result__item a").first
        best.wait_for(timeout=10_000)
        assert best.get_attribute("href").startswith(served + "sampling/")  # the index was fetched and searched
        assert not elsewhere, f"the site asked other hosts for {elsewhere}"
        assert not errors, f"the site logged errors: {errors}"
    finally:
        page.close()


def test_the_notebook_page_shows_the_notebooks_inline_plot(served, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(served + "notebook/")
        plot = page.locator("article img").first
        assert plot.evaluate("img => img.complete && img.naturalWidth") > 0  # the plot the executed notebook drew
        assert page.locator("article a[href$='d2l-rnn.ipynb']").count() == 1  # the notebook itself is linked
    finally:
        page.close()
