"""CharRNN: a character-level recurrent language model (RNN, LSTM or GRU) with an output head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class ElmanRecurrence(torch.autograd.Function):
    """h_t = act((h_{t-1} W_hh^T + b_hh) + xw_t) for all t, given the input projection xw = x W_ih^T + b_ih.

    The sums are grouped as in PyTorch's own CPU RNN kernel, so the result is the same to the last bit.
    Forward is one addmm, one add and one activation per step. Backward runs the steps in reverse for the
    gradient of the state only, then forms the W_hh gradient for all steps in one large matmul
    instead of one small one per step: that is where autograd over a per-step loop loses its time.
    """

    @staticmethod
    def forward(ctx, xw: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                relu: bool) -> torch.Tensor:
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


class CharRNN(nn.Module):
    """ids (batch, num_steps) -> logits (num_steps, batch, vocab_size), carrying a hidden state.

    Time runs along the first dimension inside the model (as in d2l and cuDNN). With input=onehot and
    one layer this is exactly d2l's RNNModel: one_hot(X.T) -> nn.RNN -> Linear.
    """

    def __init__(self, vocab_size: int, kind: str = "lstm", hidden_size: int = 256, num_layers: int = 1,
                 dropout: float = 0.0, input: str = "onehot", embed_size: int = 256, tie_weights: bool = False):
        super().__init__()
        self.vocab_size, self.kind, self.input = vocab_size, kind, input
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embedding = nn.Embedding(vocab_size, embed_size) if input == "embedding" else None
        input_size = embed_size if self.embedding is not None else vocab_size
        layer_dropout = dropout if num_layers > 1 else 0.0  # nn.RNN warns about dropout with one layer
        if kind in ("rnn_tanh", "rnn_relu"):
            self.rnn = nn.RNN(input_size, hidden_size, num_layers, nonlinearity=kind[4:], dropout=layer_dropout)
        elif kind == "lstm":
            self.rnn = nn.LSTM(input_size, hidden_size, num_layers, dropout=layer_dropout)
        elif kind == "gru":
            self.rnn = nn.GRU(input_size, hidden_size, num_layers, dropout=layer_dropout)
        else:
            raise ValueError(f"unknown model kind {kind!r}")
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if self.embedding is None or embed_size != hidden_size:
                raise ValueError("tie_weights needs input=embedding and embed_size == hidden_size")
            self.head.weight = self.embedding.weight
        # one-hot input times W_ih selects a column of W_ih: for the one-layer Elman RNN (d2l's model)
        # a gather plus ElmanRecurrence computes the same function without the (vocab x hidden) matmul
        self.gather_onehot = self.embedding is None and kind in ("rnn_tanh", "rnn_relu") and num_layers == 1
        self.args = dict(vocab_size=vocab_size, kind=kind, hidden_size=hidden_size, num_layers=num_layers,
                         dropout=dropout, input=input, embed_size=embed_size, tie_weights=tie_weights)

    @classmethod
    def from_config(cls, cfg: ModelConfig, vocab_size: int) -> CharRNN:
        return cls(vocab_size, cfg.kind, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.input,
                   cfg.embed_size, cfg.tie_weights)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        ids = ids.T.long()  # (num_steps, batch)
        if self.gather_onehot:
            rnn = self.rnn
            xw = F.embedding(ids, rnn.weight_ih_l0.t()) + rnn.bias_ih_l0
            h0 = state[0] if state is not None else xw.new_zeros(ids.shape[1], self.hidden_size)
            outputs = ElmanRecurrence.apply(xw, h0, rnn.weight_hh_l0, rnn.bias_hh_l0, self.kind == "rnn_relu")
            return self.head(self.drop(outputs)), outputs[-1:]
        if self.embedding is None:
            inputs = F.one_hot(ids, self.vocab_size).float()
        else:
            inputs = self.drop(self.embedding(ids))
        outputs, state = self.rnn(inputs, state)
        return self.head(self.drop(outputs)), state

    def begin_state(self, batch_size: int, device: torch.device | str = "cpu") -> State:
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=device)
        return (zeros, zeros.clone()) if self.kind == "lstm" else zeros

    def num_parameters(self, embedding: bool = True) -> int:
        params = {id(p): p for p in self.parameters()}  # tied weights count once
        if not embedding and self.embedding is not None and not self.args["tie_weights"]:
            params.pop(id(self.embedding.weight))
        return sum(p.numel() for p in params.values())


def detach_state(state: State | None) -> State | None:
    """Cut the graph at the batch boundary while keeping the values (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()
