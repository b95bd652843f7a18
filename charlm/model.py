"""CharRNN: a character-level recurrent language model (RNN, LSTM or GRU) with an output head."""

from __future__ import annotations

import math
import re
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # (layers, batch, hidden); an LSTM has (h, c)
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}  # the blocks stacked in each layer's weights
NEW_CHARS_MASS = 1e-3  # grow_vocab: the most probability the new characters can take before fine-tuning


class ElmanRecurrence(torch.autograd.Function):
    """h_t = act((h_{t-1} W_hh^T + b_hh) + xw_t) for all t, given the input projection xw = x W_ih^T + b_ih.

    The sums are grouped as in PyTorch's own CPU RNN kernel, so the result is the same to the last bit.
    Forward is one addmm, one add and one activation per step. Backward runs the steps in reverse for the
    gradient of the state only, then forms the W_hh gradient for all steps in one large matmul
    instead of one small one per step: that is where autograd over a per-step loop loses its time.
    """

    @staticmethod
    def forward(
        ctx, xw: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, relu: bool
    ) -> torch.Tensor:
        hs = torch.empty_like(xw)
        h, w_t = h0, w_hh.t()
        for t in range(xw.shape[0]):
            pre = torch.addmm(b_hh, h, w_t).add_(xw[t])
            h = pre.relu_() if relu else pre.tanh_()
            hs[t] = h
        ctx.relu = relu
        ctx.save_for_backward(hs, h0, w_hh)
        return hs

    @staticmethod
    def backward(ctx, grad_hs: torch.Tensor):
        hs, h0, w_hh = ctx.saved_tensors
        act_grad = (hs > 0).to(hs.dtype) if ctx.relu else 1 - hs * hs
        grad_pre = torch.empty_like(hs)
        dh = torch.zeros_like(h0)
        for t in range(hs.shape[0] - 1, -1, -1):
            torch.mul(grad_hs[t] + dh, act_grad[t], out=grad_pre[t])
            dh = grad_pre[t] @ w_hh
        h_prev = torch.cat([h0[None], hs[:-1]]).flatten(0, 1)
        grad_w = grad_pre.flatten(0, 1).t() @ h_prev
        return grad_pre, dh, grad_w, grad_pre.sum((0, 1)), None


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence, shared by every time step of a (time, batch, features) input.

    Ordinary dropout draws a new mask per step, which on a recurrent model mostly adds noise to the
    carried state; one mask per sequence (Gal & Ghahramani 2016, AWD-LSTM) regularises without that.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * mask


def _dropout(p: float, locked: bool) -> nn.Module:
    return LockedDropout(p) if locked else nn.Dropout(p)


