"""The seed code's training and prediction loops, kept as the baseline the benchmark compares against.

A faithful port of d2l-zh's PyTorch chapter 6.5 (`train_and_predict_rnn_pytorch`, `data_iter_consecutive`,
`RNNModel`, `predict_rnn_pytorch`): a Python list corpus turned into a tensor every epoch, one-hot
inputs (F.one_hot), a `loss.item()` host sync per batch. One defect is fixed so that both loops compute
the same function: `grad_clipping` receives a list, so it really clips the global norm (the seed passed
a generator and clipped nothing). Not part of charlm.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn


def data_iter_consecutive(corpus_indices, batch_size, num_steps, device=None):
    corpus_indices = torch.tensor(corpus_indices, dtype=torch.float32, device=device)
    data_len = len(corpus_indices)
    batch_len = data_len // batch_size
    indices = corpus_indices[0 : batch_size * batch_len].view(batch_size, batch_len)
    epoch_size = (batch_len - 1) // num_steps
    for i in range(epoch_size):
        i = i * num_steps
        X = indices[:, i : i + num_steps]
        Y = indices[:, i + 1 : i + num_steps + 1]
        yield X, Y


class RNNModel(nn.Module):
    def __init__(self, rnn_layer, vocab_size):
        super().__init__()
        self.rnn = rnn_layer
        self.hidden_size = rnn_layer.hidden_size
        self.vocab_size = vocab_size
        self.dense = nn.Linear(self.hidden_size, vocab_size)

    def forward(self, inputs, state):
        X = F.one_hot(inputs.long().T, self.vocab_size).float()  # (num_steps, batch, vocab)
        Y, state = self.rnn(X, state)
        return self.dense(Y.view(-1, Y.shape[-1])), state


def grad_clipping(params, theta, device):
    norm = torch.tensor([0.0], device=device)
    for param in params:
        norm += (param.grad.data**2).sum()
    norm = norm.sqrt().item()
    if norm > theta:
        for param in params:
            param.grad.data *= theta / norm


def train_epochs(model, corpus_indices, num_epochs, num_steps, lr, clipping_theta, batch_size, device="cpu"):
    """d2l's loop; returns (mean loss per epoch, chars/s per epoch)."""
    loss = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.to(device)
    state = None
    epoch_losses, rates = [], []
    for _ in range(num_epochs):
        l_sum, n, started = 0.0, 0, time.perf_counter()
        for X, Y in data_iter_consecutive(corpus_indices, batch_size, num_steps, device):
            if state is not None:
                state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
            output, state = model(X, state)
            y = torch.transpose(Y, 0, 1).contiguous().view(-1)
            l = loss(output, y.long())  # noqa: E741 (the seed's name)
            optimizer.zero_grad()
            l.backward()
            grad_clipping(list(model.parameters()), clipping_theta, device)
            optimizer.step()
            l_sum += l.item() * y.shape[0]
            n += y.shape[0]
        epoch_losses.append(l_sum / n)
        rates.append(n / (time.perf_counter() - started))
    return epoch_losses, rates


def predict(prefix_ids, num_chars, model, device="cpu"):
    """d2l's predict_rnn_pytorch, greedy replaced by the same argmax: one char in, `.item()` out, per step."""
    state = None
    output = [prefix_ids[0]]
    for t in range(num_chars + len(prefix_ids) - 1):
        X = torch.tensor([output[-1]], device=device).view(1, 1)
        if state is not None:
            state = tuple(s.to(device) for s in state) if isinstance(state, tuple) else state.to(device)
        Y, state = model(X, state)
        if t < len(prefix_ids) - 1:
            output.append(prefix_ids[t + 1])
        else:
            output.append(int(Y.argmax(dim=1).item()))
    return output
