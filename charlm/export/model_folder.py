"""`charlm export --out`: a run's checkpoint written as a model folder (the layout: store/model_dir.py,
which also reads it back). The card (README.md) comes from model_card.py."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save as save_safetensors

from charlm.errors import RunError, UsageError
from charlm.export.model_card import render_card
from charlm.export.tokenizer import tokenizer_config, tokenizer_json
from charlm.files import fsio
from charlm.model import CharRNN
from charlm.store import checkpoint as ckpt
from charlm.store.checkpoint import Checkpoint
from charlm.store.model_dir import (
    CARD,
    CONFIG_JSON,
    FORMAT,
    TIED_KEY,
    TOKENIZER_CONFIG,
    TOKENIZER_JSON,
    VERSION,
    VOCAB_JSON,
    WEIGHTS,
)
from charlm.store.run_dir import RunDir
from charlm.store.targets import check_output_folder


def export_model(run_dir: Path | str | None, out: Path | str, which: str = "best") -> Path:
    """Write the model folder `out` from the checkpoint `which` of a run folder (default: the latest run).

    The folder appears whole or not at all (written beside it, then renamed); an existing one, or one inside
    a run or model folder, is refused (targets.check_output_folder) before anything is read. A stop signal
    removes the temp folder; one that SIGKILL left is removed by the next write beside it (fsio).
    """
    out = check_output_folder(out)
    run = RunDir.resolve(Path(run_dir) if run_dir is not None else None)
    model, vocab, saved = ckpt.load_run_model(run, which)
    meta = model_meta(saved, model, run.path, which)
    card = render_card(meta, model, vocab, config=saved.config, run=run, out=out)
    weights = {
        k: v.detach().cpu().clone().contiguous()
        for k, v in model.state_dict().items()
        if not (saved.model_config.tie_weights and k == TIED_KEY)
    }  # safetensors refuses shared tensors
    check_output_folder(out)  # again: the card took a while, and the folder may have appeared since
    try:
        with fsio.atomic_folder(out, exclusive=True) as tmp:
            (tmp / WEIGHTS).write_bytes(save_safetensors(weights, metadata={"format": FORMAT}))
            (tmp / CONFIG_JSON).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            (tmp / VOCAB_JSON).write_text(vocab.to_json(), encoding="utf-8")
            (tmp / TOKENIZER_JSON).write_text(tokenizer_json(vocab), encoding="utf-8")
            (tmp / TOKENIZER_CONFIG).write_text(tokenizer_config(vocab), encoding="utf-8")
            (tmp / CARD).write_text(card, encoding="utf-8")
    except OSError as e:
        if os.path.lexists(out):  # the rename met something that appeared there while the card was made
            raise UsageError(
                f"{out} appeared while exporting: choose a new --out (an export never overwrites a folder)"
            ) from None
        raise RunError(f"cannot write {out} ({e.strerror or e}): free disk space or choose a writable --out") from None
    return out


def model_meta(saved: Checkpoint, model: CharRNN, run_dir: Path, which: str) -> dict:
    """config.json: the model's config as data, and where the weights come from."""
    state = saved.train_state
    training = {k: v for k, v in saved.config.to_dict().items() if k != "model"}  # the model's config is "model"
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": asdict(saved.model_config),
        "vocab_size": len(saved.vocab),
        "parameters": model.num_parameters(),
        "training": training,
        "corpus": {"name": saved.config.data.corpus, "sha256": saved.corpus_sha256},
        "checkpoint": {
            "run_dir": str(run_dir),
            "which": which,
            "epoch": state.epoch,
            "step": state.step,
            "best_epoch": state.best_epoch,
            "best_loss": state.best_loss if math.isfinite(state.best_loss) else None,
            "eval": state.last_record,
        },
        "init_from": parent_record(run_dir),
    }


def parent_record(run_dir: Path) -> dict | None:
    """The run's {"event": "init_from"} line: where a fine-tuned run's weights came from."""
    return next((r for r in RunDir(run_dir).metrics.read() if r.get("event") == "init_from"), None)
