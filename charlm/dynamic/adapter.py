"""The update dynamic evaluation takes after each scored segment, in the paper's two variants.

sgd: θ ← θ − η∇L + λ(θ₀ − θ), a plain step toward the text and a decay back toward the trained weights θ₀.
rms: θ ← θ − η∇L / RMS + λ·min(1/λ, RMS / mean(RMS))·(θ₀ − θ), each weight's step scaled by the root mean
square of its gradient on the training split (stats.py), and each weight's decay by its share of that RMS
(Krause et al. 2018, section 5: weights the training gradients move much are pulled back harder).

The saved weights are never touched: the adapter works on the model it is given, a copy the caller made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from charlm.errors import UsageError, shown

METHODS = ("sgd", "rms")
# (lr, decay) per method, chosen by measurement: --dynamic-tune's grid on the first 20,000 characters of PTB-char's
# valid split (ptb-char-cpu; docs/results.md), then used unchanged on tiny shakespeare and the lyrics;
# --dynamic-tune finds a run's own on its val split
DEFAULTS = {"sgd": (0.2, 0.01), "rms": (1e-4, 0.01)}
# a weight's RMS is taken as at least this share of its tensor's mean: the embedding row of a character that
# training never (or hardly) saw has an RMS of about 0, and 1/RMS would throw it far on its first step (measured:
# the lyrics' val split, 2.7% characters unseen in training, went to 5.8e17 bits/char without the floor)
RMS_FLOOR = 0.1
# the step lr x gradient is taken in float32, the weights' type: a larger lr cannot even be multiplied in
MAX_LR = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class DynamicOptions:
    """How dynamic evaluation adapts: the method and its step size and decay (None: the method's default, or
    the values --dynamic-tune saved in the run folder)."""

    method: str = "sgd"
    lr: float | None = None
    decay: float | None = None
    tune: bool = False  # choose lr and decay on the val split first (tuning.py), kept in the run folder

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"dynamic method {self.method!r} is not valid: use sgd or rms")
        for flag, value in (("--dynamic-lr", self.lr), ("--dynamic-decay", self.decay)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"{flag} must be a number >= 0, not {shown(value)}")
        if self.lr is not None and self.lr > MAX_LR:
            raise UsageError(
                f"--dynamic-lr {self.lr:g} is past what a step in float32 (the weights' type) can hold, {MAX_LR:.3g}: "
                f"pass a step size near the defaults (sgd {DEFAULTS['sgd'][0]:g}, rms {DEFAULTS['rms'][0]:g})"
            )
        if self.decay is not None and self.decay > 1:
            raise UsageError(
                f"--dynamic-decay must be between 0 and 1 (a share pulled back per step), got {self.decay}"
            )

    def resolved(self, tuned: dict | None = None) -> DynamicOptions:
        """Every value set: those given, else the tuned ones for this method, else the method's defaults."""
        lr, decay = (tuned or {}).get(self.method) or DEFAULTS[self.method]
        return replace(self, lr=lr if self.lr is None else self.lr, decay=decay if self.decay is None else self.decay)

    def to_dict(self) -> dict:
        return {"method": self.method, "lr": self.lr, "decay": self.decay}


class Adapter:
    """Takes the update of `options` on `model`'s parameters after each backward pass (step), and knows the
    trained weights it decays toward."""

    def __init__(self, model: torch.nn.Module, options: DynamicOptions, rms: dict[str, torch.Tensor] | None = None):
        if options.lr is None or options.decay is None:
            raise ValueError("Adapter needs resolved options (DynamicOptions.resolved)")
        self.options = options
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.start = [p.detach().clone() for p in self.params]
        self.scale: list[torch.Tensor] | None = None
        self.decay: list[torch.Tensor | float] = [options.decay] * len(self.params)
        if options.method == "rms":
            if rms is None:
                raise ValueError("the rms method needs the gradient statistics of the training split")
            self._use_rms([rms[name].to(p.device) for name, p in named])

    @property
    def adapts(self) -> bool:
        """False with lr 0: no step is taken, so no gradient is needed (and none is computed)."""
        return self.options.lr > 0

    def _use_rms(self, rms: list[torch.Tensor]) -> None:
        rms = [r.clamp(min=RMS_FLOOR * float(r.mean()) or 1e-8) for r in rms]
        self.scale = [1 / r for r in rms]
        mean = torch.cat([r.flatten() for r in rms]).mean()
        lam = self.options.decay
        # the paper's per-weight decay, at most 1: no weight is pulled past θ₀
        self.decay = [(lam * r / mean).clamp(max=1.0) if lam > 0 else 0.0 for r in rms]

    @torch.no_grad()
    def step(self) -> None:
        """One update from the gradients of the last backward pass (each parameter's .grad), then the grads
        cleared. Whole-list (foreach) operations: a handful of kernel calls per step, not several per tensor."""
        params = [p for p in self.params if p.grad is not None]
        if len(params) != len(self.params):  # a parameter the loss did not reach (none in charlm's models)
            return self._step_each()
        grads = [p.grad for p in params]
        if self.scale is not None:
            grads = torch._foreach_mul(grads, self.scale)
        if any(isinstance(d, torch.Tensor) or d > 0 for d in self.decay):
            pull = torch._foreach_sub(self.start, params)  # from the weights before this step
            torch._foreach_mul_(pull, self.decay if self.scale is not None else self.decay[0])
            torch._foreach_add_(params, grads, alpha=-self.options.lr)
            torch._foreach_add_(params, pull)
        else:
            torch._foreach_add_(params, grads, alpha=-self.options.lr)
        for p in params:
            p.grad = None

    def _step_each(self) -> None:
        lr = self.options.lr
        for i, (p, p0) in enumerate(zip(self.params, self.start, strict=True)):
            pull = (p0 - p).mul_(self.decay[i])
            if p.grad is not None:
                p.sub_(p.grad * self.scale[i] if self.scale is not None else p.grad, alpha=lr)
                p.grad = None
            p.add_(pull)
