"""Which hidden units track which features of a text: `charlm neurons`.

The model reads the text as `charlm perplexity` does (`evaluate.Streams`: eval_batch_size streams, the
hidden state carried through each), one layer at a time, and every unit's value after each character is
recorded: h of every layer, and c as well for an LSTM (recomputed from the gates, since nn.LSTM returns
only h per step). Units are ranked per feature by |Pearson correlation| over the whole text; the sums
behind it are accumulated window by window, so memory does not grow with the text. Only the first
`page_chars` characters keep every unit's values, for the page.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from charlm.analysis.features import Feature, compute
from charlm.evaluate import Streams, TextSource, load_text_to_score


@dataclass(frozen=True)
class Unit:
    layer: int
    state: str  # h | c (an LSTM's cell)
    index: int

    @property
    def label(self) -> str:
        return f"L{self.layer}.{self.state}{self.index}"


@dataclass
class Ranked:
    feature: Feature
    top: list[tuple[Unit, float]]  # (unit, correlation), by |correlation|, strongest first; [] if constant


@dataclass
class NeuronReport:
    run_dir: Path
    checkpoint: str
    epoch: int
    source: str
    model: str  # e.g. "lstm 2x256"
    chars: int  # characters read (the text less a tail shorter than the number of streams)
    units: list[Unit]
    ranked: list[Ranked]
    excerpt: str  # the first characters of the text, with every unit's values in `excerpt_values`
    excerpt_values: torch.Tensor  # (len(excerpt), units) float32
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "run": str(self.run_dir),
            "checkpoint": self.checkpoint,
            "epoch": self.epoch,
            "source": self.source,
            "model": self.model,
            "chars": self.chars,
            "units": len(self.units),
            "seconds": self.seconds,
            "features": [
                {
                    "feature": r.feature.name,
                    "description": r.feature.description,
                    "constant": r.feature.constant,
                    "top": [
                        {"unit": u.label, "layer": u.layer, "state": u.state, "index": u.index, "r": corr}
                        for u, corr in r.top
                    ],
                }
                for r in self.ranked
            ],
        }


class Recorder:
    """Runs a CharRNN layer by layer over windows of a batch of streams and returns every unit's values."""

    def __init__(self, model, device: torch.device):
        self.model, self.kind, self.device = model, model.kind, device
        self.layers = [self._one_layer(k) for k in range(model.num_layers)]
        states = ("h", "c") if self.kind == "lstm" else ("h",)
        self.units = [Unit(k, s, i) for k in range(model.num_layers) for s in states for i in range(model.hidden_size)]

    def _one_layer(self, k: int) -> nn.Module:
        """Layer k of the model as a one-layer module (the model may hold all layers in one)."""
        w_ih, w_hh, b_ih, b_hh = self.model.layer_weights(k)
        if self.kind in ("rnn_tanh", "rnn_relu"):
            layer = nn.RNN(w_ih.shape[1], self.model.hidden_size, 1, nonlinearity=self.kind[4:])
        else:
            layer = {"lstm": nn.LSTM, "gru": nn.GRU}[self.kind](w_ih.shape[1], self.model.hidden_size, 1)
        layer.load_state_dict({"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh})
        return layer.to(self.device).eval()

    def inputs(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.T.long()  # (steps, streams)
        if self.model.embedding is not None:
            return self.model.embedding(ids)
        return F.one_hot(ids, self.model.vocab_size).float()

    def window(self, ids: torch.Tensor, hidden: list | None) -> tuple[torch.Tensor, list]:
        """ids (streams, steps) -> values (steps, streams, units) and each layer's state after the window."""
        x = self.inputs(ids)
        hidden = hidden or [None] * len(self.layers)
        values, finals = [], []
        for layer, state in zip(self.layers, hidden, strict=True):
            out, final = layer(x, state)
            values.append(out)
            if self.kind == "lstm":
                values.append(self._cells(layer, x, out, state))
            finals.append(final)
            x = out
        return torch.cat(values, dim=2), finals

    @staticmethod
    def _cells(layer: nn.LSTM, x: torch.Tensor, out: torch.Tensor, state) -> torch.Tensor:
        """The cell state c at every step: the gates in one matmul, then c_t = f c_{t-1} + i g (PyTorch's order)."""
        h0, c = state if state is not None else (out.new_zeros(out[:1].shape),) * 2
        previous = torch.cat([h0, out[:-1]])
        gates = F.linear(x, layer.weight_ih_l0, layer.bias_ih_l0) + F.linear(
            previous, layer.weight_hh_l0, layer.bias_hh_l0
        )
        i, f, g, _ = gates.chunk(4, dim=2)
        i, f, g = i.sigmoid(), f.sigmoid(), g.tanh()
        cells = torch.empty_like(out)
        c = c[0]
        for t in range(len(cells)):  # elementwise only: the matmuls are done above for every step at once
            c = torch.addcmul(f[t] * c, i[t], g[t])
            cells[t] = c
        return cells


class Correlations:
    """Running sums for the Pearson correlation of every (feature, unit) pair, in float64."""

    def __init__(self, features: torch.Tensor, units: int):
        self.n = 0
        self.sum_x = torch.zeros(units, dtype=torch.float64)
        self.sum_xx = torch.zeros(units, dtype=torch.float64)
        self.sum_fx = torch.zeros(features.shape[1], units, dtype=torch.float64)
        self.sum_f = torch.zeros(features.shape[1], dtype=torch.float64)
        self.sum_ff = torch.zeros(features.shape[1], dtype=torch.float64)

    def add(self, values: torch.Tensor, features: torch.Tensor) -> None:
        """values (chars, units), features (chars, features) of the same characters."""
        x, f = values.double(), features.double()
        self.n += len(x)
        self.sum_x += x.sum(0)
        self.sum_xx += (x * x).sum(0)
        self.sum_fx += f.T @ x
        self.sum_f += f.sum(0)
        self.sum_ff += (f * f).sum(0)

    def result(self) -> torch.Tensor:
        """(features, units); 0 where a unit or a feature does not vary."""
        n = self.n
        covariance = n * self.sum_fx - self.sum_f[:, None] * self.sum_x[None, :]
        spread = (n * self.sum_ff - self.sum_f**2).clamp(min=0)[:, None] * (n * self.sum_xx - self.sum_x**2).clamp(
            min=0
        )[None, :]
        r = covariance / spread.sqrt()
        return torch.where(spread > 0, r, torch.zeros_like(r)).clamp(-1, 1)


@torch.inference_mode()
def record(
    model,
    ids: torch.Tensor,
    features: torch.Tensor,
    *,
    batch_size: int,
    num_steps: int,
    device: torch.device,
    page_chars: int,
) -> tuple[Recorder, torch.Tensor, torch.Tensor, int]:
    """(recorder, correlations (features, units), the first page_chars characters' values, chars read)."""
    layout = Streams.of(len(ids), batch_size)
    streams, length = layout.streams, layout.length
    recorder = Recorder(model, device)  # its one-layer modules run in eval mode; the model is left as it is
    inputs = layout.rows(ids, 0, device)
    by_stream = features[: streams * length].view(streams, length, -1)
    sums = Correlations(features, len(recorder.units))
    kept = min(page_chars, streams * length)
    excerpt = torch.zeros(kept, len(recorder.units))
    hidden = None
    for start in range(0, length, num_steps):
        values, hidden = recorder.window(inputs[:, start : start + num_steps], hidden)
        values = values.transpose(0, 1).cpu()  # (streams, steps, units): text order within each stream
        steps = values.shape[1]
        sums.add(
            values.reshape(-1, values.shape[2]), by_stream[:, start : start + steps].reshape(-1, by_stream.shape[2])
        )
        for s in range(min(streams, math.ceil(kept / length))):  # the streams that hold the excerpt's characters
            end = min(start + steps, kept - s * length)
            if end > start:
                excerpt[s * length + start : s * length + end] = values[s, : end - start]
    return recorder, sums.result(), excerpt, streams * length


def decode(chars: list[str], ids: torch.Tensor) -> str:
    """The text of `ids`, through a code-point table (one gather, no Python loop over the characters); a
    reserved symbol (<eod>, <unk>) is one U+FFFD, so the text keeps one character per id."""
    points = torch.tensor([ord(c) if len(c) == 1 else 0xFFFD for c in chars], dtype=torch.int32)[ids.long()]
    return points.numpy().tobytes().decode("utf-32-le")


def analyse(
    run_dir: Path,
    which: str,
    source: TextSource,
    *,
    feature_specs: list[str] | None = None,
    top: int = 5,
    page_chars: int = 2000,
    device: torch.device | str = "cpu",
) -> NeuronReport:
    """Rank a run's hidden units by how well they track each feature of a text (a split, a file or a string)."""
    started = time.perf_counter()
    device = torch.device(device)
    scored = load_text_to_score(run_dir, which, source, device=device)
    decoded = decode(scored.vocab.chars, scored.ids)
    features = compute(feature_specs or [], decoded)
    matrix = torch.stack([f.values for f in features], dim=1)
    recorder, r, excerpt, read = record(
        scored.model,
        scored.ids,
        matrix,
        batch_size=scored.streams,
        num_steps=scored.checkpoint.config.train.num_steps,
        device=device,
        page_chars=page_chars,
    )
    ranked = []
    for k, feature in enumerate(features):
        best = [] if feature.constant else r[k].abs().argsort(descending=True)[:top].tolist()
        ranked.append(Ranked(feature, [(recorder.units[u], float(r[k, u])) for u in best]))
    cfg = scored.model.config
    return NeuronReport(
        Path(run_dir),
        which,
        scored.checkpoint.train_state.epoch,
        scored.source,
        f"{cfg.kind} {cfg.num_layers}x{cfg.hidden_size}",
        read,
        recorder.units,
        ranked,
        decoded[: len(excerpt)],
        excerpt,
        time.perf_counter() - started,
    )


def page_data(report: NeuronReport) -> dict:
    """The data of the self-contained page (ui/pages renders it): the excerpt
    coloured by a chosen unit, the feature underlined, a unit picker."""
    index = {u: k for k, u in enumerate(report.units)}
    chosen = {u for r in report.ranked for u, _ in r.top}
    n = len(report.excerpt)
    data = {
        "title": f"{report.run_dir.name}: neurons on {report.source}",
        **{k: v for k, v in report.to_dict().items() if k != "features"},
        "text": list(report.excerpt),
        "features": [
            {
                "name": r.feature.name,
                "description": r.feature.description,
                "kind": r.feature.kind,
                "constant": r.feature.constant,
                "values": r.feature.values[:n].long().tolist(),
                "top": [{"unit": u.label, "r": corr} for u, corr in r.top],
            }
            for r in report.ranked
        ],
        "values": {
            u.label: [round(v, 3) for v in report.excerpt_values[:, index[u]].tolist()]
            for u in sorted(chosen, key=lambda u: index[u])
        },
    }
    return data
