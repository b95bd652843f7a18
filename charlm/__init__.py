"""charlm: character-level RNN/LSTM/GRU language models, from d2l's lyrics model to tuned recipes.

The Python API (docs/export.md, "From Python"): `load(path)` gives a `Model` (generate, samples, stream,
perplexity) from a run folder or an exported model folder; `train(config)`, `load_config(path, overrides)`,
`export_model(run_dir, out)`. `import charlm` does not import torch: the functions load it when called.
"""

from charlm.api import Model, export_model, load, load_config, train

__version__ = "1.0.0"  # the one definition: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = ["Model", "__version__", "export_model", "load", "load_config", "train"]
