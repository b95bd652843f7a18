"""The gradient statistics of the rms method: each weight's root mean square gradient over the training split,
measured once per checkpoint and kept in the run folder (a model folder is read-only: measured in memory).

The gradients are those of the mean loss of windows of the run's eval batch (eval_batch_size streams of
num_steps characters, the hidden state carried), over at most STATS_CHARS characters read evenly from the
whole split. The file names the weights it belongs to (a hash), so a newer best.pt is measured again.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from charlm.evaluate import Streams
from charlm.files import fsio, readback, tensorfile
from charlm.model import detach_hidden

STATS_CHARS = 1_000_000  # enough windows for a stable mean (~500 of 32 x 64); PTB-char's 5 M would take minutes
FORMAT = "charlm-dynamic-stats"


def stats_name(which: str) -> str:
    return f"dynamic-stats-{which}.safetensors"


def weights_hash(model: torch.nn.Module) -> str:
    """Names the weights a stats or tuning file belongs to (not a security check: a changed file is measured again)."""
    digest = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def gradient_rms(
    model, ids: torch.Tensor, *, batch_size: int, num_steps: int, device: torch.device, max_chars: int = STATS_CHARS
) -> dict[str, torch.Tensor]:
    """Each trainable parameter's root mean square gradient over windows of `ids` (the training split)."""
    layout = Streams.of(len(ids), batch_size, max_chars)
    inputs, targets = layout.rows(ids, 0, device), layout.rows(ids, 1, device)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    squares = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in named}
    was_training, windows, hidden = model.training, 0, None
    model.eval()
    for start in range(0, layout.length, num_steps):
        logits, hidden = model(inputs[:, start : start + num_steps], hidden)
        y = targets[:, start : start + num_steps].T.reshape(-1).long()
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y).backward()
        for name, p in named:
            squares[name] += p.grad.float() ** 2
            p.grad = None
        windows, hidden = windows + 1, detach_hidden(hidden)
    model.train(was_training)
    return {name: (s / windows).sqrt().cpu() for name, s in squares.items()}


def read_cached(path: Path, weights: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor] | None:
    """The cached statistics when the file is charlm's, for these weights and parameters (name -> shape), and
    finite; else None (they are measured again). The header is judged first: a file of other shapes, or larger
    than the model's statistics are, is never read (tensorfile)."""

    def check(header: tensorfile.Header) -> None:
        meta = header.metadata
        if meta.get("format") != FORMAT or meta.get("weights") != weights:
            raise readback.BadFile("not the statistics of these weights")
        problem = tensorfile.refuse_unexpected(header, shapes, ("F32",))
        if problem is not None:
            raise readback.BadFile(problem)

    most = 4 * sum(math.prod(shape) for shape in shapes.values()) + tensorfile.MAX_HEADER
    try:
        data, _ = tensorfile.read(path, check, max_bytes=most)
        tensors = load_safetensors(data)
    except (readback.BadFile, OSError, SafetensorError):
        return None
    if not all(bool(torch.isfinite(t).all()) and bool((t >= 0).all()) for t in tensors.values()):
        return None
    return tensors


def write_cached(path: Path, stats: dict[str, torch.Tensor], weights: str, chars: int) -> None:
    meta = {"format": FORMAT, "weights": weights, "chars": str(chars)}
    fsio.atomic_write_bytes(path, save_safetensors({k: v.contiguous() for k, v in stats.items()}, metadata=meta))
