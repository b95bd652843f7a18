"""Looking inside a model: per-character surprisal, neurons against text features."""
