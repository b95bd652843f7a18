"""The measurements behind `charlm train --budget` (charlm/autosize/): a sweep of model shapes per corpus, and
the table of auto against the lyrics default and the hand-tuned configs.

    python benchmarks/autosize_sweep.py sweep [--only NAME,...] [--out benchmarks/autosize_sweep.jsonl]
    python benchmarks/autosize_sweep.py table [--budgets 2m,10m] [--only ...] [--out ...]
    python benchmarks/autosize_sweep.py show  [--out ...]       # the Markdown tables of what is recorded
    python benchmarks/autosize_sweep.py sweep --smoke            # tiny, seconds: what the test suite runs

Every arm is one `charlm.train` run stopped by a budget of training time (evals excluded), scored on the
whole val split (the protocol of `charlm perplexity`). Arms:
  shape    one LSTM shape on one corpus, on the shared recipe below (the sweep that the rule comes from)
  default  the lyrics default (`charlm train --corpus X`, jaychou-lstm) with the budget as train.time_budget
  hand     a hand-tuned config from configs/ with the budget as train.time_budget
  auto     `charlm train --corpus X --budget B` (autosize.plan)
wikitext-2 (the tokenised valid + test text, as a folder corpus) is kept out of the sweep: the honest test.
Each result is appended to --out as one JSON line as soon as it is measured; arms already there are skipped,
so an interrupted sweep continues where it stopped. Time it on a quiet machine: nothing else running.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import charlm  # noqa: E402  (the repository's charlm, not an installed one)
from charlm.autosize.rule import format_seconds  # noqa: E402
from charlm.config import parse_duration  # noqa: E402

SWEEP_CORPORA = ("jaychou", "timemachine", "tinyshakespeare", "ptb-char")
HELD_OUT = "wikitext-2"
# the shared recipe of the sweep's shapes: what the hand-tuned CPU configs have in common
RECIPE = (
    "model.kind=lstm",
    "model.input=embedding",
    "train.num_steps=64",
    "train.random_offset=true",
    "train.optimizer=adam",
    "train.schedule=cosine",
    "train.warmup_steps=100",
    "train.min_lr=0.0001",
    "train.clip_norm=1.0",
    "train.precision=bf16",
    "train.eval_batch_size=32",
)


def shape(
    hidden: int,
    layers: int = 1,
    dropout: float = 0.0,
    batch: int = 16,
    lr: float = 6e-3,
    embed: int | None = 64,
    smoothing: float = 0.0,
) -> tuple[str, ...]:
    """A shape's overrides on RECIPE; embed=None ties the embedding to the head (embed = hidden)."""
    tie = embed is None
    return (
        *RECIPE,
        f"model.hidden_size={hidden}",
        f"model.num_layers={layers}",
        f"model.dropout={dropout}",
        f"model.embed_size={hidden if tie else embed}",
        f"model.tie_weights={str(tie).lower()}",
        f"train.batch_size={batch}",
        f"train.lr={lr}",
        f"train.label_smoothing={smoothing}",
    )


# name: (corpus, overrides). Chosen around the hand-tuned shakespeare configs (1x512 at 106 s, 2x384 at
# 10 minutes): smaller and larger models, and dropout for the small corpora that a budget sees many times.
SHAPES = {
    "shakespeare-1x256": ("tinyshakespeare", shape(256)),
    "shakespeare-1x384": ("tinyshakespeare", shape(384)),
    "shakespeare-1x512": ("tinyshakespeare", shape(512)),
    "shakespeare-1x768": ("tinyshakespeare", shape(768, lr=4e-3)),
    "ptb-1x256": ("ptb-char", shape(256)),
    "ptb-1x384": ("ptb-char", shape(384)),
    "ptb-1x512": ("ptb-char", shape(512)),
    "ptb-1x768": ("ptb-char", shape(768, lr=4e-3)),
    "timemachine-1x256-d0.3": ("timemachine", shape(256, dropout=0.3)),
    "timemachine-1x512-d0.3": ("timemachine", shape(512, dropout=0.3)),
    "timemachine-1x512-d0.5": ("timemachine", shape(512, dropout=0.5)),
    "jaychou-1x256-d0.5": ("jaychou", shape(256, dropout=0.5, embed=None, smoothing=0.1)),
    "jaychou-1x512-d0.5": ("jaychou", shape(512, dropout=0.5, embed=None, smoothing=0.1)),
    "jaychou-1x128-d0.3": ("jaychou", shape(128, dropout=0.3, embed=None, smoothing=0.1)),
}
HAND = {"tinyshakespeare": {120: "shakespeare-cpu.yaml", 600: "shakespeare-cpu-10m.yaml"}}
SMOKE = (
    "data.max_chars=20000",
    "train.num_steps=16",
    "train.batch_size=8",
    "model.hidden_size=32",
    "model.embed_size=16",
    "model.tie_weights=false",
    "model.num_layers=1",
    "train.precision=fp32",
)


