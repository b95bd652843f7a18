"""Small builders shared by tests."""

from __future__ import annotations

from charlm.config import ModelConfig
from charlm.model import CharRNN


def make_rnn(vocab_size: int, kind: str = "lstm", hidden_size: int = 256, num_layers: int = 1, dropout: float = 0.0,
             input: str = "onehot", embed_size: int = 256, tie_weights: bool = False, **rest) -> CharRNN:
    """A CharRNN from keyword settings, with plain defaults for tests (one-hot, no dropout, untied) rather
    than ModelConfig's recipe defaults; `rest`: any other ModelConfig field."""
    cfg = ModelConfig(kind=kind, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, input=input,
                      embed_size=embed_size, tie_weights=tie_weights, **rest)
    return CharRNN(cfg, vocab_size)
