"""Checkpoints: the typed schema, written atomically and read back with no arbitrary unpickling.

One file (last.pt, best.pt, ckpt-eEEEE-bBBBBBB.pt) is a `Checkpoint`: everything needed to rebuild the
model (its config and vocabulary travel with the weights) and, for training, to continue the run as the
same computation (optimizer, TrainState, random generators). On disk it is a dict of tensors and plain
data saved by torch.save and loaded with `weights_only=True`; `FORMAT`/`VERSION` name the layout.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from charlm.config import Config, ModelConfig, from_dict
from charlm.data.vocab import Vocab
from charlm.errors import CheckpointError, ConfigError
from charlm.files import fsio
from charlm.files.readback import check_vocab
from charlm.model import CharRNN, first_nonfinite, weight_shapes
from charlm.store.run_dir import RunDir
from charlm.store.state import TrainState

FORMAT = "charlm-checkpoint"
VERSION = 1
CHECKSUM = "content_sha256"  # of every tensor's bytes and every value; checked on load (absent before 1.1)


@dataclass
class Checkpoint:
    model: dict  # the model's state_dict
    model_config: ModelConfig
    vocab: list[str]
    config: Config  # the run's whole config
    corpus_sha256: str  # of the normalised training text: resume and scoring check it
    train_state: TrainState = field(default_factory=TrainState)
    optimizer: dict = field(default_factory=dict)
    scaler: dict = field(default_factory=dict)  # fp16: torch.amp.GradScaler's state (scale, growth); else empty
    torch_rng: torch.Tensor | None = None
    cuda_rng: list = field(default_factory=list)
    ranks: list | None = None  # each process's own generator and loss sum (distributed runs only)

    def to_payload(self) -> dict:
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "model_args": {"vocab_size": len(self.vocab), **asdict(self.model_config)},
            "vocab": self.vocab,
            "config": self.config.to_dict(),
            "optimizer": self.optimizer,
            "scaler": self.scaler,
            "corpus_sha256": self.corpus_sha256,
            "torch_rng": self.torch_rng,
            "cuda_rng": self.cuda_rng,
            **self.train_state.state_dict(),
        }
        if self.ranks is not None:
            payload["ranks"] = self.ranks
        return payload

    @classmethod
    def from_payload(cls, payload: dict, path: Path) -> Checkpoint:
        try:
            args = dict(payload["model_args"])
            args.pop("vocab_size")
            return cls(
                model=payload["model"],
                model_config=ModelConfig(**args),
                vocab=check_vocab(payload["vocab"]),
                config=from_dict(payload["config"]),
                corpus_sha256=payload["corpus_sha256"],
                train_state=TrainState.from_state_dict(payload),
                optimizer=payload.get("optimizer", {}),
                scaler=payload.get("scaler") or {},
                torch_rng=payload.get("torch_rng"),
                cuda_rng=payload.get("cuda_rng") or [],
                ranks=payload.get("ranks"),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as e:
            raise mismatch(path, e) from None

    def build_model(self, device: torch.device | str = "cpu") -> CharRNN:
        """The model with these weights, in eval mode. Raises ValueError/RuntimeError when they do not fit: the
        shapes are compared first, so that a config that disagrees with its weights allocates nothing."""
        expected = weight_shapes(self.model_config, len(self.vocab))
        for name, shape in expected.items():
            have = self.model.get(name)
            if not isinstance(have, torch.Tensor) or tuple(have.shape) != shape:
                got = list(have.shape) if isinstance(have, torch.Tensor) else "missing"
                raise ValueError(f"{name} is {got} where the model config needs {list(shape)}")
        model = CharRNN(self.model_config, len(self.vocab))
        model.load_state_dict(self.model)
        return model.to(device).eval()


def serialize(checkpoint: Checkpoint) -> bytes:
    payload = checkpoint.to_payload()
    return _serialize({**payload, CHECKSUM: content_digest(payload)})


def save(path: Path, checkpoint: Checkpoint) -> None:
    fsio.atomic_write_bytes(path, serialize(checkpoint))


def save_payload(path: Path, payload: dict) -> None:
    """Write a raw dict in the checkpoint format (format and version added): for tools and tests."""
    fsio.atomic_write_bytes(path, _serialize({"format": FORMAT, "version": VERSION, **payload}))


def _serialize(payload: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def load(path: Path) -> Checkpoint:
    """Read a checkpoint on the CPU with torch's weights-only unpickler: tensors and plain data only."""
    path = Path(path)
    return Checkpoint.from_payload(load_payload(path), path)


