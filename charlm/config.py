"""Typed configuration: dataclasses, YAML loading, `key=value` overrides and validation (the type of each
value is checked by coerce.py). The defaults of `Config()` are the default experiment (configs/jaychou-lstm.yaml,
checked by a test), and ModelConfig's defaults are the model's: CharRNN takes a ModelConfig and has none of its own.
Every value is validated here, once, so the rest of charlm can trust the values it receives. Checks that need more
than the config are made where that is known: the corpus's length (training/setup.check_corpus), the number of
processes (distributed.check_batch), the memory a model needs (training/setup.build).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from charlm.coerce import INT64, build, field_type
from charlm.errors import ConfigError, shown
from charlm.files import safeyaml
from charlm.runtime.capability import REQUESTS as PRECISIONS
from charlm.units import DURATION_UNITS, parse_duration  # noqa: F401 (where callers import them from)


@dataclass
class DataConfig:
    corpus: str = "jaychou"  # a built-in name, a UTF-8 text file or a folder of .txt files
    newlines: str = "keep"  # keep | space (d2l's lyrics loader turns \n and \r into spaces)
    max_chars: int | None = None  # keep only the first max_chars characters (d2l: 10000)
    val_fraction: float = 0.1  # contiguous tail fractions; ignored for built-ins with their own splits
    test_fraction: float = 0.0
    # stream: one text (today's behaviour); lines | paragraphs | files: a list of documents, each ended by the
    # end-of-document symbol <eod> (a reserved vocabulary entry), and splits cut between documents
    documents: str = "stream"
    min_char_count: int = 0  # characters seen fewer times in the training split become <unk> (0: keep all)
    lowercase: bool = False
    normalize: str = "none"  # none | NFC | NFKC: Unicode normalisation of the text


@dataclass
class ModelConfig:
    kind: str = "lstm"  # rnn_tanh | rnn_relu | lstm | gru
    input: str = "embedding"  # onehot | embedding
    embed_size: int = 256  # used with input=embedding
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.5  # on the embedding output, between layers and before the output head
    tie_weights: bool = True  # share embedding and head weights (needs embed_size == hidden_size)
    dropout_embed: float | None = None  # on the embedding output (null: dropout)
    dropout_hidden: float | None = None  # between recurrent layers (null: dropout)
    dropout_output: float | None = None  # before the output head (null: dropout)
    locked_dropout: bool = False  # variational dropout: one mask per sequence for all time steps
    weight_drop: float = 0.0  # DropConnect on the recurrent weights W_hh (AWD-LSTM), training only


@dataclass
class TrainConfig:
    epochs: int = 15
    batch_size: int = 32
    num_steps: int = 32
    sampling: str = "consecutive"  # consecutive | random
    random_offset: bool = False  # consecutive: shift the streams by a random offset each epoch
    carry_state_across_epochs: bool = False  # consecutive: keep the hidden state from epoch to epoch
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 3e-3
    weight_decay: float = 0.0  # applied to weight matrices only, never to biases
    schedule: str = "cosine"  # constant | cosine | step | plateau
    warmup_steps: int = 50  # optimizer steps of linear warm-up
    min_lr: float = 1e-4  # cosine decays to this; step and plateau never go below it
    decay_factor: float = 0.5  # step / plateau: multiply the lr by this
    decay_every: int = 1  # step: epochs between decays
    plateau_patience: int = 0  # plateau: evaluations without a new best val loss before a decay
    patience: int = 0  # early stopping: stop after this many evaluations without a new best (0: never)
    time_budget: str | None = None  # stop when training wall time reaches this (106s, 10m, 1h); null: no limit
    eval_every_batches: int = 0  # also evaluate (and keep best) every N batches inside an epoch (0: per epoch)
    eval_every_seconds: float = 0.0  # also evaluate each time training time passes a multiple of this (0: off)
    eval_every_epochs: int = 1  # evaluate and checkpoint at the end of every Nth epoch (and of the last)
    eval_chars: int | None = None  # in-training evals score about this many val chars (null: the whole split)
    variable_bptt: bool = False  # AWD-style random window lengths around num_steps (consecutive sampling)
    clip_norm: float | None = 1.0  # max global gradient L2 norm; null disables clipping
    label_smoothing: float = 0.1  # training targets keep 1 - this; evals always score the plain loss
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    # auto | fp32 | bf16 | fp16: autocast's dtype (weights, optimizer and loss stay fp32); auto picks by what the
    # device computes natively (capability.py) and the run folder saves what it picked. A new key, not a wider
    # train.bf16: a bool cannot say auto or fp16 (train.bf16 still loads, as precision bf16 or fp32)
    precision: str = "auto"
    deterministic: bool = False  # PyTorch's deterministic algorithms (bit-identical reruns on a GPU; slower)
    seed: int = 0
    eval_batch_size: int = 16  # parallel streams when scoring a split
    checkpoint_every_batches: int = 0  # also checkpoint inside an epoch (0: at the end of each epoch only)
    keep_last: int = 0  # keep this many older checkpoints besides last.pt and best.pt
    on_nonfinite: str = "stop"  # stop | skip: what a NaN/Inf loss or gradient norm does
    max_nonfinite: int = 10  # skip: stop after this many skipped batches
    reset_state_at_documents: bool = False  # zero the hidden state as each document starts (needs data.documents)


@dataclass
class SampleConfig:
    prefixes: list[str] = field(default_factory=lambda: ["分开", "不分开"])
    length: int = 50  # characters generated after each prefix
    preview_every: int = 5  # epochs between greedy previews; 0 disables them


@dataclass
class LogConfig:
    tensorboard: bool = False  # also write scalars to RUN_DIR/tb/ (needs the tensorboard package)


@dataclass
class SearchConfig:
    """`charlm train --budget D --search` (autosize/search.py): candidates near the rule's choice, tried briefly on
    the val split (successive halving), the rest of the budget to the winner. Off by default: the rule alone."""

    enabled: bool = False  # --search; only with auto-sizing (--budget without --config, or --config auto)
    share: float = 0.45  # of the budget (training time) spent on the trials; the winner continues for the rest
    trials: int = 9  # candidates this process tries (the rule's own choice first)
    rungs: int = 3  # successive halving: each rung trains the candidates kept eta (reduction) times longer
    reduction: int = 3  # eta: about 1 in eta candidates goes on to the next rung
    min_passes: float = 3.0  # a budget that reads the train split fewer times trains the rule's choice alone
    storage: str | None = None  # --study-storage: an Optuna RDB URL or a journal file (null: RUN/study.db)
    study: str | None = None  # the study's name in a shared storage (null: the run's name)
    seed: int = 0  # the sampler's seed (in a shared storage each process mixes in its own id)


@dataclass
class Config:
    name: str = "jaychou-lstm"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# what can run (the memory there is, where a model is built): one LSTM layer 2^16 wide is 137 GB of fp32 weights,
# more than any accelerator holds; more layers take seconds per thousand to build (a deep recurrent LM has tens)
MAX_WIDTH, MAX_LAYERS = 1 << 16, 1024
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # one path component: never a path out of runs/

CHOICES = {
    "data.newlines": ("keep", "space"),
    "data.documents": ("stream", "lines", "paragraphs", "files"),
    "data.normalize": ("none", "NFC", "NFKC"),
    "model.kind": ("rnn_tanh", "rnn_relu", "lstm", "gru"),
    "model.input": ("onehot", "embedding"),
    "train.sampling": ("consecutive", "random"),
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.schedule": ("constant", "cosine", "step", "plateau"),
    "train.on_nonfinite": ("stop", "skip"),
    "train.precision": PRECISIONS,
}
LEGACY_KEYS = {"train.bf16": "train.precision"}  # an old key and the one that replaced it


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from the defaults), apply `key=value` overrides, validate."""
    raw: dict = {}
    if path is not None:
        if isinstance(path, (bytes, bytearray)) or not isinstance(path, (str, os.PathLike)):
            raise ConfigError(f"config path must be a file path (a str or pathlib.Path), not {shown(path)}")
        path = Path(path)
        raw = safeyaml.load_file(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections (data, model, train, sample)")
    apply_overrides(raw, overrides)
    return from_dict(raw)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> None:
    """`key=value` items onto nested plain data; the old train.bf16 and train.precision must agree."""
    if isinstance(overrides, str):
        overrides = (overrides,)  # one setting, never its characters
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(f"overrides must be a list of 'section.key=value' texts, not {shown(overrides)}")
    items = [parse_override(item) for item in overrides]
    given = {key: value for key, value in items if key in ("train.bf16", "train.precision")}
    if len(given) == 2:
        _legacy_precision({"precision": given["train.precision"], "bf16": given["train.bf16"]})
    for key, value in items:
        set_dotted(raw, key, value)


def parse_override(item: str) -> tuple[str, object]:
    """`key=value`: the value is read as YAML, except that text fields keep the text as typed
    (quote it, or write a [list], to have YAML read it)."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"override {shown(item)} is not KEY=VALUE: write it like train.lr=0.01")
    key, text = item.split("=", 1)
    key = key.strip()
    kind = field_type(Config, key)
    quoted = text[:1] in ("'", '"') or (kind == list[str] and text[:1] == "[")
    if kind in (str, list[str]) and not quoted:
        return key, text if kind is str else [text]  # `ROMEO:`, `yes` or `The ` exactly as typed
    value = safeyaml.load_value(text, f"--set {key}") if text.strip() else ""
    if kind == list[str] and not isinstance(value, list):
        value = [text]
    return key, value


def set_dotted(raw: dict, key: str, value: object) -> None:
    if key in ("train.bf16", "train.precision") and isinstance(raw.get("train"), dict):
        raw["train"].pop("bf16", None)  # an override replaces the file's setting, in either spelling
    if key == "train.bf16" and isinstance(value, bool):
        key, value = "train.precision", "bf16" if value else "fp32"
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is not a section")
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = {**node[last], **value}  # --set data={corpus: x} changes corpus, keeps the other keys
    else:
        node[last] = value


def from_dict(raw: dict) -> Config:
    """Build a validated Config from nested plain data (what YAML gives)."""
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict) and "bf16" in raw["train"]:
        raw = {**raw, "train": dict(raw["train"])}  # a config or run folder from before train.precision
        _legacy_precision(raw["train"])
    config = build(Config, raw, prefix="")
    validate(config)
    return config


def _legacy_precision(train: dict) -> None:
    """train.bf16 (before train.precision) as the precision it meant; both given and disagreeing: an error."""
    old = train.pop("bf16")
    if not isinstance(old, bool):
        raise ConfigError(f"train.bf16 must be true or false, got {shown(old)}: or write train.precision=bf16/fp32")
    meant = "bf16" if old else "fp32"
    if train.setdefault("precision", meant) != meant:
        raise ConfigError(
            f"train.bf16={str(old).lower()} and train.precision={shown(train['precision'])} disagree: "
            f"drop train.bf16 (the old name of train.precision; {str(old).lower()} is {meant})"
        )


def validate(c: Config) -> None:
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(c, section), name)
        if value not in choices:
            near = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean {near[0]}?" if near else f"choose one of {', '.join(choices)}"
            raise ConfigError(f"{key} = {shown(value)} is not valid: {hint}")
    _validate_data_and_model(c)
    _validate_train(c.train)
    _validate_search(c.search)


def _validate_search(s: SearchConfig) -> None:
    check(0 < s.share < 1, f"search.share must be in (0, 1): the budget's share for the trials, got {s.share}")
    check(s.trials >= 2, f"search.trials must be at least 2 (candidates to compare), got {s.trials}")
    check(s.rungs >= 1, f"search.rungs must be a positive integer, got {s.rungs}")
    check(s.reduction >= 2, f"search.reduction must be at least 2 (1 in N kept per rung), got {s.reduction}")
    check(s.min_passes >= 0, f"search.min_passes must be at least 0 (reads of the train split), got {s.min_passes}")
    check(s.storage is None or bool(s.storage.strip()), "search.storage must be a URL or a file path (or null)")
    check(s.study is None or bool(s.study.strip()), "search.study must be a name (or null for the run's name)")
    check(0 <= s.seed < INT64, f"search.seed must be in 0..2^63-1, got {shown(s.seed)}")


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate_data_and_model(c: Config) -> None:
    d, m = c.data, c.model
    check(bool(c.name.strip()), "name must not be empty")
    check(
        RUN_NAME.fullmatch(c.name) is not None,
        f"name {shown(c.name)} is not valid: it names the run folder, "
        "so use up to 100 letters, digits, '-', '_' or '.', starting with a letter or digit",
    )
    check(bool(d.corpus.strip()), "data.corpus must name a built-in corpus or a path")
    check(d.max_chars is None or d.max_chars > 1, "data.max_chars must be at least 2 (or null for all)")
    check(d.min_char_count >= 0, "data.min_char_count must be >= 0 (0 keeps every character)")
    check(
        d.newlines == "keep" or d.documents not in ("lines", "paragraphs"),
        f"data.documents={d.documents} splits the text at line breaks: set data.newlines=keep",
    )
    check(
        d.documents != "stream" or not c.train.reset_state_at_documents,
        "train.reset_state_at_documents needs documents: set data.documents to lines, paragraphs or files",
    )
    for name in ("val_fraction", "test_fraction"):
        check(0 <= getattr(d, name) < 1, f"data.{name} must be in [0, 1)")
    check(d.val_fraction + d.test_fraction < 1, "data.val_fraction + data.test_fraction must be below 1")
    for name, most in (("hidden_size", MAX_WIDTH), ("embed_size", MAX_WIDTH), ("num_layers", MAX_LAYERS)):
        check(0 < getattr(m, name) <= most, f"model.{name} must be in 1..{most:,}, got {getattr(m, name)}")
    check(0 <= m.dropout < 1, f"model.dropout must be in [0, 1), got {m.dropout}")
    if m.tie_weights:
        check(m.input == "embedding", "model.tie_weights needs model.input=embedding")
        check(
            m.embed_size == m.hidden_size,
            f"model.tie_weights needs embed_size == hidden_size (got {m.embed_size} and {m.hidden_size})",
        )
    for name in ("dropout_embed", "dropout_hidden", "dropout_output", "weight_drop"):
        p = getattr(m, name)
        check(p is None or 0 <= p < 1, f"model.{name} must be in [0, 1), got {p}")
    s = c.sample
    check(s.length >= 0, "sample.length must be >= 0")
    check(s.preview_every >= 0, "sample.preview_every must be >= 0 (0 disables previews)")
    check(all(p for p in s.prefixes), "sample.prefixes must not contain an empty prefix")


def _validate_train(t: TrainConfig) -> None:
    check(0 <= t.seed < INT64, f"train.seed must be in 0..2^63-1, got {shown(t.seed)}")
    check(t.epochs > 0, "train.epochs must be a positive integer")
    check(t.batch_size > 0, "train.batch_size must be a positive integer")
    check(t.num_steps > 0, f"train.num_steps must be a positive integer, got {t.num_steps}")
    check(t.lr > 0, f"train.lr must be positive, got {t.lr}")
    check(t.weight_decay >= 0, "train.weight_decay must be >= 0")
    check(t.warmup_steps >= 0, "train.warmup_steps must be >= 0")
    check(0 <= t.min_lr <= t.lr, "train.min_lr must be in [0, train.lr]")
    check(t.clip_norm is None or t.clip_norm > 0, "train.clip_norm must be positive (or null for no clipping)")
    check(0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    check(0 < t.decay_factor <= 1, f"train.decay_factor must be in (0, 1], got {t.decay_factor}")
    check(t.decay_every > 0, "train.decay_every must be a positive integer (epochs)")
    check(t.plateau_patience >= 0, "train.plateau_patience must be >= 0")
    check(t.patience >= 0, "train.patience must be >= 0 (0: no early stopping)")
    if t.time_budget is not None:
        parse_duration(t.time_budget, "train.time_budget")
    check(t.eval_every_batches >= 0, "train.eval_every_batches must be >= 0 (0: evaluate once per epoch)")
    check(t.eval_every_epochs >= 1, "train.eval_every_epochs must be >= 1 (1: evaluate after every epoch)")
    check(t.eval_every_seconds >= 0, "train.eval_every_seconds must be >= 0 (0: no evals on the clock)")
    check(t.eval_chars is None or t.eval_chars > 0, "train.eval_chars must be positive (or null for the whole split)")
    check(not (t.variable_bptt and t.sampling != "consecutive"), "train.variable_bptt needs train.sampling=consecutive")
    check(t.eval_batch_size > 0, "train.eval_batch_size must be a positive integer")
    check(t.checkpoint_every_batches >= 0, "train.checkpoint_every_batches must be >= 0 (0: every epoch)")
    check(t.keep_last >= 0, "train.keep_last must be >= 0")
    check(t.max_nonfinite > 0, "train.max_nonfinite must be a positive integer")
    check(
        t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps"),
        f"train.device = {shown(t.device)} is not valid: use auto, cpu, cuda, cuda:N or mps",
    )


def dump_config(c: Config) -> str:
    return yaml.safe_dump(c.to_dict(), allow_unicode=True, sort_keys=False)
