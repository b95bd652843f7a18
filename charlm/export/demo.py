"""`charlm export --html`: one self-contained HTML page that runs a trained model in the browser.

The page is the template demo.html with two things put in: the model as JSON (architecture, vocabulary,
model card, and every weight in one base64 blob of little-endian float16 or float32 numbers) and
demo.js, a hand-written JavaScript step of each model kind with the sampling (and, for a model with the end
symbol <eod>, an items mode: whole items, one per line). No network access, no external script, no build
step. tests/test_export_demo.py runs demo.js in node against the Python model, and the page in Chromium.
"""

from __future__ import annotations

import base64
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from charlm.data import Vocab
from charlm.data.builtins import BUILTINS
from charlm.errors import UsageError
from charlm.generation.sampling import start_text
from charlm.store.checkpoint import Checkpoint, load_run_model
from charlm.store.run_dir import RunDir
from charlm.store.targets import check_output_file, write_output_file
from charlm.ui.pages import embed_json

FORMAT, VERSION = "charlm-demo", 1
PRECISIONS = {"float16": torch.float16, "float32": torch.float32}
FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Page:
    html: str
    weights: int  # numbers stored (a tied matrix once)
    weight_bytes: int

    @property
    def size(self) -> int:
        return len(self.html.encode("utf-8"))


def weight_tensors(model) -> dict[str, torch.Tensor]:
    """What the page needs, under the names demo.js reads, in either layer layout (fused or per layer)."""
    tensors = {}
    if model.embedding is not None:
        tensors["embedding"] = model.embedding.weight
    for k in range(model.num_layers):
        for name, tensor in zip(("w_ih", "w_hh", "b_ih", "b_hh"), model.layer_weights(k), strict=True):
            tensors[f"layer{k}.{name}"] = tensor
    if not model.config.tie_weights:  # tied: the head is the embedding, stored once
        tensors["head.w"] = model.head.weight
    tensors["head.b"] = model.head.bias
    return tensors


def encode_weights(tensors: dict[str, torch.Tensor], precision: str) -> tuple[dict, bytes]:
    """{name: [offset, rows, cols]} in numbers, and all of them as little-endian bytes."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not valid: use float16 (half the size) or float32 (exact)")
    index, parts, offset = {}, [], 0
    for name, tensor in tensors.items():
        values = tensor.detach().float().cpu()
        if precision == "float16" and bool(values.abs().max() > FLOAT16_MAX):
            raise UsageError(
                f"{name} has weights beyond float16's range (±{FLOAT16_MAX:g}): export with --precision float32"
            )
        rows, cols = values.shape if values.dim() == 2 else (1, values.numel())
        index[name] = [offset, rows, cols]
        offset += values.numel()
        parts.append(values.flatten())
    numbers = torch.cat(parts).to(PRECISIONS[precision])
    raw = numbers.view(torch.uint8).view(numbers.numel(), -1)
    if sys.byteorder == "big":
        raw = raw.flip(1)
    return index, bytes(raw.flatten().tolist())


def model_card(checkpoint: Checkpoint, parameters: int, which: str) -> dict:
    """What the page shows about the model: name, corpus, shape, size, checkpoint and its loss."""
    config, shape = checkpoint.config, checkpoint.model_config
    corpus = config.data.corpus if config.data.corpus in BUILTINS else Path(config.data.corpus).name
    inputs = "one-hot input" if shape.input == "onehot" else f"embedding {shape.embed_size}"
    tied = ", tied" if shape.tie_weights else ""
    record = checkpoint.train_state.last_record
    split = "val" if "val_loss" in record else "train"
    loss = record.get(f"{split}_loss")
    epochs = record.get("epochs_done", checkpoint.train_state.epoch)  # fractional for a run stopped by its budget
    vocab = Vocab(checkpoint.vocab)
    return {
        "name": config.name,
        "corpus": corpus,
        "model": f"{shape.kind} {shape.num_layers}x{shape.hidden_size}, {inputs}{tied}",
        "parameters": parameters,
        "checkpoint": f"{which}.pt, after {epochs:g} epochs",
        "loss_name": f"{split} loss",
        "loss": (
            f"{loss:.4f} nats/char ({loss / math.log(2):.3f} bits/char, perplexity {math.exp(loss):.2f})"
            if loss is not None
            else "not recorded"
        ),
        "prefix": next((p for p in config.sample.prefixes if p and not vocab.missing(p)), ""),
    }


def build_page(model, checkpoint: Checkpoint, which: str = "best", precision: str = "float16") -> Page:
    """The page for `model`, the model of `checkpoint` (its config, vocabulary and train state)."""
    vocab = Vocab(checkpoint.vocab)
    tensors = weight_tensors(model)
    index, raw = encode_weights(tensors, precision)
    shape = checkpoint.model_config
    spec = {
        "format": FORMAT,
        "version": VERSION,
        "kind": shape.kind,
        "input": shape.input,
        "num_layers": shape.num_layers,
        "hidden_size": shape.hidden_size,
        "tied": shape.tie_weights,
        "vocab": vocab.chars,
        "start": start_text(vocab),
        # a model trained on documents: its end symbol (the page's items mode), whether reading it zeroes the
        # state, and the text form a prefix is put in (as charlm generate does)
        "eod": vocab.eod,
        "reset": checkpoint.config.train.reset_state_at_documents,
        "lowercase": checkpoint.config.data.lowercase,
        "normalize": checkpoint.config.data.normalize,
        "precision": precision,
        "weight_bytes": len(raw),
        "card": model_card(checkpoint, model.num_parameters(), which),
        "tensors": index,
        "data": base64.b64encode(raw).decode("ascii"),
    }
    blob = embed_json(spec)  # no text from the model (a corpus name, a character) can close the script element
    package = resources.files("charlm.ui.pages")
    before, rest = package.joinpath("demo.html").read_text(encoding="utf-8").split("__CHARLM_MODEL__")
    middle, after = rest.split("__CHARLM_CODE__")
    code = package.joinpath("demo.js").read_text(encoding="utf-8")
    return Page(before + blob + middle + code + after, sum(t.numel() for t in tensors.values()), len(raw))


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not valid: use float16 (half the size) or float32 (exact)")


def export_html(run: RunDir, which: str, path: Path, *, precision: str = "float16", force: bool = False) -> Page:
    """Write the demo page of a run's checkpoint to `path` (atomically). The path is checked first
    (targets.check_output_file: never a file in a run or model folder, a user's file only with `force`)."""
    check_output_file(path, option="--html", force=force)
    check_precision(precision)
    model, _, checkpoint = load_run_model(run, which)
    page = build_page(model, checkpoint, which, precision)
    write_output_file(path, page.html.encode("utf-8"), option="--html", force=force)
    return page
