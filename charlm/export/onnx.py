"""`charlm export --onnx OUT`: the model's one-character step as an ONNX graph, for any program and language
that runs ONNX (onnxruntime in Python, C++, C#, Java, JavaScript in a browser).

    OUT/
        model.onnx   ids (batch,) int64, h (layers, batch, hidden) [, c for an LSTM]
                     -> logits (batch, vocab), h_out [, c_out]       the batch is any size
        vocab.json   the characters, in id order (as in a run folder; <eod> and <unk> are entries too)
        onnx.json    how to call it: kind, layers, hidden size, input and output names, each id's printed
                     text (<eod> as a line break) and the reserved ids, where it came from

The graph is the step `charlm generate` runs (generation/fast_step.py: the first layer's input projection a
table lookup, each layer one product and the gate arithmetic), traced with the plain fp32 product: a
sampler feeds it one character at a time and carries the state, starting from zeros (docs: a 15-line loop).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from charlm import __version__
from charlm.errors import RunError, UsageError
from charlm.files import fsio
from charlm.files.interrupts import raising
from charlm.generation.fast_step import FastStep
from charlm.generation.text_form import plain_chars
from charlm.runtime.kernels import FixedKernel
from charlm.store.model_dir import load_model
from charlm.store.targets import check_output_folder

GRAPH, VOCAB, FACTS = "model.onnx", "vocab.json", "onnx.json"
FORMAT = "charlm-onnx-step"
OPSET = 18
EXTRA = "pip install 'charlm[onnx]'"


class StepGraph(torch.nn.Module):
    """The FastStep of a model as a module torch.onnx can trace: the state in and out as separate tensors."""

    def __init__(self, model):
        super().__init__()
        self.lstm = model.kind == "lstm"
        with torch.no_grad():
            self.step = FastStep(model, "fp32", rows=1, kernels=FixedKernel("dense"))

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        logits, state = self.step(ids, (h, c) if self.lstm else h)
        return (logits, *state) if self.lstm else (logits, state)


def names(lstm: bool) -> tuple[list[str], list[str]]:
    """The graph's input and output names."""
    return (["ids", "h", "c"], ["logits", "h_out", "c_out"]) if lstm else (["ids", "h"], ["logits", "h_out"])


def export_onnx(path: Path | str | None, out: Path | str, which: str = "best") -> Path:
    """Write the ONNX folder `out` from a run folder or model folder `path` (default: the latest run); the
    folder appears whole or not at all, and an existing one is refused before anything is read."""
    out = check_output_folder(out, option="--onnx")
    _check_exporter()
    with raising(str(out)):  # from the first read on: a stop signal anywhere is one line, and nothing is written
        model, vocab, saved = load_model(path, which)
        graph = StepGraph(model.float().eval())
        try:
            with fsio.atomic_folder(out, exclusive=True) as tmp:
                _trace(graph, model, tmp / GRAPH)
                (tmp / VOCAB).write_text(vocab.to_json(), encoding="utf-8")
                facts = _facts(model, vocab, source=str(path) if path is not None else "latest run", which=which)
                facts["epoch"] = saved.train_state.epoch
                (tmp / FACTS).write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
        except FileExistsError:
            raise UsageError(
                f"{out} appeared while exporting: choose a new --onnx (an export never overwrites)"
            ) from None
        except OSError as e:
            raise RunError(
                f"cannot write {out} ({e.strerror or e}): free disk space or choose a writable --onnx"
            ) from None
    return out


def _trace(graph: StepGraph, model, target: Path) -> None:
    inputs, outputs = names(graph.lstm)
    zeros = torch.zeros(model.num_layers, 2, model.hidden_size)
    args = (torch.zeros(2, dtype=torch.long), zeros, zeros.clone())[: len(inputs)]
    batch = torch.export.Dim("batch")
    shapes = ({0: batch},) + ({1: batch},) * (len(inputs) - 1)
    # the exporter prints its progress and warns about optional packages (torchvision): none of it is the user's
    quiet_loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in quiet_loggers]
    try:
        for logger in quiet_loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=inputs,
                output_names=outputs,
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        for logger, level in zip(quiet_loggers, levels, strict=True):
            logger.setLevel(level)
    program.save(str(target))


def _facts(model, vocab, *, source: str, which: str) -> dict:
    """onnx.json. vocab.json lists every id's entry, the reserved <eod> and <unk> among them (the ids a prefix is
    read in); `printed` is each id's text as `charlm generate` writes it (<eod>, a document's end, as a line
    break), so that a sampler never writes a symbol's name into its text; `eod` and `unk` name their ids."""
    inputs, outputs = names(model.kind == "lstm")
    return {
        "format": FORMAT,
        "charlm": __version__,
        "opset": OPSET,
        "kind": model.kind,
        "num_layers": model.num_layers,
        "hidden_size": model.hidden_size,
        "vocab_size": len(vocab),
        "eod": vocab.eod,
        "unk": vocab.unk,
        "printed": plain_chars(vocab),
        "inputs": inputs,
        "outputs": outputs,
        "state_shape": ["num_layers", "batch", "hidden_size"],
        "from": {"path": source, "checkpoint": which},
    }


def _check_exporter() -> None:
    """torch.onnx's exporter needs the onnx and onnxscript packages, which charlm does not install by default."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"export --onnx needs {' and '.join(missing)}, which are not installed: {EXTRA}")