def corpus_source(name: str, data: Path) -> str:
    return str(data / "wikitext-2") if name == HELD_OUT else name


def run_arm(arm: dict, data: Path, work: Path, smoke: bool) -> dict:
    """Train one arm to its budget; its whole-split val loss, size and speed."""
    from charlm.model import CharRNN

    budget = arm["budget_s"]
    common = [
        f"data.corpus={corpus_source(arm['corpus'], data)}",
        f"train.time_budget={budget:g}s",
        "train.device=cpu",
        "sample.preview_every=0",
        *(SMOKE if smoke else ()),
    ]
    run_dir = work / f"{arm['key']}".replace("/", "-")
    started = time.perf_counter()
    if arm["kind"] == "auto":
        from charlm.autosize import auto

        config, plan = auto.auto_config(common[0].split("=", 1)[1], budget, overrides=common[1:])
        arm["plan"] = plan.why
    else:
        path = REPO / "configs" / arm["config"] if arm.get("config") else None
        config = charlm.load_config(
            path, [*arm.get("overrides", ()), "train.epochs=1000", *common] if arm["kind"] != "default" else common
        )
    summary = charlm.train(config, run_dir)
    vocab = json.loads((run_dir / "vocab.json").read_text(encoding="utf-8"))
    size = len(vocab["chars"]) if isinstance(vocab, dict) else len(vocab)
    loss = summary.final.get("val_loss", summary.best_loss)
    return {
        **arm,
        "val_loss": loss,
        "val_bpc": loss / math.log(2),
        "train_seconds": summary.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "epochs": summary.last.get("epochs_done"),
        "chars_per_s": summary.last.get("chars_per_s"),
        "stopped": summary.stopped,
        "parameters": CharRNN(config.model, size).num_parameters(),
        "vocab": size,
        "train_chars": summary.last.get("train_chars"),
        "model": {
            k: getattr(config.model, k)
            for k in ("kind", "hidden_size", "num_layers", "embed_size", "dropout", "tie_weights")
        },
        "batch_size": config.train.batch_size,
        "lr": config.train.lr,
    }


def sweep_arms(budget: float) -> list[dict]:
    arms = [
        {"key": f"{name}@{budget:g}s", "kind": "shape", "corpus": corpus, "overrides": list(sets), "budget_s": budget}
        for name, (corpus, sets) in SHAPES.items()
    ]
    return arms + default_arms([budget], SWEEP_CORPORA + (HELD_OUT,))


def default_arms(budgets: list[float], corpora) -> list[dict]:
    return [
        {"key": f"default-{c}@{b:g}s", "kind": "default", "corpus": c, "budget_s": b} for b in budgets for c in corpora
    ]


def table_arms(budgets: list[float]) -> list[dict]:
    corpora = SWEEP_CORPORA + (HELD_OUT,)
    arms = [{"key": f"auto-{c}@{b:g}s", "kind": "auto", "corpus": c, "budget_s": b} for b in budgets for c in corpora]
    for corpus, by_budget in HAND.items():
        arms += [
            {"key": f"hand-{corpus}@{b:g}s", "kind": "hand", "corpus": corpus, "config": by_budget[b], "budget_s": b}
            for b in budgets
            if b in by_budget
        ]
    return arms + default_arms(budgets, corpora)


def recorded(out: Path) -> dict:
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def measure(arms: list[dict], out: Path, data: Path, smoke: bool) -> None:
    done = recorded(out)
    with tempfile.TemporaryDirectory() as tmp:
        for arm in arms:
            if arm["key"] in done:
                continue
            result = run_arm(arm, data, Path(tmp), smoke)
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps(result, ensure_ascii=False) + "\n")
            print(
                f"{arm['key']}: val {result['val_loss']:.4f} nats/char, {result['parameters']:,} params, "
                f"{result['chars_per_s'] or 0:,.0f} chars/s, {result['epochs'] or 0:.2f} epochs",
                flush=True,
            )


