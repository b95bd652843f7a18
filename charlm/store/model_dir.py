"""An exported model folder, and loading a model from it or from a run folder.

    MODEL_DIR/
        model.safetensors   the weights only (tied weights stored once: the head's are the embedding's)
        config.json         the model's config and vocabulary size, the training config, the corpus's
                            checksum, the checkpoint it came from and that checkpoint's eval
        vocab.json          the characters, in id order (as in a run folder)
        tokenizer.json      the same characters as a Hugging Face `tokenizers` tokenizer (export/tokenizer.py),
                            with tokenizer_config.json, for tools that count tokens that way; charlm reads neither
        README.md           the model card (model_card.py), for people

`export.model_folder.export_model` writes one from a run's checkpoint. `load_checkpoint` / `load_model`
read a run folder's checkpoint or a model folder into the same typed `Checkpoint` (a model folder's has no optimizer or
generators: it is for using, not resuming), so generate, perplexity and --init-from treat both alike.
Nothing here unpickles: safetensors and JSON only, every shape checked against config.json.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from charlm.config import ModelConfig, from_dict
from charlm.data.vocab import Vocab
from charlm.errors import CheckpointError, ConfigError, shown
from charlm.files import readback, tensorfile
from charlm.files.limits import check_memory
from charlm.files.tensorfile import DTYPE_BYTES
from charlm.model import CharRNN, first_nonfinite, weight_shapes
from charlm.store import checkpoint as ckpt
from charlm.store.checkpoint import Checkpoint
from charlm.store.layout import check_which
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState
from charlm.store.targets import MODEL_CONFIG, MODEL_FORMAT, MODEL_WEIGHTS

VERSION = 1
# targets.py, which must not import torch, recognises a model folder by these
FORMAT, WEIGHTS, CONFIG_JSON = MODEL_FORMAT, MODEL_WEIGHTS, MODEL_CONFIG
VOCAB_JSON, CARD = "vocab.json", "README.md"
TOKENIZER_JSON, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"
REQUIRED = (CONFIG_JSON, VOCAB_JSON, WEIGHTS)  # the card is for people: a folder without it still loads
TIED_KEY = "head.weight"  # with tie_weights it is embedding.weight, so it is not stored
MAX_CONFIG_JSON = 4 * readback.MIB  # charlm writes a few kB: the config, an eval record, a parent record
FLOAT_DTYPES = (
    "F32",
    "F16",
    "BF16",
)  # what the model computes in (charlm writes F32): integers or bools are not weights


def is_model_dir(path: Path | str | None) -> bool:
    """A folder holding config.json or model.safetensors (a run folder holds neither)."""
    return path is not None and any((Path(path) / name).exists() for name in (WEIGHTS, CONFIG_JSON))


def check_model_dir(path: Path) -> None:
    """For --model: the folder exists and looks like an export (what it lacks, load() says)."""
    if not Path(path).is_dir():
        raise CheckpointError(f"model folder {path} not found: pass a folder made by charlm export")
    if not is_model_dir(path):
        raise CheckpointError(
            f"{path} is not a model folder (it has no {CONFIG_JSON} or {WEIGHTS}): pass a folder "
            "made by charlm export, or a run folder with --run-dir"
        )


def resolve(path: Path | str | None) -> Path:
    """A model folder as given; a run folder as given, or the latest run when `path` is None."""
    return Path(path) if is_model_dir(path) else RunDir.resolve(Path(path) if path is not None else None).path


def load_checkpoint(path: Path | str | None, which: str = "best", use_other=None) -> Checkpoint:
    """The checkpoint `which` (best | last) of a run folder, or the one an exported model folder holds.
    `use_other(other)`: how the caller's flags ask for the other checkpoint of a run (checkpoint.of_run)."""
    check_which(which)
    if is_model_dir(path):
        if which != "best":
            raise CheckpointError(
                f"{path} is an exported model folder: it holds one checkpoint (--checkpoint applies to run folders)"
            )
        return load(Path(path))
    run = RunDir.resolve(Path(path) if path is not None else None)
    return ckpt.of_run(run, which, use_other=use_other) if use_other else ckpt.of_run(run, which)


def load_model(
    path: Path | str | None, which: str = "best", device: torch.device | str = "cpu"
) -> tuple[CharRNN, Vocab, Checkpoint]:
    """The model (eval mode, on `device`), vocabulary and checkpoint of a run folder or a model folder."""
    check_which(which)
    if is_model_dir(path):
        saved = load_checkpoint(path, which)
        return saved.build_model(device), Vocab.in_order(saved.vocab), saved  # shapes were checked by load()
    return ckpt.load_run_model(RunDir.resolve(Path(path) if path is not None else None), which, device)


# --- reading ---------------------------------------------------------------------------------------