def load_payload(path: Path) -> dict:
    """The raw dict of a checkpoint file, checked to be one (format and version)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found: train first (charlm train) or pass the right --run-dir")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file: pass a run folder written by charlm train")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({e.strerror}): fix its permissions") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain data: refusing to load it "
            "(it may run code); use a checkpoint written by charlm"
        ) from None
    except Exception as e:  # torch.load raises many types on garbage; all mean the same to a user
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({_first_line(e)}): it is truncated "
            "or not a charlm file; use the other checkpoint of the run (best.pt / last.pt)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a charlm checkpoint: pass a run folder written by charlm train")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is checkpoint version {payload.get('version')}, this charlm reads "
            f"version {VERSION}: use a matching charlm release"
        )
    expected = payload.pop(CHECKSUM, None)
    if expected is not None and content_digest(payload) != expected:
        raise CheckpointError(f"{path} is damaged: its content does not match the checksum written with it")
    return payload


def content_digest(value: object) -> str:
    """sha256 of a checkpoint's content: each tensor's dtype, shape and bytes, and every plain value."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: object) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=str):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr((type(value).__name__, value)).encode())


def newest_intact(paths: list[Path], error: CheckpointError) -> tuple[Checkpoint, Path]:
    """The first of `paths` that loads whole; `error` (the one that sent us looking) when none does."""
    for path in paths:
        if Path(path).is_file():
            try:
                return load(path), Path(path)
            except CheckpointError:
                continue
    raise error


def load_run_model(run: RunDir, which: str = "best", device: torch.device | str = "cpu"):
    """`load_model` of a run's best or last checkpoint; when that one is damaged, the error says whether the
    other is intact and how to use it."""
    return of_run(run, which, lambda path: load_model(path, device))


def of_run(run: RunDir, which: str, read=None, use_other: Callable[[str], str] = lambda other: f"--checkpoint {other}"):
    """`read` (default: `load`) of a run's best or last checkpoint. When that one is damaged, the error says
    whether the other is intact and how to ask for it (`use_other(other)`: a flag, as each command takes it):
    the one message of every command that reads a run's checkpoint."""
    try:
        return (read or load)(run.checkpoint(which))
    except CheckpointError as error:
        other = "last" if which == "best" else "best"
        try:
            load(run.checkpoint(other))
        except CheckpointError:
            raise error from None
        raise CheckpointError(f"{error}; its {other} checkpoint is intact: use {use_other(other)}") from None


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[CharRNN, Vocab, Checkpoint]:
    """The model (eval mode, on `device`) and vocabulary of one checkpoint: nothing else is needed."""
    checkpoint = load(path)
    try:
        model, vocab = checkpoint.build_model(device), Vocab.in_order(checkpoint.vocab)
    except (TypeError, ValueError, RuntimeError) as e:
        raise mismatch(path, e) from None
    bad = first_nonfinite(checkpoint.model)
    if bad is not None:
        raise nonfinite(path, bad, "train again with a lower train.lr")
    return model, vocab, checkpoint


def nonfinite(path: Path, name: str, fix: str) -> CheckpointError:
    """The one error for weights that hold NaN or infinity, a run's checkpoint or a model folder's (refused when
    loaded: such a model scores NaN and writes noise, and nothing after would say why)."""
    return CheckpointError(
        f"{path} holds weights that are not finite numbers (NaN or infinity in {name}): the model diverged in "
        f"training or the file was changed: {fix}"
    )


def mismatch(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} does not match this charlm's model ({_first_line(error)}): retrain with this version"
    )


def _first_line(error: Exception) -> str:
    return ((str(error) or type(error).__name__).splitlines() or [""])[0][:80]
