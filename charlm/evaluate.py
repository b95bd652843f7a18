"""Score text with a model: nats per character, bits per character and perplexity.

Protocol: the text is cut into `batch_size` contiguous streams that are read in windows of
`num_steps` with the hidden state carried through each whole stream. Every character after the first
of the text is a target once, except a tail shorter than `batch_size` characters; `chars` says how
many were scored. With `max_chars` (a fast estimate during training) each stream is read only for its
first max_chars / batch_size characters: a sample spread evenly over the whole text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from charlm.errors import CorpusError, UsageError

if TYPE_CHECKING:
    from charlm.checkpoint import Checkpoint


def perplexity(nats: float) -> float:
    return math.exp(nats) if nats < 700 else math.inf  # exp overflows a float past ~709


@torch.inference_mode()
def evaluate(model, ids: torch.Tensor, batch_size: int, num_steps: int, device: torch.device | str = "cpu",
             max_chars: int | None = None, ranks=None) -> dict:
    """`ranks` (distributed.Ranks): score this process's share of the streams and add up all shares."""
    n = len(ids)
    if n < 2:
        raise CorpusError(f"the text to score has {n} character(s): it needs at least 2")
    device = torch.device(device)
    streams = min(batch_size, n - 1)
    length = (n - 1) // streams
    full_length = length
    if max_chars is not None:
        length = max(1, min(length, max_chars // streams))
    mine = ranks.share(streams) if ranks is not None and ranks.active else slice(None)
    inputs = ids[: streams * full_length].view(streams, full_length)[mine, :length].to(device)
    targets = ids[1: streams * full_length + 1].view(streams, full_length)[mine, :length].to(device)
    was_training = model.training
    model.eval()
    # summed on the device (one sync at the end); float64 where the device has it
    total = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    hidden = None
    for start in range(0, length if len(inputs) else 0, num_steps):
        logits, hidden = model(inputs[:, start:start + num_steps], hidden)
        y = targets[:, start:start + num_steps].T.reshape(-1).long()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y, reduction="sum").to(total.dtype)
    model.train(was_training)
    if ranks is not None:
        ranks.sum_(total)
    chars = streams * length
    nats = total.item() / chars
    protocol = "full" if length == full_length else f"first {length} chars of each of {streams} streams"
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "perplexity": perplexity(nats), "chars": chars,
            "protocol": protocol}


def score_run(run_dir: Path, which: str = "best", split: str | None = None, file: Path | None = None,
              device: torch.device | str = "cpu") -> tuple[dict, Checkpoint]:
    """Score a run's checkpoint (or an exported model folder's) on a split of its own corpus or on a text file.

    Returns (result, the checkpoint). The run's own normalisation (newlines, PTB spacing) is applied
    to a file, and a split is refused if the corpus changed since training.
    """
    from charlm.model_dir import load_model

    return score_model(*load_model(run_dir, which, device), split, file, device)


def score_model(model, vocab, checkpoint: Checkpoint, split: str | None = None, file: Path | None = None,
                device: torch.device | str = "cpu") -> tuple[dict, Checkpoint]:
    """score_run for a model already loaded (model, vocab and checkpoint as model_dir.load_model gives them)."""
    from charlm import data

    if split is not None and file is not None:
        raise UsageError("pass either --split or --file, not both")
    split = split or ("val" if file is None else None)
    if split is not None and split not in ("train", "val", "test"):
        raise UsageError(f"split {split!r} is not valid: use train, val or test")
    cfg = checkpoint.config
    if file is not None:
        ids = data.encode_file(file, vocab, cfg.data)
    else:
        corpus = data.load_corpus(cfg.data, vocab=vocab)  # the run's ids (a fine-tuned run's are its parent's)
        if corpus.sha256 != checkpoint.corpus_sha256:
            raise UsageError(f"corpus {cfg.data.corpus} changed since this run was trained: score it with --file")
        ids = corpus.split(split)
        if len(ids) < 2:
            raise UsageError(f"this run has no {split} split: choose another --split or pass --file")
    result = evaluate(model, ids, cfg.train.eval_batch_size, cfg.train.num_steps, device)
    return {**result, "source": str(file) if file is not None else f"{split} split"}, checkpoint
