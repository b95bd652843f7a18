"""Run folders at a glance: their state and a summary of their metrics, for `runs`, `info` and `plot`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import yaml

from charlm import checkpoint as ckpt
from charlm.evaluate import perplexity

STATUS = "status.json"
SPARKS = "▁▂▃▄▅▆▇█"


def write_status(run_dir: Path, state: str, **extra) -> None:
    """running (with our pid) / finished / interrupted: what `charlm runs` shows."""
    ckpt.atomic_write_text(Path(run_dir) / STATUS, json.dumps({"state": state, "pid": os.getpid(), **extra}))


def run_state(run_dir: Path, complete: bool = False) -> str:
    """`complete`: all configured epochs are in metrics.jsonl (for folders written before status.json)."""
    path = Path(run_dir) / STATUS
    if not path.exists():
        if not (Path(run_dir) / ckpt.LAST).exists():
            return "empty"
        return "finished" if complete else "interrupted"
    status = json.loads(path.read_text(encoding="utf-8"))
    if status["state"] == "running" and not _alive(status.get("pid")):
        return "interrupted"  # killed without a chance to say so
    return status["state"]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def summarize(run_dir: Path) -> dict:
    """Corpus, model, epochs done, best loss, wall time and state of one run folder."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / ckpt.CONFIG).read_text(encoding="utf-8"))
    records = [r for r in ckpt.read_metrics(run_dir) if "event" not in r]
    monitored = "val_loss" if any("val_loss" in r for r in records) else "train_loss"
    best = min(records, key=lambda r: r[monitored]) if records else None
    model = config["model"]
    status_path = run_dir / STATUS
    status = json.loads(status_path.read_text(encoding="utf-8")) if status_path.exists() else {}
    return {
        "name": run_dir.name, "path": str(run_dir), "corpus": config["data"]["corpus"],
        "model": f"{model['kind']} {model['num_layers']}x{model['hidden_size']}",
        "epochs_done": records[-1].get("epochs_done", records[-1]["epoch"]) if records else 0,
        "epochs": config["train"]["epochs"], "stopped": records[-1].get("stopped") if records else None,
        "monitored": monitored, "best_epoch": best["epoch"] if best else None,
        "best_epochs_done": best.get("epochs_done", best["epoch"]) if best else None,
        "best_loss": best[monitored] if best else math.nan,
        "best_ppl": perplexity(best[monitored]) if best else math.nan,
        "best_bpc": best[monitored] / math.log(2) if best else math.nan,
        "seconds": sum(r.get("seconds", 0.0) for r in records),
        "chars_per_s": records[-1].get("chars_per_s", math.nan) if records else math.nan,
        "device": status.get("device", "?"), "records": records,
        "state": run_state(run_dir, complete=bool(records) and (records[-1]["epoch"] >= config["train"]["epochs"]
                                                      or bool(records[-1].get("stopped")))),
    }


def list_runs(root: Path = ckpt.RUNS_ROOT) -> list[dict]:
    folders = sorted(p.parent for p in Path(root).glob(f"*/{ckpt.CONFIG}"))
    return [summarize(folder) for folder in folders]


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] if math.isfinite(v) else " " for v in values)