class CharRNN(nn.Module):
    """ids (batch, num_steps) -> logits (num_steps, batch, vocab_size), carrying a hidden state.

    Time runs along the first dimension inside the model (as in d2l and cuDNN). With input=onehot and
    one layer this is exactly d2l's RNNModel: one_hot(X.T) -> nn.RNN -> Linear.

    Regularisers (all off in eval mode): dropout on the embedding output (dropout_embed), between layers
    (dropout_hidden) and before the head (dropout_output), each `dropout` unless given; locked_dropout
    uses one mask per sequence for all three; weight_drop is DropConnect on the recurrent weights W_hh.
    Locked dropout between layers and weight drop need the layers as separate modules (`self.rnn` is then
    a ModuleList of one-layer modules); otherwise `self.rnn` is one multi-layer nn.RNN/LSTM/GRU.

    `layer_by_layer` (train.deterministic) also keeps the layers apart when dropout falls between them, so
    that its masks are drawn by nn.Dropout from torch's generator, which a checkpoint saves: inside cuDNN's
    fused multi-layer RNN they come from a dropout state of cuDNN's own that no checkpoint holds, and a
    resumed GPU run would not be the same run. The weights are the same either way (same draws, same
    order); checkpoints hold the config's own layout (`separate_layers`), `match_layout` converts.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, *, layer_by_layer: bool = False):
        super().__init__()
        self.config, self.vocab_size = cfg, vocab_size
        kind, hidden_size, num_layers = cfg.kind, cfg.hidden_size, cfg.num_layers
        self.kind, self.input, self.hidden_size, self.num_layers = kind, cfg.input, hidden_size, num_layers
        self.weight_drop = cfg.weight_drop
        p_embed, p_hidden, p_output = (
            cfg.dropout if p is None else p for p in (cfg.dropout_embed, cfg.dropout_hidden, cfg.dropout_output)
        )
        # the order of construction is the order of the initial random draws: keep it
        self.embedding = nn.Embedding(vocab_size, cfg.embed_size) if cfg.input == "embedding" else None
        input_size = cfg.embed_size if self.embedding is not None else vocab_size
        if kind not in ("rnn_tanh", "rnn_relu", "lstm", "gru"):
            raise ValueError(f"unknown model kind {kind!r}")
        self.per_layer = separate_layers(cfg) or (layer_by_layer and num_layers > 1 and p_hidden > 0)
        if self.per_layer:
            sizes = [input_size] + [hidden_size] * (num_layers - 1)
            self.rnn = nn.ModuleList(_recurrent(kind, size, hidden_size, num_layers=1, dropout=0.0) for size in sizes)
            self.drop_hidden = _dropout(p_hidden, cfg.locked_dropout)
        else:
            # nn.RNN warns about dropout with one layer; its own dropout between layers is the plain kind
            self.rnn = _recurrent(
                kind, input_size, hidden_size, num_layers=num_layers, dropout=p_hidden if num_layers > 1 else 0.0
            )
        self.drop_embed = _dropout(p_embed, cfg.locked_dropout)
        self.drop = _dropout(p_output, cfg.locked_dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if cfg.tie_weights:
            if self.embedding is None or cfg.embed_size != hidden_size:
                raise ValueError("tie_weights needs input=embedding and embed_size == hidden_size")
            self.head.weight = self.embedding.weight
        # one-hot input times W_ih selects a column of W_ih: for the one-layer Elman RNN (d2l's model)
        # a gather plus ElmanRecurrence computes the same function without the (vocab x hidden) matmul
        self.gather_onehot = (
            self.embedding is None and kind in ("rnn_tanh", "rnn_relu") and num_layers == 1 and not self.per_layer
        )

    def forward(
        self, ids: torch.Tensor, hidden: Hidden | None = None, *, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, Hidden]:
        """`starts` (batch, num_steps) bool: where a row's state is zeroed before it reads that input (a
        document's start, train.reset_state_at_documents); None, the plain path, reads every window whole."""
        ids = ids.T.long()  # (num_steps, batch)
        if self.gather_onehot:
            rnn = self.rnn
            inputs = F.embedding(ids, rnn.weight_ih_l0.t()) + rnn.bias_ih_l0
        elif self.embedding is None:
            inputs = F.one_hot(ids, self.vocab_size).float()
        else:
            inputs = self.drop_embed(self.embedding(ids))
        if starts is None:
            outputs, hidden = self._recur(inputs, hidden)
        else:
            outputs, hidden = self._recur_with_resets(inputs, hidden, starts.T)
        return self.head(self.drop(outputs)), hidden

    def _recur(self, inputs: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        """The recurrent layers over (steps, batch, features) inputs (the input projection, for gather_onehot)."""
        if self.gather_onehot:
            rnn = self.rnn
            h0 = hidden[0] if hidden is not None else inputs.new_zeros(inputs.shape[1], self.hidden_size)
            outputs = ElmanRecurrence.apply(inputs, h0, rnn.weight_hh_l0, rnn.bias_hh_l0, self.kind == "rnn_relu")
            return outputs, outputs[-1:]
        if self.per_layer:
            return self._forward_layers(inputs, hidden)
        return self.rnn(inputs, hidden)

    def _recur_with_resets(
        self, inputs: torch.Tensor, hidden: Hidden | None, starts: torch.Tensor
    ) -> tuple[torch.Tensor, Hidden]:
        """The window read in pieces cut only at the steps where some row starts a document: before each
        piece the state is multiplied by a keep mask (0 for the rows that start there). One host sync finds
        the cuts; the pieces are whole tensor calls (cuDNN's fused layers stay in use between cuts)."""
        if hidden is None:
            hidden = self.begin_hidden(inputs.shape[1], inputs.device)
        steps = inputs.shape[0]
        cuts = [0, *(t for t in starts.any(1).nonzero().flatten().tolist() if t), steps]
        keep = (~starts).to(inputs.dtype)[:, None, :, None]  # (steps, 1, batch, 1): broadcast over layers, units
        pieces = []
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            hidden = tuple(h * keep[a] for h in hidden) if isinstance(hidden, tuple) else hidden * keep[a]
            out, hidden = self._recur(inputs[a:b], hidden)
            pieces.append(out)
        return torch.cat(pieces), hidden

    def _forward_layers(self, x: torch.Tensor, hidden: Hidden | None) -> tuple[torch.Tensor, Hidden]:
        if hidden is None:
            hidden = self.begin_hidden(x.shape[1], x.device)
        lstm = self.kind == "lstm"
        finals = []
        for k, layer in enumerate(self.rnn):
            layer_hidden = (hidden[0][k : k + 1], hidden[1][k : k + 1]) if lstm else hidden[k : k + 1]
            if k:
                x = self.drop_hidden(x)
            if self.training and self.weight_drop > 0:
                # DropConnect: a fresh mask on W_hh for each forward; the module's own parameter stays
                # whole, so the optimizer, the checkpoint and eval (which uses it as is) see the raw weight
                w_hh = F.dropout(layer.weight_hh_l0, self.weight_drop, training=True)
                with warnings.catch_warnings():  # cuDNN: the swapped weight is outside its flat buffer
                    warnings.filterwarnings("ignore", message=".*contiguous chunk of memory.*")
                    x, final = torch.func.functional_call(layer, {"weight_hh_l0": w_hh}, (x, layer_hidden))
            else:
                x, final = layer(x, layer_hidden)
            finals.append(final)
        if lstm:
            return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return x, torch.cat(finals)

    def layer_weights(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) of layer k, in either layout."""
        module, suffix = (self.rnn[k], "l0") if self.per_layer else (self.rnn, f"l{k}")
        return tuple(getattr(module, f"{name}_{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def begin_hidden(self, batch_size: int, device: torch.device | str = "cpu") -> Hidden:
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (zeros, zeros.clone()) if self.kind == "lstm" else zeros

    def num_parameters(self, embedding: bool = True) -> int:
        params = {id(p): p for p in self.parameters()}  # tied weights count once
        if not embedding and self.embedding is not None and not self.config.tie_weights:
            params.pop(id(self.embedding.weight))
        return sum(p.numel() for p in params.values())


def grow_vocab(state: dict, cfg: ModelConfig, old_size: int, new_size: int) -> dict:
    """A CharRNN state_dict for `new_size` characters from one for `old_size`: old ids keep their rows.

    A new character's rows (embedding, or its one-hot column of the first W_ih, and the head's; tied
    weights are one of them) are the mean of the old ones, and its head bias is the old mean plus
    log(NEW_CHARS_MASS * old / added). Its logit is then the mean of the old logits plus that offset at any
    hidden state, and since exp(mean) <= mean(exp), the new characters together get at most
    NEW_CHARS_MASS of the probability: predictions over the old ones barely move (at most
    log(1 + NEW_CHARS_MASS) nats) until fine-tuning teaches the new ones (Hewitt 2021, with a margin).
    """
    added = new_size - old_size
    if added < 0:
        raise ValueError(f"a vocabulary cannot shrink ({old_size} -> {new_size})")
    grown = dict(state)
    if added == 0:
        return grown

    def with_mean_rows(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.mean(0, keepdim=True).expand(added, *t.shape[1:])])

    if cfg.input == "embedding":
        grown["embedding.weight"] = with_mean_rows(state["embedding.weight"])
    else:  # one-hot input: each character is a column of the first layer's W_ih
        key = "rnn.0.weight_ih_l0" if "rnn.0.weight_ih_l0" in state else "rnn.weight_ih_l0"
        grown[key] = with_mean_rows(state[key].t()).t().contiguous()
    grown["head.weight"] = with_mean_rows(state["head.weight"])
    bias = state["head.bias"]
    offset = math.log(NEW_CHARS_MASS * old_size / added)
    grown["head.bias"] = torch.cat([bias, (bias.mean() + offset).expand(added)])
    return grown


def separate_layers(cfg: ModelConfig) -> bool:
    """Whether CharRNN(cfg) keeps one module per layer (weight drop, locked dropout between layers): the layout
    of its state_dict that checkpoints and exported models hold."""
    return cfg.weight_drop > 0 or (cfg.locked_dropout and cfg.num_layers > 1)


def match_layout(state: dict, per_layer: bool) -> dict:
    """`state` with its recurrent weights named for one layout: one multi-layer module (rnn.weight_ih_l1), or
    one module per layer (`per_layer`: rnn.1.weight_ih_l0). The tensors are the same in both."""
    matched = {}
    for key, value in state.items():
        apart, fused = re.fullmatch(r"rnn\.(\d+)\.(\w+)_l0", key), re.fullmatch(r"rnn\.(\w+)_l(\d+)", key)
        if apart or fused:
            layer, name = (apart[1], apart[2]) if apart else (fused[2], fused[1])
            key = f"rnn.{layer}.{name}_l0" if per_layer else f"rnn.{name}_l{layer}"
        matched[key] = value
    return matched


def _recurrent(kind: str, input_size: int, hidden_size: int, *, num_layers: int, dropout: float) -> nn.Module:
    if kind in ("rnn_tanh", "rnn_relu"):
        return nn.RNN(input_size, hidden_size, num_layers, nonlinearity=kind[4:], dropout=dropout)
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](input_size, hidden_size, num_layers, dropout=dropout)


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph at the batch boundary while keeping the values (truncated BPTT)."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def weight_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Each weight of CharRNN(cfg, vocab_size) by name (the saved layout, `separate_layers`), with its shape:
    counted, not built, so that a config (bounded by config.py) and the weights and memory it implies are judged
    in microseconds before anything is allocated (tests/test_model.py holds it to CharRNN's state_dict)."""
    if cfg.kind not in GATES:  # a checkpoint's model_args are not validated as a config is
        raise ValueError(f"unknown model kind {cfg.kind!r}")
    gates, h = GATES[cfg.kind] * cfg.hidden_size, cfg.hidden_size
    shapes = {"embedding.weight": (vocab_size, cfg.embed_size)} if cfg.input == "embedding" else {}
    size = cfg.embed_size if cfg.input == "embedding" else vocab_size
    for k in range(cfg.num_layers):
        name = (f"rnn.{k}.{{}}_l0" if separate_layers(cfg) else f"rnn.{{}}_l{k}").format
        shapes |= {name("weight_ih"): (gates, size), name("weight_hh"): (gates, h)}
        shapes |= {name("bias_ih"): (gates,), name("bias_hh"): (gates,)}
        size = h
    return shapes | {"head.weight": (vocab_size, h), "head.bias": (vocab_size,)}


def weight_bytes(cfg: ModelConfig, vocab_size: int) -> int:
    """The bytes of the model's fp32 weights (the head's counted apart even when tied: a state_dict has both)."""
    return 4 * sum(math.prod(shape) for shape in weight_shapes(cfg, vocab_size).values())


def first_nonfinite(weights: dict[str, torch.Tensor]) -> str | None:
    """The name of the first weight holding NaN or infinity (None: every number is finite). Such a model gives
    NaN for every text it reads: a run that diverged, or a file that was changed."""
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None
