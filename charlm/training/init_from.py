"""Fine-tuning (`charlm train --init-from PARENT`): a new run whose weights come from another model.

    PARENT = a run folder (its best.pt; RUN:last for last.pt) or an exported model folder
        ─► the parent's Checkpoint (model_dir.load_checkpoint)
        ─► the config: --config, or the parent's own; --corpus / --set on top; the model's shape must be the parent's
        ─► the corpus, encoded with the parent's vocabulary extended by the new corpus's new characters
        ─► the weights: model.grow_vocab (old ids keep their rows; new rows barely move the old predictions)
        ─► metrics.jsonl's first line: {"event": "init_from", ...}, which `charlm info` and `charlm runs` show

Everything else is a new run's: a fresh optimizer and schedule, the usual run folder, and a resume
that is any run's resume (the run's own vocabulary is in its checkpoints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from charlm.config import Config, ModelConfig, from_dict, load_config, parse_override, set_dotted
from charlm.data.vocab import Vocab
from charlm.errors import UsageError
from charlm.model import CharRNN, grow_vocab, match_layout
from charlm.store.layout import CHECKPOINTS

if TYPE_CHECKING:  # checkpoint.py imports the training package: no import cycle at run time
    from charlm.store.checkpoint import Checkpoint

# what fixes the parameters' shapes; regularisers (dropout, weight drop) may change when fine-tuning
SHAPE_KEYS = ("kind", "input", "embed_size", "hidden_size", "num_layers", "tie_weights")
WITH_RESUME = "--init-from starts a new run from another model's weights and --resume continues a run: use one of them"


@dataclass
class Parent:
    """The model a fine-tuned run starts from."""

    path: Path
    which: str  # best | last (a model folder holds one checkpoint: best)
    source: str  # run | model
    checkpoint: Checkpoint

    @property
    def vocab(self) -> Vocab:
        return Vocab.in_order(self.checkpoint.vocab)

    def load_weights(self, model: CharRNN) -> None:
        """The parent's weights into `model`, whose vocabulary is the parent's plus the new characters."""
        state = grow_vocab(
            self.checkpoint.model, self.checkpoint.model_config, len(self.checkpoint.vocab), model.vocab_size
        )
        model.load_state_dict(match_layout(state, model.per_layer))

    def record(self, vocab: Vocab) -> dict:
        """metrics.jsonl's first line: where the weights came from (no epoch/step keys: those are the run's)."""
        state, saved = self.checkpoint.train_state, self.checkpoint
        best = state.best_loss if "val_loss" in state.last_record and math.isfinite(state.best_loss) else None
        return {
            "event": "init_from",
            "path": str(self.path),
            "checkpoint": self.which,
            "source": self.source,
            "corpus": saved.config.data.corpus,
            "corpus_sha256": saved.corpus_sha256,
            "best_val_loss": best,
            "parent_epoch": state.epoch,
            "parent_vocab_size": len(saved.vocab),
            "new_chars": "".join(vocab.chars[len(saved.vocab) :]),
        }


def parse_spec(spec: str | Path) -> tuple[Path, str]:
    """PATH, PATH:best or PATH:last."""
    text = str(spec)
    for which in CHECKPOINTS:
        if text.endswith(f":{which}"):
            return Path(text[: -len(which) - 1]), which
    return Path(text), "best"


def load_parent(spec: str | Path) -> Parent:
    from charlm.store.model_dir import is_model_dir, load_checkpoint

    path, which = parse_spec(spec)
    if not path.is_dir():
        raise UsageError(
            f"--init-from {spec}: folder {path} not found; pass a run folder (RUN or RUN:last) or a "
            "model folder made by charlm export"
        )
    source = "model" if is_model_dir(path) else "run"
    saved = load_checkpoint(path, which, use_other=lambda other: f"--init-from {path}:{other}")
    return Parent(path, which, source, saved)


def init_config(parent: Parent, config_path: Path | None, overrides: list[str]) -> Config:
    """The config of a fine-tuned run: --config as given, else the parent's own named NAME-ft; --set (and
    --corpus) on top."""
    if config_path is not None:
        return load_config(config_path, overrides)
    raw = parent.checkpoint.config.to_dict()
    raw["name"] = f"{raw['name']}-ft"  # its run folders are not the parent's experiment (--set name=... wins)
    for item in overrides:
        set_dotted(raw, *parse_override(item))
    return from_dict(raw)


def check_shape(parent: Parent, cfg: ModelConfig) -> None:
    """The model's shape comes from the parent: a config asking for another is refused, naming the keys."""
    old = parent.checkpoint.model_config
    keys = [
        k
        for k in SHAPE_KEYS
        if getattr(old, k) != getattr(cfg, k) and not (k == "embed_size" and cfg.input == old.input == "onehot")
    ]
    if keys:
        shown = ", ".join(f"model.{k} ({getattr(old, k)!r} in the parent, {getattr(cfg, k)!r} here)" for k in keys)
        raise UsageError(
            f"--init-from {parent.path}: the model's shape comes from the parent, but the config asks "
            f"for another {shown}; drop these keys from the config or set them to the parent's values"
        )