def weights(row: dict) -> int:
    """The recurrent weights of an arm's model: what the rule sizes (charlm/autosize/rule.py)."""
    from charlm.autosize.rule import Shape

    m = row["model"]
    return Shape(m["hidden_size"], m["num_layers"], None if m["tie_weights"] else m["embed_size"]).weights()


@functools.cache
def train_chars(corpus: str, data: Path) -> int:
    from charlm.config import DataConfig
    from charlm.data import load_corpus

    return len(load_corpus(DataConfig(corpus=corpus_source(corpus, data))).train)


def seen(row: dict, data: Path) -> float:
    """Characters trained on: epochs x the train split (the last epoch's chars/s is a short window's)."""
    return (row["epochs"] or 0) * train_chars(row["corpus"], data)


def show(out: Path, data: Path) -> str:
    """The sweep's shapes by corpus, budget and val loss, with what the rule reads: characters seen per
    recurrent weight, weights per train character, epochs."""
    rows = [
        "| corpus | arm | budget | LSTM | dropout | mean chars/s | chars seen / weight | weights / train char | "
        "epochs | val loss (nats/char) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    results = sorted(
        (r for r in recorded(out).values() if r["kind"] == "shape"),
        key=lambda r: (r["corpus"], r["budget_s"], r["val_loss"]),
    )
    for r in results:
        m, chars = r["model"], seen(r, data)
        rows.append(
            f"| {r['corpus']} | {r['key'].split('@')[0]} | {r['budget_s']:g} s | "
            f"{m['num_layers']}x{m['hidden_size']} | {m['dropout']:g} | {chars / r['train_seconds']:,.0f} | "
            f"{chars / weights(r):.1f} | {weights(r) / train_chars(r['corpus'], data):.1f} | "
            f"{r['epochs'] or 0:.1f} | {r['val_loss']:.4f} |"
        )
    return "\n".join(rows)


def compare(out: Path) -> str:
    """auto against the hand-tuned config and the lyrics default, per corpus and budget (val loss, nats/char)."""
    done = recorded(out)
    rows = [
        "| corpus | budget | auto: model | auto | hand-tuned | lyrics default | auto vs hand | auto vs default |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    budgets = sorted({r["budget_s"] for r in done.values() if r["kind"] == "auto"})
    for corpus in SWEEP_CORPORA + (HELD_OUT,):
        for b in budgets:
            auto, hand, default = (done.get(f"{kind}-{corpus}@{b:g}s") for kind in ("auto", "hand", "default"))
            if auto is None:
                continue
            m = auto["model"]
            cell = [f"{row['val_loss']:.4f}" if row else "-" for row in (auto, hand, default)]
            versus = [
                f"{100 * (auto['val_loss'] / row['val_loss'] - 1):+.1f}%" if row else "-" for row in (hand, default)
            ]
            name = f"{corpus} (held out)" if corpus == HELD_OUT else corpus
            rows.append(
                f"| {name} | {format_seconds(b)} | {m['num_layers']}x{m['hidden_size']}, "
                f"dropout {m['dropout']:g}, batch {auto['batch_size']} | **{cell[0]}** | {cell[1]} | "
                f"{cell[2]} | {versus[0]} | {versus[1]} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("sweep", "table", "show"))
    parser.add_argument("--budgets", default="2m", help="comma-separated budgets (sweep: the first only)")
    parser.add_argument("--only", default="", help="comma-separated substrings of the arm keys to run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "autosize_sweep.jsonl")
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("CHARLM_DATA_DIR", REPO.parent / "shared" / "data"))
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2-second budgets, 20,000 chars")
    args = parser.parse_args()
    os.environ.setdefault("CHARLM_DATA_DIR", str(args.data))
    if args.what == "show":
        print(show(args.out, args.data) + "\n\n" + compare(args.out))
        return
    budgets = [2.0] if args.smoke else [parse_duration(b, "--budgets") for b in args.budgets.split(",")]
    arms = sweep_arms(budgets[0]) if args.what == "sweep" else table_arms(budgets)
    wanted = [w for w in args.only.split(",") if w]
    arms = [a for a in arms if not wanted or any(w in a["key"] for w in wanted)]
    measure(arms, args.out, args.data, args.smoke)
    print(show(args.out, args.data) + "\n\n" + compare(args.out))


if __name__ == "__main__":
    main()
