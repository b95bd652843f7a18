"""The browser helper itself: a page runs offline, its network requests and errors are caught."""

from __future__ import annotations

import subprocess

import pytest
from browser import open_page


def test_a_page_runs_and_its_dom_can_be_driven(browser, tmp_path):
    page_file = tmp_path / "p.html"
    page_file.write_text(
        "<input id=p><button id=b onclick=\"o.textContent=p.value+'!'\">go</button><pre id=o></pre>", encoding="utf-8"
    )
    page = open_page(browser, page_file)
    page.page.fill("#p", "分开")
    page.page.click("#b")
    assert page.page.text_content("#o") == "分开!"
    page.check_offline()
    page.close()


def test_a_network_request_or_a_script_error_fails_the_offline_check(browser, tmp_path):
    page_file = tmp_path / "p.html"
    page_file.write_text(
        "<script src='https://example.com/x.js'></script><script>undefinedName()</script>", encoding="utf-8"
    )
    page = open_page(browser, page_file)
    with pytest.raises(AssertionError, match="network"):
        page.check_offline()
    assert any("undefinedName" in e for e in page.errors)
    page.close()


def test_node_runs_javascript(node):
    result = subprocess.run(
        [node, "-e", "console.log([1,2,3].map(x => x * 2).join(','))"], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "2,4,6"
