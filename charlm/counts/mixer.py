"""The mix: the network's next-character distribution and the counts' (the training text's, and with dynamic
evaluation the text read so far), weighted per character by a small gate, as PAQ's mixers do.

    log P(c) = logsumexp_e( log w_e + log P_e(c) ),    w = softmax(0, z_1, ...),    z_e = W_e . x_e

x_e are the gate's inputs for count expert e, none of which depends on the character to come: the longest
order its counts matched (one-hot up to ORDERS), how often and how sharply that context was followed
(log(1 + n), log(1 + u), the commonest share), the network's entropy and the log-probability of its
favourite, and 1. The network's own logit is 0: a gate whose z are -inf gives the network's figures to the
last bit (tested). The gate's weights and each expert's smoothing (estimate.py) are fitted together on
held-out text, by Adam on the mixed loss: a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.counts.estimate import ORDERS, Evidence, target_probs

INPUTS = ORDERS + 2 + 3 + 2 + 1  # one-hot longest (-1 .. ORDERS), the counts' three, the network's two, bias
FIT_STEPS, FIT_LR = 100, 0.05


@dataclass
class Mixer:
    """What a run's mix is, saved in its mix file: per count expert (the training text's, then the text read
    so far's), the smoothing pairs (ORDERS + 1, 2) and the gate's weights (INPUTS,)."""

    vocab_size: int
    smoothing: list[torch.Tensor]
    gate: list[torch.Tensor]

    @classmethod
    def initial(cls, vocab_size: int, experts: int) -> Mixer:
        """Witten-Bell's smoothing and an even gate: where fitting starts."""
        smoothing = [torch.tensor([[0.0, -3.0]] * (ORDERS + 1), dtype=torch.float64) for _ in range(experts)]
        return cls(vocab_size, smoothing, [torch.zeros(INPUTS, dtype=torch.float64) for _ in range(experts)])

    @property
    def experts(self) -> int:
        return len(self.gate)

    def log_probs(self, network: torch.Tensor, lstm_features: torch.Tensor, evidence: list[Evidence]) -> torch.Tensor:
        """log P(the position's character) under the mix, float64: `network` the network's log-probabilities
        of it, `lstm_features` (positions, 2) its entropy and top log-probability, one Evidence per expert."""
        logs = [network.double()]
        z = [torch.zeros_like(logs[0])]
        for smoothing, gate, ev in zip(self.smoothing, self.gate, evidence, strict=True):
            logs.append(target_probs(ev, smoothing, self.vocab_size).log())
            z.append(gate_inputs(ev.features(), lstm_features) @ gate)
        weights = torch.log_softmax(torch.stack(z, 1), dim=1)
        return torch.logsumexp(weights + torch.stack(logs, 1), dim=1)

    def weights(self, count_features: list[torch.Tensor], lstm_features: torch.Tensor) -> torch.Tensor:
        """(positions, 1 + experts) the gate's weights, the network's first (for sampling)."""
        z = [torch.zeros(len(lstm_features), dtype=torch.float64)]
        z += [gate_inputs(f, lstm_features) @ g for f, g in zip(count_features, self.gate, strict=True)]
        return torch.softmax(torch.stack(z, 1), dim=1)

    def to_dict(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "smoothing": [s.tolist() for s in self.smoothing],
            "gate": [g.tolist() for g in self.gate],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Mixer:
        """A mixer as to_dict wrote it; ValueError (or TypeError, KeyError) names what does not fit."""
        smoothing = [torch.tensor(s, dtype=torch.float64) for s in data["smoothing"]]
        gate = [torch.tensor(g, dtype=torch.float64) for g in data["gate"]]
        if not 1 <= len(gate) == len(smoothing) <= 2 or not isinstance(data["vocab_size"], int):
            raise ValueError("one or two experts are expected")
        if any(s.shape != (ORDERS + 1, 2) for s in smoothing) or any(g.shape != (INPUTS,) for g in gate):
            raise ValueError("its arrays are not of the mixer's shapes")
        if not all(torch.isfinite(t).all() for t in smoothing + gate):
            raise ValueError("it holds a number that is not finite")
        return cls(data["vocab_size"], smoothing, gate)


def gate_inputs(count_features: torch.Tensor, lstm_features: torch.Tensor) -> torch.Tensor:
    """(positions, INPUTS): see the module's docstring."""
    longest = count_features[:, 0].long().clamp(-1, ORDERS) + 1
    one_hot = torch.nn.functional.one_hot(longest, ORDERS + 2).double()
    bias = torch.ones(len(longest), 1, dtype=torch.float64)
    return torch.cat([one_hot, count_features[:, 1:].double(), lstm_features.double(), bias], dim=1)


def fit(
    vocab_size: int, network: torch.Tensor, lstm_features: torch.Tensor, evidence: list[Evidence], *, seed: int = 0
) -> tuple[Mixer, float]:
    """The mixer that scores the held-out text best (its smoothing and gate, fitted together), and its loss
    in nats per character there."""
    torch.manual_seed(seed)
    mixer = Mixer.initial(vocab_size, len(evidence))
    params = mixer.smoothing + mixer.gate

    def loss() -> torch.Tensor:
        return -mixer.log_probs(network, lstm_features, evidence).mean()

    adam(params, loss, steps=FIT_STEPS, lr=FIT_LR)
    with torch.no_grad():
        return mixer, float(loss())


def adam(params: list[torch.Tensor], loss, *, steps: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """`steps` of Adam (Kingma and Ba's, as torch.optim.Adam's defaults) on `params` in place. Written out
    because torch.optim's first use in a process imports the compiler (2.7 s measured), longer than the fit
    of a small run's mix takes."""
    means = [torch.zeros_like(p) for p in params]
    squares = [torch.zeros_like(p) for p in params]
    for p in params:
        p.requires_grad_(True)
    for step in range(1, steps + 1):
        grads = torch.autograd.grad(loss(), params)
        with torch.no_grad():
            for p, g, m, v in zip(params, grads, means, squares, strict=True):
                m.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                v.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
    for p in params:
        p.requires_grad_(False)
