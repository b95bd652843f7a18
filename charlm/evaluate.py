"""Score text with a model: nats per character, bits per character and perplexity.

Protocol: the text is cut into `batch_size` contiguous streams that are read in windows of
`num_steps` with the hidden state carried through each whole stream. Every character after the first
of the text is a target once, except a tail shorter than `batch_size` characters; `chars` says how
many were scored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from charlm.errors import CorpusError


@torch.inference_mode()
def evaluate(model, ids: torch.Tensor, batch_size: int, num_steps: int, device: torch.device | str = "cpu") -> dict:
    n = len(ids)
    if n < 2:
        raise CorpusError(f"the text to score has {n} character(s): it needs at least 2")
    streams = min(batch_size, n - 1)
    length = (n - 1) // streams
    ids = ids.to(device)
    inputs = ids[: streams * length].view(streams, length)
    targets = ids[1: streams * length + 1].view(streams, length)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)  # summed on device: one sync at the end
    state = None
    for start in range(0, length, num_steps):
        logits, state = model(inputs[:, start:start + num_steps], state)
        y = targets[:, start:start + num_steps].T.reshape(-1).long()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y, reduction="sum").double()
    model.train(was_training)
    chars = streams * length
    nats = total.item() / chars
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "perplexity": math.exp(nats), "chars": chars}
