"""One generation step of a CharRNN as a few tensor ops per layer (`FastStep`), with its weight matrices
kept in fp32, bf16 or int8 (`charlm generate --weights`).

Generation is latency-bound: a single-step nn.LSTM call costs milliseconds of dispatch (and oneDNN
set-up on the CPU) for microseconds of math, and one sequence reads every weight once per character.
So the first layer's input projection becomes a table lookup (embedding or one-hot times W_ih, plus
the biases, computed once), and each layer is one matrix product for its hidden state followed by the
gate arithmetic. On the CPU an fp32 matrix is packed once for oneDNN or kept transposed for a plain addmm,
whichever this machine multiplies a few rows by faster (measured once: kernels.py); bf16 halves the bytes
read per character, int8 quarters them.
The hidden state and all gate arithmetic stay in fp32 in every mode.
"""

from __future__ import annotations

import functools

import torch

from charlm.errors import UsageError
from charlm.runtime.capability import onednn_bf16_matmul
from charlm.runtime.kernels import KernelTable

WEIGHTS = ("fp32", "bf16", "int8")
# The default keeps fp32: on trained models bf16 and int8 flip a near-tie within the first few dozen
# greedy characters, after which the texts part (docs/results.md, Generation: the benchmark's agreement rows)
DEFAULT_WEIGHTS = "fp32"
# a long prefix is read in windows of this many characters, the state carried: its logits, which are not
# needed, take a window's memory rather than the prefix's (16M characters x a 10,000-character vocabulary)
WARM_UP_WINDOW = 4096
LSTM_ORDER = (0, 1, 3, 2)  # PyTorch's gate blocks i, f, g, o -> i, f, o, g: one sigmoid over i, f, o


def _onednn() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def projection(
    weight: torch.Tensor, bias: torch.Tensor | None, *, weights: str, rows: int, kernels: KernelTable
) -> Projection:
    """A Projection in the mode `weights` asks for; fp32 on the CPU takes the kernel this machine runs fastest."""
    weight, bias = weight.detach(), bias.detach() if bias is not None else None
    onednn = weight.device.type == "cpu" and weight.dtype == torch.float32 and _onednn()
    if weights != "fp32" and not onednn:
        raise UsageError(f"--weights {weights} runs on the CPU with a float32 model: use --weights fp32 here")
    if weights == "bf16" and not onednn_bf16_matmul():  # an AVX2-only CPU: bf16 weights in a plain matmul
        return Projection(weight, bias, "bf16-dense", rows)
    if weights != "fp32":
        return Projection(weight, bias, weights, rows)
    if not onednn:
        return Projection(weight, bias, "dense", rows)
    mode = kernels.fp32(lambda kernel: Projection(weight, bias, kernel, rows), tuple(weight.shape), rows)
    return Projection(weight, bias, mode, rows)


