"""The README.md of an exported model folder: what the model is, how good, how it was made, a sample."""

from __future__ import annotations

import math
import re

from charlm.config import Config, dump_config
from charlm.data.vocab import Vocab
from charlm.generation.sampling import generate
from charlm.model import CharRNN
from charlm.store.run_dir import RunDir

SAMPLE_LENGTH, SAMPLE_TEMPERATURE, SAMPLE_SEED = 300, 0.8, 1
MARKDOWN_PUNCTUATION = set("\\`*_[](){}#+-!|~^")  # backslash-escaped in plain text; & < > become entities


def render_card(meta: dict, model: CharRNN, vocab: Vocab, *, config: Config, run: RunDir, out) -> str:
    """The model card, in Markdown; `meta` is the folder's config.json. Text that comes from the run (the name,
    paths, prefixes, the sample, the config) is escaped, put in code spans, or fenced: it can add no heading,
    HTML, table cell or code block of its own."""
    m, source = config.model, meta["checkpoint"]
    prefix = sample_prefix(config, vocab)
    sample = generate(model, vocab, prefix, SAMPLE_LENGTH, temperature=SAMPLE_TEMPERATURE, seed=SAMPLE_SEED)[0]
    shape = f"{m.kind} {m.num_layers}x{m.hidden_size}, " + (
        f"embedding {m.embed_size}{' tied to the output head' if m.tie_weights else ''}"
        if m.input == "embedding"
        else "one-hot input"
    )
    model_flag, run_flag = f"--model {quote(str(out))}", f"--run-dir {quote(str(run.path))}"
    generate_line = f"charlm generate {model_flag} --prefix {quote(prefix)}"
    train_line = f"charlm train --config config.yaml{init_flag(meta.get('init_from'))}"
    export_line = f"charlm export {run_flag} --out {quote(str(out))} --checkpoint {source['which']}"
    lines = [
        f"# {text(config.name)}: a character-level language model made with charlm",
        "",
        f"{shape}; {meta['parameters']:,} parameters; a vocabulary of {len(vocab):,} characters.",
        "",
        "| | |",
        "|---|---|",
        f"| corpus | {cell(config.data.corpus)}, sha256 {cell(meta['corpus']['sha256'])} (of the normalised text) |",
        f"| checkpoint | {source['which']} of {cell(run.path)}: epoch {source['epoch']}, step {source['step']:,} |",
        *eval_rows(source["eval"]),
        *parent_rows(meta.get("init_from")),
        "",
        "## Use it",
        "",
        fenced(f"{generate_line} --length 200\ncharlm perplexity {model_flag} --file some.txt", "bash"),
        "",
        fenced(
            f"import charlm\n\nmodel = charlm.load({str(out)!r})\n"
            f"print(model.generate({prefix!r}, length=200, temperature=0.8))",
            "python",
        ),
        "",
        "## How it was made",
        "",
        f"{code(train_line)} with this config (the run's, resolved), then {code(export_line)}:",
        "",
        fenced(dump_config(config).rstrip("\n"), "yaml"),
        "",
        "## A sample",
        "",
        code(f"{generate_line} --length {SAMPLE_LENGTH} --temperature {SAMPLE_TEMPERATURE} --seed {SAMPLE_SEED}") + ":",
        "",
        fenced(sample, "text"),
        "",
    ]
    return "\n".join(lines)


def eval_rows(record: dict) -> list[str]:
    """The checkpoint's eval: val loss (train loss for a run without a val split) in three units."""
    what = "val" if "val_loss" in record else "train"
    loss = record.get(f"{what}_loss")
    if loss is None:
        return []
    ppl = math.exp(loss) if loss < 700 else math.inf
    return [f"| {what} loss | {loss:.4f} nats/char · {loss / math.log(2):.4f} bits/char · perplexity {ppl:.3f} |"]


def parent_rows(parent: dict | None) -> list[str]:
    if not parent:
        return []
    best = parent.get("best_val_loss")
    loss = f", best val loss {best:.4f}" if best is not None else ""
    return [
        f"| fine-tuned from | {cell(parent['path'])} ({text(parent['checkpoint'])}; "
        f"corpus {cell(parent['corpus'])}, sha256 {cell(parent['corpus_sha256'][:16] + '…')}{loss}) |"
    ]


def init_flag(parent: dict | None) -> str:
    if not parent:
        return ""
    suffix = ":last" if parent["checkpoint"] == "last" else ""
    return f" --init-from {quote(parent['path'] + suffix)}"


def sample_prefix(config: Config, vocab: Vocab) -> str:
    """The run's first preview prefix the vocabulary can write, else its first letter."""
    for prefix in config.sample.prefixes:
        if not vocab.missing(prefix):
            return prefix
    return next((c for c in vocab.chars if c.isalpha()), vocab.chars[0])


def quote(text: str) -> str:
    """`text` as one shell word on one line: as is, in single quotes, or as $'...' with escapes when it holds
    a line break or another control character (bash, zsh)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "'": "\\'"}
        return (
            "$'"
            + "".join(named.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c) for c in text)
            + "'"
        )
    return "'" + text.replace("'", "'\\''") + "'" if any(c in text for c in " \"'$`\\;&|<>()*?[]{}~#!") else text


def text(value: object) -> str:
    """Plain text in a Markdown line: one line, and no character Markdown or HTML would read as markup."""
    line = " ".join(str(value).splitlines())
    escaped = "".join(f"\\{c}" if c in MARKDOWN_PUNCTUATION else c for c in line)
    return escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(value: object) -> str:
    """An inline code span that shows `value` literally: delimited by more backticks than it holds in a row."""
    content = " ".join(str(value).splitlines())
    ticks = "`" * (longest_run(content, "`") + 1)
    pad = " " if content[:1] == "`" or content[-1:] == "`" or (content[:1] == content[-1:] == " ") else ""
    return f"{ticks}{pad}{content}{pad}{ticks}"


def cell(value: object) -> str:
    """A table cell's code span: line breaks shown as \\n, a | escaped (GFM splits cells on it even in code)."""
    shown = str(value).replace("\r", "\\r").replace("\n", "\\n")
    return code(shown).replace("|", "\\|")


def fenced(content: str, info: str) -> str:
    """A fenced code block that `content` cannot close: its fence is longer than any run of backticks in it."""
    fence = "`" * max(3, longest_run(content, "`") + 1)
    return f"{fence}{info}\n{content}\n{fence}"


def longest_run(content: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", content)), default=0)
