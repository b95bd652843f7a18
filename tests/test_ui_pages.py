"""pages: templates shipped as package data, data embedded safely, each page marked as charlm's, its path checked."""

from __future__ import annotations

import json

import pytest

from charlm.errors import UsageError
from charlm.store import targets
from charlm.ui import pages


def test_the_templates_are_package_data_with_their_marks():
    for name in ("surprisal", "neurons"):
        html = pages.template(name)
        assert html.count(pages.DATA_MARK) == 1 and html.count(pages.TITLE_MARK) == 1
        assert "<script src" not in html and "http" not in html  # one file, nothing fetched


def test_embedded_data_cannot_close_the_script_element():
    data = {"title": "<b>&", "text": list("</script><!-- \u2028x")}
    embedded = pages.embed_json(data)
    assert "</" not in embedded and "<!--" not in embedded and "\u2028" not in embedded
    assert json.loads(embedded) == data
    html = pages.render("surprisal", data)
    assert "<title>&lt;b&gt;&amp;</title>" in html and pages.DATA_MARK not in html
    with pytest.raises(ValueError):
        pages.embed_json({"x": float("nan")})  # not JSON: the page would not parse it


def test_every_page_says_in_its_first_bytes_that_charlm_wrote_it(tmp_path):
    """targets.written_by_charlm reads a bounded prefix: the tag must be in it, whatever the page holds."""
    from importlib import resources

    demo = resources.files("charlm.ui.pages").joinpath("demo.html").read_text(encoding="utf-8")
    for name, html in (
        ("surprisal", pages.render("surprisal", {"title": "x" * 10_000})),
        ("neurons", pages.render("neurons", {"title": "t"})),
        ("demo", demo),
    ):
        assert html.encode().find(targets.GENERATOR_TAG.encode()) < 512, name
        page = tmp_path / f"{name}.html"
        pages.write(page, html)
        assert targets.written_by_charlm(page)


def test_write_checks_the_page_again(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        pages.write(tmp_path / "missing" / "page.html", "<p>")
    with pytest.raises(UsageError, match="is a folder"):
        pages.write(tmp_path, "<p>")
    (tmp_path / "notes.html").write_text("mine")
    with pytest.raises(UsageError, match="--force"):
        pages.write(tmp_path / "notes.html", "<p>")
    assert (tmp_path / "notes.html").read_text() == "mine"
    pages.write(tmp_path / "notes.html", "<p>", force=True)
    assert (tmp_path / "notes.html").read_text() == "<p>"
