"""model_card.py: text from a run goes into the card escaped, in code spans or fenced, never as Markdown or HTML.

Each check renders the Markdown with markdown-it (CommonMark with GFM tables, raw HTML on, as GitHub and
the Hugging Face hub read a README) and looks at what a reader would get.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

import charlm
from charlm.cli.main import main
from charlm.export.model_card import cell, code, fenced, quote, text

REPO = Path(__file__).resolve().parents[1]
MD = MarkdownIt("commonmark", {"html": True}).enable("table")

HOSTILE = [
    "# heading <img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    "*bold* _it_ **b**",
    "a | b | c",
    "`one` ``two`` ````four````",
    "````",
    "`",
    "` x `",
    "line\n# injected",
    "line\r\n<div>",
    "&lt;escaped&gt; &amp;",
    "<!-- comment -->",
    "![img](http://x/y.png)",
    "a\\|b",
    "~~~\ntilde",
    "    indented",
    "> quote",
    "- item",
    "1. item",
    "---",
    "===",
    "\\",
    "分开 😀",
    "trailing \\",
    "#",
    "| |",
]


def inline_tokens(markdown: str) -> list:
    return [child for token in MD.parse(markdown) if token.type == "inline" for child in token.children]


def no_markup(markdown: str) -> bool:
    """No HTML, link, image, emphasis or heading came out of `markdown`."""
    kinds = {t.type for t in MD.parse(markdown)} | {t.type for t in inline_tokens(markdown)}
    return not kinds & {
        "html_block",
        "html_inline",
        "link_open",
        "image",
        "em_open",
        "strong_open",
        "heading_open",
        "s_open",
        "fence",
        "code_block",
        "table_open",
        "blockquote_open",
        "bullet_list_open",
        "ordered_list_open",
        "hr",
    }


@pytest.mark.parametrize("value", HOSTILE)
def test_plain_text_shows_as_written_on_one_line(value):
    line = f"# {text(value)}: a model"
    tokens = MD.parse(line)
    assert [t.type for t in tokens] == ["heading_open", "inline", "heading_close"]  # one heading, nothing else
    children = tokens[1].children
    assert {c.type for c in children} <= {"text", "softbreak"}, children
    # a heading drops its leading spaces: Markdown's, not an injection
    assert "".join(c.content for c in children) == " ".join(value.splitlines()).lstrip() + ": a model"


@pytest.mark.parametrize("value", HOSTILE)
def test_a_code_span_shows_its_text_literally(value):
    paragraph = f"run {code(value)} here"
    assert no_markup(paragraph)
    spans = [t.content for t in inline_tokens(paragraph) if t.type == "code_inline"]
    assert spans == [" ".join(value.splitlines())]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_table_cell_stays_one_cell(value):
    table = f"| | |\n|---|---|\n| corpus | {cell(value)}, sha256 {cell('ab|c')} |\n| next | row |"
    rendered = MD.render(table)
    assert rendered.count("<tr>") == 3 and rendered.count("<td>") == 4, rendered
    codes = re.findall(r"<code>(.*?)</code>", rendered, re.S)
    assert [html.unescape(c) for c in codes] == [value.replace("\r", "\\r").replace("\n", "\\n"), "ab|c"]


@pytest.mark.parametrize("value", [*HOSTILE, "```\n# after\n```", "a\n````\nb", "`" * 12, "```python\nx\n```"])
def test_a_fenced_block_cannot_be_closed_by_its_content(value):
    markdown = fenced(value, "text") + "\n\n# after the block"
    tokens = MD.parse(markdown)
    fences = [t for t in tokens if t.type == "fence"]
    same = value.replace("\r\n", "\n") + "\n"  # Markdown reads CRLF as a line break
    assert len(fences) == 1 and fences[0].content == same and fences[0].info == "text"
    assert [t.type for t in tokens][-3:] == ["heading_open", "inline", "heading_close"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="the shell words are checked by bash")
@pytest.mark.parametrize(
    "value", [*HOSTILE, "it's", "$HOME", "a\tb", "\x01\x7f", "new\nline", "plain", "-n", "*", "~", "{a,b}", "!x"]
)
def test_a_shell_word_is_one_line_and_gives_back_the_text(value):
    word = quote(value)
    assert "\n" not in word and "\r" not in word
    done = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, timeout=10)
    assert done.stdout.decode("utf-8") == value


def test_an_exported_card_with_hostile_prefixes_and_corpus_path_renders_as_meant(tmp_path, capsys):
    chars = "```` # heading <img src=x onerror=alert(1)> | a\\b ~ [x](y) *z*\n"
    folder = tmp_path / "c`or|pus # <b>"
    folder.mkdir()
    corpus = folder / "text | `x`.txt"
    corpus.write_text((chars + "分开不分开 我想就这样牵着你的手不放开\n") * 30, encoding="utf-8")
    prefix = "```` # heading <img src=x onerror=alert(1)>"
    config = charlm.load_config(
        REPO / "configs" / "tiny.yaml",
        [
            f"data.corpus={corpus}",
            "train.device=cpu",
            "sample.preview_every=0",
            "train.epochs=1",
            f"sample.prefixes={json.dumps([prefix, 'a'])}",
        ],
    )
    run_dir = Path(charlm.train(config, tmp_path / "run`s | x").run_dir)
    out = tmp_path / "model <i>`x`</i>"
    assert main(["export", "--run-dir", str(run_dir), "--out", str(out)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    tokens = MD.parse(card)
    kinds = [t.type for t in tokens] + [c.type for t in tokens if t.children for c in t.children]
    assert "html_block" not in kinds and "html_inline" not in kinds and "image" not in kinds
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert len(headings) == 4 and headings[1:] == ["Use it", "How it was made", "A sample"]
    fences = [t for t in tokens if t.type == "fence"]
    assert [f.info for f in fences] == ["bash", "python", "yaml", "text"]
    model = charlm.load(out)
    assert fences[3].content == model.generate(prefix, length=300, temperature=0.8, seed=1) + "\n"
    assert f"charlm.load({str(out)!r})" in fences[1].content and repr(prefix) in fences[1].content
    rendered = MD.render(card)
    table = rendered.split("<table>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    assert all(row.count("<td>") + row.count("<th>") == 2 for row in rows), rows
    codes = [html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", table, re.S)]
    assert str(corpus) in codes and str(run_dir) in codes
    bash = subprocess.run(
        [
            "bash",
            "-c",
            "f() { printf '%s\\n' \"$@\"; }; " + fences[0].content.splitlines()[0].replace("charlm generate", "f", 1),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert bash.stdout.splitlines()[:4] == ["--model", str(out), "--prefix", prefix]  # the command works as shown