def load(folder: Path) -> Checkpoint:
    """A model folder as a Checkpoint. A missing file, a config.json that disagrees with the weights, or
    weights of another model are refused in one line (CheckpointError, exit 2)."""
    folder = Path(folder)
    check_model_dir(folder)
    for name in REQUIRED:
        if not (folder / name).exists():  # one that is there but not a regular file, its reader refuses
            raise CheckpointError(
                f"model folder {folder} has no {name}: export the run again "
                f"(charlm export --run-dir RUN --out {folder})"
            )
    meta = _read_meta(folder / CONFIG_JSON)
    try:
        config = from_dict({**meta["training"], "model": meta["model"]})
        vocab_size, corpus_sha256 = _count(meta["vocab_size"], 1), meta["corpus"]["sha256"]
        source = meta["checkpoint"]
        best_loss = source["best_loss"] if source["best_loss"] is not None else math.inf
        if not isinstance(corpus_sha256, str) or not isinstance(source["eval"], dict):
            raise TypeError("corpus.sha256 must be text and checkpoint.eval an object")
        if not (best_loss == math.inf or readback.finite_number(best_loss) and best_loss >= 0):
            raise ValueError(f"checkpoint.best_loss {best_loss!r} is not a loss")
        state = TrainState(
            epoch=_count(source["epoch"]),
            step=_count(source["step"]),
            best_epoch=_count(source["best_epoch"]),
            best_loss=float(best_loss),
            last_record=dict(source["eval"]),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(
            f"{folder / CONFIG_JSON} is not a valid charlm model config ({_first_line(e)}): export the run again"
        ) from None
    vocab = _read_vocab(folder / VOCAB_JSON)
    if len(vocab) != vocab_size:
        raise CheckpointError(
            f"{folder / VOCAB_JSON} has {len(vocab)} characters but {CONFIG_JSON} says "
            f"{vocab_size}: the files come from different exports; export the run again"
        )
    weights = _read_weights(folder / WEIGHTS, config.model, vocab_size)
    bad = first_nonfinite(weights)
    if bad is not None:
        raise ckpt.nonfinite(folder / WEIGHTS, bad, "export a checkpoint of a run that did not diverge")
    if config.model.tie_weights:  # loading both keys into the one shared parameter keeps the tie
        weights[TIED_KEY] = weights["embedding.weight"]
    return Checkpoint(
        model=weights,
        model_config=config.model,
        vocab=vocab.chars,
        config=config,
        corpus_sha256=corpus_sha256,
        train_state=state,
    )


def weights_check(cfg: ModelConfig, vocab_size: int, path: Path):
    """The check of model.safetensors' header against the model config.json describes: every tensor it needs, of
    its shape, in a float dtype the model computes in, nothing else, and weights that fit in memory; a
    CheckpointError naming the first difference, before the file is read."""
    expected = expected_shapes(cfg, vocab_size)

    def check(header: tensorfile.Header) -> None:
        problem = tensorfile.refuse_unexpected(header, expected, FLOAT_DTYPES)
        if problem is not None:
            model = f"{cfg.kind} {cfg.num_layers}x{cfg.hidden_size}, {cfg.input} input, vocabulary {vocab_size}"
            raise CheckpointError(
                f"{path} does not hold the model {CONFIG_JSON} describes ({model}): {problem}; the files come "
                "from different models, or the weights were converted: export the run again"
            )
        check_memory(header.size, f"the model in {path.parent}", "use a machine with more memory")

    return check


def expected_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """The tensors model.safetensors holds for this config: name -> shape."""
    return {k: v for k, v in weight_shapes(cfg, vocab_size).items() if not (cfg.tie_weights and k == TIED_KEY)}


def _count(value: object, least: int = 0) -> int:
    """An integer of config.json (not a bool, a float or text), at least `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{shown(value)} is not a whole number >= {least}")
    return value


def _read_meta(path: Path) -> dict:
    try:
        meta = readback.read_json(path, MAX_CONFIG_JSON)
    except (OSError, readback.BadFile) as e:
        raise CheckpointError(f"{path} is not readable JSON ({_reason(e)}): export the run again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a charlm model config: pass a folder made by charlm export")
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is model folder version {shown(meta.get('version'))}, this charlm "
            f"reads version {VERSION}: use a matching charlm release"
        )
    return meta


def _read_vocab(path: Path) -> Vocab:
    try:
        return Vocab.from_json(readback.read_bytes(path, readback.MAX_VOCAB_JSON))
    except (OSError, readback.BadFile) as e:
        raise CheckpointError(f"{path} is not a charlm vocabulary ({_reason(e)}): export the run again") from None


def _read_weights(path: Path, cfg: ModelConfig, vocab_size: int) -> dict[str, torch.Tensor]:
    """The weights, read only once their header matches the config (weights_check) and the file its header."""
    limit = max(DTYPE_BYTES[d] for d in FLOAT_DTYPES) * sum(map(math.prod, expected_shapes(cfg, vocab_size).values()))
    try:
        data, _ = tensorfile.read(path, weights_check(cfg, vocab_size, path), max_bytes=limit + tensorfile.MAX_HEADER)
        return load_safetensors(data)
    except (readback.BadFile, OSError, SafetensorError) as e:  # weights_check's refusal is a CheckpointError
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({_reason(e)}): it is truncated or damaged; export the "
            "run again"
        ) from None


def _reason(error: Exception) -> str:
    return (
        error.reason
        if isinstance(error, readback.BadFile)
        else (getattr(error, "strerror", None) or _first_line(error))
    )


def _first_line(error: Exception) -> str:
    return ((str(error) or type(error).__name__).splitlines() or [""])[0][:80]
