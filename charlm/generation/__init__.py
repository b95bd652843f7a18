"""Text out of a model: sampling options, the fast one-character step, beam search, per-step controls."""
