"""`--search` against the auto-sizing rule: for each corpus and budget, train the rule's choice and a search in the
same budget, and print both val losses and the relative difference (JSON to --out, and a table).

One corpus can be `markov`: a held-out synthetic text whose entropy is known exactly. It is drawn from a random
order-2 Markov chain over 60 symbols (letters, digits, punctuation and space): each pair of previous symbols has
its own next-symbol distribution, drawn once from a Dirichlet(0.1) (peaked: a few likely successors each). The
chain's stationary distribution pi over pairs is found by power iteration, and its entropy rate is exactly
H = sum over pairs (a, b) of pi(a, b) x H(P(. | a, b)) nats/char: no model can score below it on text drawn from
the chain (up to the sampling noise of a finite val split), so val loss - H is what a model has not learned.

    python benchmarks/search_vs_rule.py --corpora tinyshakespeare,timemachine,markov --budgets 4m,10m
    python benchmarks/search_vs_rule.py --smoke          # seconds: tiny settings, to check the script runs

Uses charlm through its library (autosize.auto, autosize.search, training.setup); runs go under --work.
Do not time on a busy machine: the budgets are wall-clock training time.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SYMBOLS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234 .,"  # 60
SMOKE = ["model.hidden_size=16", "model.embed_size=16", "train.epochs=1", "data.max_chars=20000"]
SMOKE_SEARCH = ["search.trials=3", "search.rungs=2", "search.reduction=2", "search.min_passes=0"]


def markov_chain(seed: int = 0, order: int = 2, alpha: float = 0.1) -> np.ndarray:
    """P[a, b, c]: the probability of symbol c after a, b (each row a Dirichlet(alpha) draw)."""
    rng = np.random.default_rng(seed)
    n = len(SYMBOLS)
    assert order == 2, "the entropy below is written for pairs of previous symbols"
    return rng.dirichlet(np.full(n, alpha), size=(n, n))


def entropy_rate(p: np.ndarray, iterations: int = 2000) -> float:
    """The chain's entropy rate in nats/char: the stationary pair distribution (power iteration), weighting the
    entropy of each pair's next-symbol distribution."""
    n = p.shape[0]
    pi = np.full((n, n), 1.0 / (n * n))
    for _ in range(iterations):
        nxt = np.einsum("ab,abc->bc", pi, p)  # pair (a, b) -> pair (b, c)
        if np.abs(nxt - pi).sum() < 1e-13:
            pi = nxt
            break
        pi = nxt
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=2)
    return float((pi * h).sum())


def sample(p: np.ndarray, chars: int, seed: int = 1) -> str:
    """`chars` symbols drawn from the chain (started from a uniform pair; the chain mixes within a few symbols)."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(p, axis=2)
    cdf[..., -1] = 1.0
    n = p.shape[0]
    a, b = rng.integers(n), rng.integers(n)
    draws = rng.random(chars)
    out = np.empty(chars, dtype=np.int64)
    for i in range(chars):
        c = int(np.searchsorted(cdf[a, b], draws[i], side="right"))
        out[i], a, b = c, b, c
    return "".join(SYMBOLS[i] for i in out)


def model_loss(p: np.ndarray, text: str) -> float:
    """The chain's own mean loss on `text` (nats/char), from its third symbol on: close to entropy_rate."""
    ids = np.array([SYMBOLS.index(ch) for ch in text])
    return float(-np.log(p[ids[:-2], ids[1:-1], ids[2:]]).mean())


def make_markov(work: Path, chars: int) -> tuple[Path, float]:
    chain = markov_chain()
    path = work / "markov.txt"
    if not path.exists():
        path.write_text(sample(chain, chars), encoding="utf-8")
    return path, entropy_rate(chain)


def val_loss(summary) -> float:
    return float(summary.final.get("val_loss", summary.best_loss))  # best.pt on the whole split when subsampled


def finished_val_loss(folder: Path) -> float | None:
    """A finished run's val loss as val_loss() takes it (its final line's, else its best eval's); None if the run
    is not there or did not finish: so an interrupted benchmark reruns only what it had not done."""
    status = folder / "status.json"
    if not status.exists() or json.loads(status.read_text()).get("state") != "finished":
        return None
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    final = next((line for line in reversed(lines) if line.get("event") == "final"), {})
    evals = [line["val_loss"] for line in lines if "val_loss" in line and "event" not in line]
    return float(final.get("val_loss", min(evals)))


