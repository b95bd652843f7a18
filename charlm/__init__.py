"""charlm: character-level RNN/LSTM/GRU language models, from d2l's lyrics model to tuned recipes."""

__version__ = "1.0.0"
