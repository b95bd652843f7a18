"""The README.md of an exported model folder: what the model is, how good, how it was made, a sample."""

from __future__ import annotations

import math

from charlm.config import Config, dump_config
from charlm.data.vocab import Vocab
from charlm.generate import generate
from charlm.model import CharRNN
from charlm.rundir import RunDir

SAMPLE_LENGTH, SAMPLE_TEMPERATURE, SAMPLE_SEED = 300, 0.8, 1


def render_card(meta: dict, model: CharRNN, vocab: Vocab, config: Config, run: RunDir, out) -> str:
    """The model card, in Markdown; `meta` is the folder's config.json."""
    m, source = config.model, meta["checkpoint"]
    prefix = sample_prefix(config, vocab)
    sample = generate(model, vocab, prefix, SAMPLE_LENGTH, temperature=SAMPLE_TEMPERATURE, seed=SAMPLE_SEED)[0]
    shape = f"{m.kind} {m.num_layers}x{m.hidden_size}, " + (
        f"embedding {m.embed_size}{' tied to the output head' if m.tie_weights else ''}"
        if m.input == "embedding" else "one-hot input")
    which = f"--checkpoint {source['which']}"
    lines = [
        f"# {config.name}: a character-level language model made with charlm", "",
        f"{shape}; {meta['parameters']:,} parameters; a vocabulary of {len(vocab):,} characters.", "",
        "| | |", "|---|---|",
        f"| corpus | `{config.data.corpus}`, sha256 `{meta['corpus']['sha256']}` (of the normalised text) |",
        f"| checkpoint | {source['which']} of `{run.path}`: epoch {source['epoch']}, step {source['step']:,} |",
        *eval_rows(source["eval"]),
        *parent_rows(meta.get("init_from")),
        "", "## Use it", "", "```bash",
        f"charlm generate --model {out} --prefix {quote(prefix)} --length 200",
        f"charlm perplexity --model {out} --file some.txt", "```", "", "```python", "import charlm", "",
        f"model = charlm.load({str(out)!r})",
        f"print(model.generate({prefix!r}, length=200, temperature=0.8))", "```", "",
        "## How it was made", "",
        f"`charlm train --config config.yaml{init_flag(meta.get('init_from'))}` with this config (the run's, "
        f"resolved), then `charlm export --run-dir {run.path} --out {out} {which}`:", "",
        "```yaml", dump_config(config).rstrip("\n"), "```", "",
        "## A sample", "",
        f"`charlm generate --model {out} --prefix {quote(prefix)} --length {SAMPLE_LENGTH} "
        f"--temperature {SAMPLE_TEMPERATURE} --seed {SAMPLE_SEED}`:", "",
        "````text", sample, "````", "",
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
    return [f"| fine-tuned from | `{parent['path']}` ({parent['checkpoint']}; corpus `{parent['corpus']}`, "
            f"sha256 `{parent['corpus_sha256'][:16]}…`{loss}) |"]


def init_flag(parent: dict | None) -> str:
    if not parent:
        return ""
    suffix = ":last" if parent["checkpoint"] == "last" else ""
    return f" --init-from {parent['path']}{suffix}"


def sample_prefix(config: Config, vocab: Vocab) -> str:
    """The run's first preview prefix the vocabulary can write, else its first letter."""
    for prefix in config.sample.prefixes:
        if not vocab.missing(prefix):
            return prefix
    return next((c for c in vocab.chars if c.isalpha()), vocab.chars[0])


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'" if any(c in text for c in " \n\"'$`\\;&|<>()") else text
