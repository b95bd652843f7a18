"""A run's counts and mix, built on first use and kept, read back only after a check.

- the counts' index (`counts-index.safetensors`): the training split read backwards and its suffix array, in the
  novelty index's format (analysis.novelty_index: a checksum, its header judged before it is read), under the
  key of the split it follows from; built again when it does not check out;
- the mix (`mix.json`): the fitted Mixer, for the index's key and the checkpoint's weights (a resumed or fine-tuned
  run's weights change: the mix is fitted again).

A run folder keeps them beside its checkpoints; an exported model folder, which charlm never writes into, in the
user cache (`counts/`, `mix/`), as the novelty index does. Where nothing can be written they live for one command.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from charlm.analysis import novelty_index
from charlm.analysis.novelty import SuffixIndex
from charlm.counts.index import CountIndex
from charlm.counts.mixer import Mixer
from charlm.errors import CorpusError, RunError, UsageError
from charlm.files import fsio, readback
from charlm.files.machine import user_cache_dir
from charlm.files.readback import BadFile
from charlm.store.checkpoint import Checkpoint
from charlm.store.model_dir import is_model_dir

INDEX_NAME, MIX_NAME = "counts-index.safetensors", "mix.json"
INDEX_FORMAT, MIX_FORMAT, MIX_VERSION = "charlm-counts-index", "charlm-mix", 3
HOLD_OUT = 0.1  # a run without a val split fits its mix on this last share of its train split


class NoMix(Exception):
    """Why a run can have no mix (`reason`). With --mix the command fails with it (its fix: drop --mix);
    `perplexity` without --mix or --no-mix then scores with the network alone and says why in a note."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}: drop --mix")


class NoMixCorpus(NoMix, CorpusError):
    pass


class NoMixExtra(NoMix, UsageError):
    pass


class NoMixFit(NoMix, RunError):
    pass


def training_split(checkpoint: Checkpoint):
    """The run's corpus, read again and checked: the one its counts must be of."""
    from charlm import data

    try:
        import pydivsufsort  # noqa: F401
    except ImportError:
        raise NoMixExtra("mixing with counts needs pydivsufsort: pip install 'charlm[novelty]'") from None
    vocab = vocab_of(checkpoint)
    name = checkpoint.config.data.corpus
    try:
        corpus = data.load_corpus(checkpoint.config.data, vocab=vocab)
    except CorpusError as e:
        raise NoMixCorpus(f"the counts are of the training corpus, which cannot be read ({e})") from None
    if corpus.sha256 != checkpoint.corpus_sha256 or corpus.vocab != vocab:
        raise NoMixCorpus(
            f"corpus {name} changed since this run was trained: the counts are of its training split, which is no "
            "longer there"
        )
    if len(corpus.train) < 2:
        raise NoMixCorpus(f"corpus {name} has no training split to count")
    return corpus


def load_index(folder: Path, checkpoint: Checkpoint, say: Callable[[str], object]) -> CountIndex:
    """The count index of `checkpoint`'s training split: the kept one when it checks out, else built and kept."""
    key = novelty_index.index_key(checkpoint)
    path = novelty_index.index_path(folder, key, name=INDEX_NAME, kind="counts")
    vocab_size = len(checkpoint.vocab)
    why = "built"
    try:
        kept = novelty_index.read_index(path, key=key, vocab_size=vocab_size, newline=None, fmt=INDEX_FORMAT)
        return CountIndex(kept.text, kept.sa, vocab_size)
    except FileNotFoundError:
        pass
    except (OSError, BadFile) as e:
        why = f"rebuilt ({path.name}: {getattr(e, 'reason', None) or e.strerror})"
    started = time.perf_counter()
    index = CountIndex.of(training_split(checkpoint).train.numpy(), vocab_size)
    blob = novelty_index.to_bytes(SuffixIndex(index.rev, index.sa, None), key, fmt=INDEX_FORMAT)
    say(
        f"counts index {why} from {len(index):,} training characters in {time.perf_counter() - started:.1f} s, "
        f"{_keep(path, blob)}"
    )
    return index


def _keep(path: Path, blob: bytes) -> str:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fsio.atomic_write_bytes(path, blob)
        return f"kept in {path}"
    except (OSError, RunError) as e:  # a read-only folder: this command works all the same
        return f"not kept ({e})"


def mix_path(folder: Path, key: str, weights: str) -> Path:
    if is_model_dir(folder):
        return user_cache_dir() / "mix" / f"{key}-{weights}.json"
    return Path(folder) / MIX_NAME


def read_mixers(path: Path, *, key: str, weights: str, vocab_size: int) -> tuple[Mixer, Mixer] | None:
    """The (static, dynamic) mixers kept at `path` for this index key and these weights; None where there are
    none that fit (another run's, other weights, edited): they are fitted again."""
    try:
        saved = readback.read_json(path, 1024 * 1024)
        if saved.get("format") != MIX_FORMAT or saved.get("version") != MIX_VERSION:
            return None
        if saved.get("key") != key or saved.get("weights") != weights:
            return None
        static, dynamic = Mixer.from_dict(saved["static"]), Mixer.from_dict(saved["dynamic"])
    except (FileNotFoundError, BadFile, OSError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if static.vocab_size != vocab_size or dynamic.vocab_size != vocab_size:
        return None
    return (static, dynamic) if (static.experts, dynamic.experts) == (1, 2) else None


def write_mixers(path: Path, mixers: tuple[Mixer, Mixer], *, key: str, weights: str, report: dict) -> str:
    """Keep the mixers at `path` (atomically); says where, or why not."""
    saved = {"format": MIX_FORMAT, "version": MIX_VERSION, "key": key, "weights": weights, "fit": report}
    saved |= {"static": mixers[0].to_dict(), "dynamic": mixers[1].to_dict()}
    return _keep(path, json.dumps(saved, indent=1, allow_nan=False).encode())


def fit_text(checkpoint: Checkpoint, index: CountIndex) -> tuple[torch.Tensor, CountIndex, str]:
    """The held-out text the mix is fitted on (the val split, else the train split's last HOLD_OUT), the index
    to fit with (of the training text before it), and its name."""
    corpus = training_split(checkpoint)
    if len(corpus.val) >= 2:
        return corpus.val, index, "val split"
    cut = int(len(corpus.train) * (1 - HOLD_OUT))
    if cut < 2 or len(corpus.train) - cut < 2:
        raise NoMixCorpus("the train split is too short to hold out a part to fit the mix on")
    head = CountIndex.of(corpus.train[:cut].numpy(), len(checkpoint.vocab))
    return corpus.train[cut:], head, f"last {HOLD_OUT:.0%} of the train split"


def check_report(report: dict) -> None:
    """A fit whose losses are not finite is refused (nothing kept)."""
    if not all(math.isfinite(v) for k, v in report.items() if k.endswith("nats_per_char")):
        raise NoMixFit(f"fitting the mix on the {report['text']} gave a loss that is not finite")


def vocab_of(checkpoint: Checkpoint):
    from charlm.data.vocab import Vocab

    return Vocab.in_order(checkpoint.vocab)
