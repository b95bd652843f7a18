"""The options of a sample (`SamplingOptions`, checked whoever made them: the CLI or the Python API) and
its result (`Sample`), for sampling.py and beam search alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from charlm.errors import UsageError, finite
from charlm.errors import shown as quoted
from charlm.generation.fast_step import DEFAULT_WEIGHTS, WEIGHTS


@dataclass(frozen=True)
class SamplingOptions:
    """How each next character is chosen: the keyword options of `stream`, `samples` and `generate`."""

    temperature: float = 0.0  # 0 is greedy (argmax), as in d2l
    top_k: int = 0  # sample among the k most likely (0: all)
    top_p: float = 1.0  # sample among the most likely that hold this probability
    num_samples: int = 1
    seed: int | None = None  # None: fresh randomness (torch's global generator is never touched)
    stop: tuple[str, ...] = ()  # a sample ends as soon as it emits one of these texts (and ends with it)
    repetition_penalty: float = 1.0  # CTRL's: logits of recently seen characters are divided (>0) or multiplied by it
    repetition_window: int = 64  # "recently": the last this many characters, the prefix included
    beam: int = 0  # > 0: beam search with this many beams; deterministic, the model's own probabilities
    weights: str = DEFAULT_WEIGHTS  # the step's weight matrices: fp32 | bf16 | int8 (fast_step.py)

    def __post_init__(self):
        """Each option of the type its flag has (UsageError otherwise), whoever made it: the CLI or the Python
        API. One stop text may be given as a str: it is one text, never split into its characters."""
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, (tuple, list)) or not all(isinstance(text, str) for text in stop):
            raise UsageError(f"stop must be a text or a list of texts, not {quoted(self.stop)}")
        object.__setattr__(self, "stop", tuple(stop))  # frozen: set once, here
        for name, kind in (
            ("temperature", "number"),
            ("top_k", "whole"),
            ("top_p", "number"),
            ("num_samples", "whole"),
            ("seed", "whole or None"),
            ("repetition_penalty", "number"),
            ("repetition_window", "whole"),
            ("beam", "whole"),
            ("weights", "text"),
        ):
            check_type(getattr(self, name), name, kind)

    @classmethod
    def of(cls, options: dict) -> SamplingOptions:
        """The options given by keyword (the Python API's **options); an unknown name is a UsageError."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise UsageError(f"unknown sampling option {unknown[0]!r}: use {', '.join(cls.__dataclass_fields__)}")
        return cls(**options)

    def check(self, length: int) -> None:
        """Raise UsageError (one line, the flag's name) for the first bad value."""
        check_type(length, "length", "whole")
        for value, name in (
            (self.temperature, "temperature"),
            (self.top_p, "top-p"),
            (self.repetition_penalty, "repetition-penalty"),
        ):
            finite(value, name)
        for ok, message in [
            (length >= 0, "length must be >= 0"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top-k must be >= 0"),
            (0 < self.top_p <= 1, "top-p must be in (0, 1]"),
            (self.num_samples >= 1, "num-samples must be >= 1"),
            (self.seed is None or 0 <= self.seed < 2**63, "seed must be in 0..2^63-1"),
            (self.repetition_penalty > 0, "repetition-penalty must be > 0 (1 is none; 1.2-1.5 breaks greedy loops)"),
            (self.repetition_window >= 1, "repetition-window must be >= 1"),
            (self.beam >= 0, "beam must be >= 0 (0: sample instead)"),
            (self.weights in WEIGHTS, f"weights must be fp32, bf16 or int8, not {self.weights!r}"),
            (all(self.stop), "a stop text is empty: pass at least one character, e.g. --stop '\\n\\n'"),
        ]:
            if not ok:
                raise UsageError(message)
        if self.beam:
            self._check_beam()

    def _check_beam(self) -> None:
        if self.num_samples > self.beam:
            raise UsageError(
                f"num-samples ({self.num_samples}) must be <= beam ({self.beam}): beam search returns its best beams"
            )
        unused = [
            name
            for name, on in [
                ("--top-k", self.top_k),
                ("--top-p", self.top_p < 1),
                ("--seed", self.seed is not None),
                ("--repetition-penalty", self.repetition_penalty != 1),
            ]
            if on
        ]
        if unused:
            raise UsageError(
                f"beam search is deterministic and ranks by the model's own probabilities: "
                f"drop {', '.join(unused)} or --beam"
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


def check_type(value: object, name: str, kind: str) -> None:
    """`value` is a whole number (int), a number (int or float), text (str), or also None ("... or None");
    a bool is none of them. UsageError names the option as its flag does (top_k: top-k)."""
    if value is None and kind.endswith(" or None"):
        return
    wanted = {"whole": (int,), "number": (int, float), "text": (str,)}[kind.removesuffix(" or None")]
    if isinstance(value, bool) or not isinstance(value, wanted):
        what = {"whole": "a whole number", "number": "a number", "text": "text"}[kind.removesuffix(" or None")]
        raise UsageError(f"{name.replace('_', '-')} must be {what}, not {quoted(value)}")


@dataclass(frozen=True)
class Sample:
    """One sample: `text` is the prefix followed by what the model wrote."""

    prefix: str
    text: str
    generated: int  # characters the model wrote
    stop: str | None  # the stop text that ended it (`text` ends with it); None: it ran its whole length
    bits_per_char: float | None  # mean -log2 p of the written characters under the model (None: none written)
    plain: str | None = None  # the text as plain output prints it (<eod> as a line break); None: `text` itself

    @property
    def printed(self) -> str:
        """What `charlm generate` prints without --json: a document's end <eod> as a line break."""
        return self.text if self.plain is None else self.plain

    def record(self, number: int, length: int, options: SamplingOptions) -> dict:
        """The JSON object of `charlm generate --json` (its text names <eod>, as the API's does)."""
        return {
            "sample": number,
            "prefix": self.prefix,
            "text": self.text,
            "generated": self.generated,
            "stop": self.stop,
            "bits_per_char": self.bits_per_char,
            "options": {"length": length, **options.to_dict()},
        }
