"""Sample text from a model, starting from a prefix: greedy, temperature, top-k and top-p."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from charlm.data import Vocab
from charlm.errors import UsageError


def check_prefix(vocab: Vocab, prefix: str) -> list[int]:
    if not prefix:
        raise UsageError("the prefix is empty: pass at least one character, e.g. --prefix 分开")
    missing = vocab.missing(prefix)
    if missing:
        shown = " ".join(repr(c) for c in missing[:10])
        raise UsageError(f"the prefix has characters the model never saw: {shown}; "
                         "use characters of the training corpus")
    return vocab.encode(prefix)


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (n, vocab) -> next ids (n,). temperature 0 is greedy (argmax), as in d2l."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p: the first always stays
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def check_sampling(length: int, temperature: float, top_k: int, top_p: float, num_samples: int) -> None:
    for ok, message in [(length >= 0, "length must be >= 0"), (temperature >= 0, "temperature must be >= 0"),
                        (top_k >= 0, "top-k must be >= 0"), (0 < top_p <= 1, "top-p must be in (0, 1]"),
                        (num_samples >= 1, "num-samples must be >= 1")]:
        if not ok:
            raise UsageError(message)


def stream(model, vocab: Vocab, prefix: str, length: int, temperature: float = 0.0, top_k: int = 0,
           top_p: float = 1.0, num_samples: int = 1, seed: int | None = None,
           device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Yield the next ids (num_samples,) one step at a time, after warming up on the prefix.

    The arguments are checked here, before the first step, so a caller can rely on them being valid
    before it prints anything.
    """
    check_sampling(length, temperature, top_k, top_p, num_samples)
    ids = torch.tensor(check_prefix(vocab, prefix), device=device).repeat(num_samples, 1)
    generator = None
    if temperature > 0:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()  # fresh randomness without touching torch's global generator
        else:
            generator.manual_seed(seed)
    return _steps(model, ids, length, temperature, top_k, top_p, generator)


class FastStep:
    """One step of a CharRNN (in eval mode) as a few plain tensor ops per layer.

    Generation is latency-bound: a single-step nn.LSTM call costs milliseconds of dispatch (and oneDNN
    set-up on the CPU) for microseconds of math. Here the first layer's input projection becomes a
    table lookup (embedding or one-hot times W_ih, plus the biases, computed once), and each layer is
    one addmm for its hidden state followed by the gate arithmetic.
    """

    def __init__(self, model):
        self.kind, self.num_layers = model.kind, model.num_layers
        fold = self.kind != "gru"  # a GRU applies b_hn inside the reset gate, so it stays separate
        self.layers = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = model.layer_weights(layer)
            # (in, out) row-major copies: a one-row matmul streams them 2-3x faster than the transposed views
            self.layers.append((w_ih.t().contiguous(), b_ih + b_hh if fold else b_ih, w_hh.t().contiguous(), b_hh))
        w_ih0, b_in0 = self.layers[0][0], self.layers[0][1]
        inputs = model.embedding.weight if model.embedding is not None else None
        self.table = (inputs @ w_ih0 if inputs is not None else w_ih0) + b_in0  # (vocab, gates * hidden)
        self.head_w, self.head_b = model.head.weight.t().contiguous(), model.head.bias

    def __call__(self, ids: torch.Tensor, hidden):
        lstm = self.kind == "lstm"
        hs, cs = (hidden if lstm else (hidden, None))
        new_h, new_c = [], []
        x = None
        for layer, (w_ih, b_in, w_hh, b_hh) in enumerate(self.layers):
            gx = self.table.index_select(0, ids) if layer == 0 else torch.addmm(b_in, x, w_ih)
            h = hs[layer]
            if lstm:
                i, f, g, o = torch.addmm(gx, h, w_hh).chunk(4, 1)
                c = torch.sigmoid(f) * cs[layer] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            elif self.kind == "gru":
                gh = torch.addmm(b_hh, h, w_hh)
                xr, xz, xn = gx.chunk(3, 1)
                hr, hz, hn = gh.chunk(3, 1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = n + z * (h - n)
            else:
                pre = torch.addmm(gx, h, w_hh)
                h = pre.relu() if self.kind == "rnn_relu" else pre.tanh()
            new_h.append(h)
            x = h
        logits = torch.addmm(self.head_b, x, self.head_w)
        hs = torch.stack(new_h)
        return logits, ((hs, torch.stack(new_c)) if lstm else hs)


def _steps(model, ids, length, temperature, top_k, top_p, generator) -> Iterator[torch.Tensor]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # the prefix but its last character in one model call, which also gives the hidden state's layout
            if ids.shape[1] > 1:
                _, hidden = model(ids[:, :-1], None)
            else:
                hidden = model.begin_hidden(ids.shape[0], ids.device)
            step = FastStep(model)
            current = ids[:, -1]
            for _ in range(length):
                logits, hidden = step(current, hidden)
                current = sample_next(logits, temperature, top_k, top_p, generator)
                yield current
    finally:
        model.train(was_training)


def generate(model, vocab: Vocab, prefix: str, length: int, **options) -> list[str]:
    """The prefix followed by `length` sampled characters, for each of `num_samples` samples."""
    steps = list(stream(model, vocab, prefix, length, **options))
    num_samples = options.get("num_samples", 1)
    if not steps:
        return [prefix] * num_samples
    ids = torch.stack(steps, dim=1).tolist()  # one transfer for the whole sample
    return [prefix + vocab.decode(row) for row in ids]