def run_pair(corpus: str, budget_s: float, work: Path, overrides: list[str]) -> dict:
    """The rule, then the search, on one corpus and budget (a rule run finished before is read back)."""
    from charlm.autosize import search
    from charlm.autosize.auto import auto_config
    from charlm.events import SilentReporter
    from charlm.store import search_log
    from charlm.training.setup import train

    tag = f"{Path(corpus).stem}-{budget_s:g}s"
    cfg, plan = auto_config(corpus, budget_s, overrides)
    rule = finished_val_loss(work / f"rule-{tag}")
    if rule is None:
        rule = val_loss(train(cfg, work / f"rule-{tag}", SilentReporter()))
    cfg, plan = auto_config(corpus, budget_s, [*overrides, "search.enabled=true"])
    row = {"corpus": corpus, "budget_s": budget_s, "rule": plan.shape.label(), "passes": plan.epochs}
    if search.declines(cfg, plan):
        # --search declines and trains the rule's config, the same config and seed as the rule's arm (a test says
        # so): its figure is the rule's, not a second run of it
        return {**row, "rule_val_loss": rule, "search_val_loss": rule, "relative": 0.0, "winner": "declined"}
    folder = work / f"search-{tag}"
    searched = finished_val_loss(folder)
    if searched is None:
        found = search.start(cfg, plan, budget_s, folder, reporter=SilentReporter(), say=lambda line: None)
        searched = val_loss(found)
    won = search_log.winner(search_log.read_lines(folder))
    return {
        **row,
        "rule_val_loss": rule,
        "search_val_loss": searched,
        "relative": (searched - rule) / rule,  # < 0: the search did better
        "winner": describe_winner(won, search_log.read_state(folder)["rule"]),
    }


def describe_winner(won: dict, rule: dict) -> str:
    """The winning candidate as what it changed in the rule's choice ("rule" when nothing)."""
    changed = [f"{key} {won['params'][key]:.3g}" for key in rule if won["params"][key] != rule[key]]
    return f"t{won['trial']}: " + (", ".join(changed) if changed else "rule")


def table(rows: list[dict]) -> str:
    lines = [
        "| corpus | budget | reads | rule (shape) | rule val | search val | search vs rule | winner | entropy | gap |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h = r.get("entropy")
        gap = f"{r['rule_val_loss'] / h - 1:+.1%} / {r['search_val_loss'] / h - 1:+.1%}" if h else "-"
        lines.append(
            f"| {Path(r['corpus']).stem} | {r['budget_s']:g}s | {r['passes']:.1f} | {r['rule']} | "
            f"{r['rule_val_loss']:.4f} | {r['search_val_loss']:.4f} | {r['relative']:+.2%} | {r['winner']} | "
            f"{f'{h:.4f}' if h else '-'} | {gap} |"
        )
    return "\n".join(lines)


def main() -> None:
    from charlm.config import parse_duration

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", default="tinyshakespeare,timemachine,markov", help="names, paths or markov")
    parser.add_argument("--budgets", default="4m,10m")
    parser.add_argument("--work", type=Path, default=Path("runs/search_vs_rule"))
    parser.add_argument("--out", type=Path, default=Path("search_vs_rule.json"))
    parser.add_argument("--markov-chars", type=int, default=2_000_000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE on both arms")
    parser.add_argument("--smoke", action="store_true", help="tiny models and searches, 3-second budgets")
    args = parser.parse_args()
    budgets = [parse_duration(b) for b in ("3s" if args.smoke else args.budgets).split(",")]
    overrides = [*(SMOKE + SMOKE_SEARCH if args.smoke else []), *args.overrides]
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.corpora.split(","):
        entropy = None
        if name == "markov":
            path, entropy = make_markov(args.work, 20_000 if args.smoke else args.markov_chars)
            name = str(path)
        for budget in budgets:
            row = run_pair(name, budget, args.work, overrides)
            rows.append({**row, **({"entropy": entropy} if entropy is not None else {})})
            print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    assert all(math.isfinite(r["rule_val_loss"]) and math.isfinite(r["search_val_loss"]) for r in rows)


if __name__ == "__main__":
    main()