class Projection:
    """x (n, in) -> x W^T + b (n, out) in fp32, with W (out, in) kept as `mode` says: dense (a plain addmm:
    fp32 on a GPU, or for a float64 model), onednn (fp32 packed for oneDNN), bf16 or int8."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str, rows: int):
        self.bias, self.mode = bias, mode
        if self.mode == "int8":  # one scale per output row: the row's largest |weight| maps to 127
            self.pad = -weight.shape[1] % 16  # the int8 kernel reads the inputs 16 at a time
            weight = torch.nn.functional.pad(weight, (0, self.pad))
            scale = weight.abs().amax(1).clamp(min=1e-30) / 127
            self.int8 = (weight / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
            self.scale = scale.bfloat16()
        elif self.mode in ("dense", "bf16-dense"):
            # (in, out): a few-row matmul streams it 2-3x faster than a view
            self.t = weight.t().contiguous().to(torch.bfloat16 if self.mode == "bf16-dense" else weight.dtype)
            self.bias = bias.to(self.t.dtype) if bias is not None and self.mode == "bf16-dense" else bias
        else:  # oneDNN's own layout, packed once; bf16 keeps its bias in bf16 (the output is rounded anyway)
            dtype = torch.bfloat16 if mode == "bf16" else torch.float32
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.to(dtype), rows)
            self.bias = bias.to(dtype) if bias is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "dense":
            return torch.addmm(self.bias, x, self.t) if self.bias is not None else x @ self.t
        if self.mode == "bf16-dense":
            x = x.bfloat16()
            return (torch.addmm(self.bias, x, self.t) if self.bias is not None else x @ self.t).float()
        if self.mode == "onednn":
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        if self.mode == "bf16":
            return torch.ops.mkldnn._linear_pointwise(x.bfloat16(), self.packed, self.bias, "none", [], "").float()
        x = torch.nn.functional.pad(x, (0, self.pad)) if self.pad else x
        out = torch._weight_int8pack_mm(x.bfloat16(), self.int8, self.scale).float()
        return out.add_(self.bias) if self.bias is not None else out


class FastStep:
    """One step of a CharRNN (in eval mode): ids (n,) and the hidden state -> logits (n, vocab), new state.

    Layer 0 looks its input projection up in a table; a higher layer of an LSTM or Elman RNN multiplies
    [input, hidden] by [W_ih | W_hh] in one product (a GRU keeps them apart: its reset gate scales W_hn h
    alone). `rows` is the number of sequences stepped together (oneDNN packs for it; any n works).
    """

    def __init__(self, model, weights: str = DEFAULT_WEIGHTS, rows: int = 1, kernels: KernelTable | None = None):
        if weights not in WEIGHTS:
            raise UsageError(f"--weights {weights} is not one of {', '.join(WEIGHTS)}")
        self.kind, self.num_layers, self.weights = model.kind, model.num_layers, weights
        lstm, gru = self.kind == "lstm", self.kind == "gru"
        project = functools.partial(projection, weights=weights, rows=rows, kernels=kernels or KernelTable())
        self.layers = []  # (input projection or None, recurrent projection, both in one when joined)
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (t.detach() for t in model.layer_weights(layer))
            if lstm:  # gates reordered so that one sigmoid covers i, f, o
                w_ih, w_hh, b_ih, b_hh = (_reorder(t, model.hidden_size) for t in (w_ih, w_hh, b_ih, b_hh))
            b_in = b_ih if gru else b_ih + b_hh  # a GRU's b_hn stays inside its reset gate
            if layer == 0:
                inputs = model.embedding.weight.detach() if model.embedding is not None else None
                self.table = (inputs @ w_ih.t() if inputs is not None else w_ih.t()) + b_in  # (vocab, gates)
                self.layers.append((None, project(w_hh, b_hh if gru else None)))
            elif gru:
                self.layers.append((project(w_ih, b_in), project(w_hh, b_hh)))
            else:
                self.layers.append((None, project(torch.cat([w_ih, w_hh], 1), b_in)))
        self.head = project(model.head.weight, model.head.bias)

    def __call__(self, ids: torch.Tensor, hidden):
        lstm, gru = self.kind == "lstm", self.kind == "gru"
        hs, cs = hidden if lstm else (hidden, None)
        new_h, new_c = [], []
        x = None
        for layer, (projection_in, projection_hh) in enumerate(self.layers):
            h = hs[layer]
            if gru:
                gx = self.table.index_select(0, ids) if layer == 0 else projection_in(x)
                xr, xz, xn = gx.chunk(3, 1)
                hr, hz, hn = projection_hh(h).chunk(3, 1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = n + z * (h - n)
            else:
                if layer == 0:
                    gates = projection_hh(h).add_(self.table.index_select(0, ids))
                else:
                    gates = projection_hh(torch.cat([x, h], 1))
                if lstm:
                    size = h.shape[1]
                    ifo, g = gates[:, : 3 * size].sigmoid(), gates[:, 3 * size :].tanh()
                    c = torch.addcmul(ifo[:, size : 2 * size] * cs[layer], ifo[:, :size], g)
                    h = ifo[:, 2 * size :] * c.tanh()
                    new_c.append(c)
                else:
                    h = gates.relu_() if self.kind == "rnn_relu" else gates.tanh_()
            new_h.append(h)
            x = h
        logits = self.head(x)
        hs = torch.stack(new_h)
        return logits, ((hs, torch.stack(new_c)) if lstm else hs)


def _reorder(t: torch.Tensor, size: int) -> torch.Tensor:
    blocks = t.split(size, 0)
    return torch.cat([blocks[k] for k in LSTM_ORDER])


def warm_up(model, context: torch.Tensor, weights: str = DEFAULT_WEIGHTS):
    """The hidden state after all of the context but its last character, and a FastStep. Every row of the
    context is the same text, so the model reads it once and each sample starts from a copy of that state
    (a 40,000-character prefix for 50 samples costs one sample's memory and time)."""
    step = FastStep(model, weights, rows=context.shape[0])
    return read_context(model, context), step


def read_context(model, context: torch.Tensor):
    """The hidden state (one row per row of `context`, all the same text) after all of the context but its
    last character, which the first step reads."""
    samples = context.shape[0]
    if context.shape[1] == 1:
        return model.begin_hidden(samples, context.device)
    hidden = None
    for start in range(0, context.shape[1] - 1, WARM_UP_WINDOW):  # windows: the logits of a window at a time
        _, hidden = model(context[:1, start : min(start + WARM_UP_WINDOW, context.shape[1] - 1)], hidden)
    if isinstance(hidden, tuple):
        return tuple(h.expand(-1, samples, -1).contiguous() for h in hidden)
    return hidden.expand(-1, samples, -1).contiguous()


def reset_rows(hidden, ids: torch.Tensor, reset: int | None):
    """The state with the rows about to read `reset` (<eod>) zeroed, as training with
    train.reset_state_at_documents zeroes them (model.forward's starts); unchanged when `reset` is None."""
    if reset is None:
        return hidden
    keep = (ids != reset).to(hidden[0].dtype)[None, :, None]  # (1, rows, 1): broadcast over layers, units
    return tuple(h * keep for h in hidden) if isinstance(hidden, tuple) else hidden * keep


@torch.inference_mode()
def greedy_agreement(model, context: torch.Tensor, length: int, weights: str) -> tuple[int, float]:
    """How `weights` follows fp32's greedy text after `context` (1, P): the characters written before the
    first difference, and the fraction of steps on fp32's greedy path where it picks the same argmax."""
    was_training = model.training
    model.eval()
    try:
        hidden, reference = warm_up(model, context)
        step = FastStep(model, weights)
        other, current = hidden, context[:, -1]
        agrees = []  # on the device: one host read at the end, not one per character
        for _ in range(length):
            logits, hidden = reference(current, hidden)
            other_logits, other = step(current, other)
            current = logits.argmax(-1)
            agrees.append(other_logits.argmax(-1) == current)
        if not agrees:
            return 0, 1.0
        agrees = torch.cat(agrees)
        differ = (~agrees).nonzero()
        return (int(differ[0]) if len(differ) else length), agrees.float().mean().item()
    finally:
        model.train(was_training)
