"""Version 1's generation step (charlm 0.x `generate.FastStep`), kept as the baseline that the compact
sampling weights of `charlm.generation.fast_step` are measured against: fp32 weights as contiguous (in, out) copies, one
addmm per projection, PyTorch's gate order. Not part of charlm.
"""

from __future__ import annotations

import torch


class FastStepV1:
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
        hs, cs = hidden if lstm else (hidden, None)
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
