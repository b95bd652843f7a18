"""pages: templates shipped as package data, data embedded safely, page paths checked before the work."""

from __future__ import annotations

import json

import pytest

from charlm import pages
from charlm.errors import UsageError


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


def test_check_target(tmp_path):
    pages.check_target(tmp_path / "page.html")
    with pytest.raises(UsageError, match="does not exist"):
        pages.check_target(tmp_path / "missing" / "page.html")
    with pytest.raises(UsageError, match="is a folder"):
        pages.check_target(tmp_path)
