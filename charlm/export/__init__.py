"""A trained model made into files for others: the model folder, its card, the one-file browser demo."""
