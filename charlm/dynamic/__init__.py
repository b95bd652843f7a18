"""Dynamic evaluation (Krause et al. 2018): a model that keeps learning from the text it scores, one gradient
step after each segment has been scored, so every character is still predicted before the model trained on it."""
