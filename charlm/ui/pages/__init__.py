"""The HTML pages charlm writes: one template per page (package data beside this file), filled with data.

A page is one self-contained file: its CSS and script are inline in the template, its data is one JSON
block, and it asks the network for nothing, so it works offline and can be mailed or archived as is.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from charlm.store.targets import write_output_file

DATA_MARK = "/*CHARLM_DATA*/null"  # where a template takes its data
TITLE_MARK = "<!--CHARLM_TITLE-->"


def template(name: str) -> str:
    return resources.files("charlm.ui.pages").joinpath(f"{name}.html").read_text(encoding="utf-8")


def embed_json(data: dict) -> str:
    """JSON that is safe inside a <script> element: no "</script>", no "<!--" (the text may contain anything)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render(name: str, data: dict) -> str:
    """The page `name` with `data` (a dict with a "title") in it."""
    html = template(name)
    title = str(data.get("title", name)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return html.replace(TITLE_MARK, title, 1).replace(DATA_MARK, embed_json(data), 1)


def write(path: Path, html: str, *, force: bool = False) -> None:
    """Publish the page at `path`, checked again as targets.check_output_file says (the caller checked it
    before its work)."""
    write_output_file(Path(path), html.encode("utf-8"), option="--html", force=force)
