"""Run folders at a glance: a summary of each one's config, metrics and status, for `runs`, `info` and `plot`.

A damaged bookkeeping file (config.yaml, status.json, metrics.jsonl) makes that run show as "damaged",
with what is damaged named; it never stops the other runs from being listed. A search whose winner has not
trained yet (no config.yaml in the run folder) is a run too: shown from search.json and search.jsonl, running
while it holds the folder's lock, interrupted (to continue with --resume) when not.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

from charlm.errors import CharlmError
from charlm.files import safeyaml
from charlm.store import run_lock, search_log
from charlm.store.layout import BEST, CONFIG, LAST, METRICS, SEARCH_LOG, SEARCH_STATE, STATUS
from charlm.store.run_dir import RunDir, runs_root
from charlm.store.run_log import DamagedFile
from charlm.units import perplexity

SPARKS = "▁▂▃▄▅▆▇█"


def summarize(run_dir: Path) -> dict:
    """Corpus, model, epochs done, best loss, wall time and status of one run folder."""
    run = RunDir(Path(run_dir))
    if search_log.is_searched(run.path) and not (run.path / CONFIG).exists():
        return summarize_search(run)
    damaged: list[str] = []
    config = _read_config(run, damaged)
    lines, skipped = _read_metrics(run, damaged)
    records = [r for r in lines if "event" not in r]
    parent = next((r for r in lines if r.get("event") == "init_from"), None)
    monitored = "val_loss" if any("val_loss" in r for r in records) else "train_loss"
    best = min(records, key=lambda r: r.get(monitored, math.inf)) if records else None
    last = records[-1] if records else {}
    complete = bool(records and config) and (last["epoch"] >= config["epochs"] or bool(last.get("stopped")))
    status = run.status.state(complete=complete)
    if status == "damaged":
        damaged.append(STATUS)
    config = config or {"corpus": "?", "model": "?", "epochs": "?"}
    return {
        "name": run.path.name,
        "path": str(run.path),
        **config,
        "epochs_done": last.get("epochs_done", last.get("epoch", 0)),
        "stopped": last.get("stopped"),
        "monitored": monitored,
        "best_epoch": best["epoch"] if best else None,
        "best_epochs_done": best.get("epochs_done", best["epoch"]) if best else None,
        "best_loss": best[monitored] if best else math.nan,
        "best_ppl": perplexity(best[monitored]) if best else math.nan,
        "best_bpc": best[monitored] / math.log(2) if best else math.nan,
        "seconds": sum(r.get("seconds", 0.0) for r in records),
        "chars_per_s": last.get("chars_per_s", math.nan),
        "device": _device(run),
        "records": records,
        "skipped_lines": skipped,
        "damaged": damaged,
        "parent": parent,  # a fine-tuned run's init_from event
        "status": "damaged" if damaged else status,
    }


def summarize_search(run: RunDir) -> dict:
    """A search before its winner's run (summarize's keys): the rule's config from search.json, the trials'
    best val loss and their training time from search.jsonl; status running (its lock held) or interrupted."""
    damaged: list[str] = []
    try:
        base = search_log.read_state(run.path).get("base")
        config = _config_of(base if isinstance(base, dict) else {})
    except (CharlmError, KeyError, TypeError, ValueError):
        damaged.append(SEARCH_STATE)
        config = {"corpus": "?", "model": "?", "epochs": "?"}
    log = search_log.read_log(run.path)
    losses = [line["val_loss"] for line in log.lines if line.get("event") is None and line["val_loss"] is not None]
    spent = {line["trial"]: line["seconds"] for line in log.lines if line.get("event") is None}
    best = min(losses, default=math.nan)
    return {
        "name": run.path.name,
        "path": str(run.path),
        **config,
        "model": f"search: {config['model']}",
        "epochs_done": 0,
        "stopped": None,
        "monitored": "val_loss",
        "best_epoch": None,
        "best_epochs_done": None,
        "best_loss": best,
        "best_ppl": perplexity(best) if losses else math.nan,
        "best_bpc": best / math.log(2),
        "seconds": sum(spent.values()),
        "chars_per_s": math.nan,
        "device": str(config.get("device", "?")),
        "records": [],
        "skipped_lines": 0,
        "damaged": damaged,
        "parent": None,
        "status": "damaged" if damaged else "running" if run_lock.is_held(run.path) else "interrupted",
        "search_skipped": log.skipped,  # search.jsonl lines that are not charlm's or disagree with search.json
    }


def _read_config(run: RunDir, damaged: list[str]) -> dict | None:
    """What `runs` shows of config.yaml (corpus, model, epochs); None, and the file named in `damaged`, when
    it cannot be read as a charlm config."""
    try:
        config = _config_of(safeyaml.load_file(run / CONFIG))
        del config["device"]
        return config
    except (CharlmError, KeyError, TypeError, ValueError):
        damaged.append(CONFIG)
        return None


def _config_of(config: dict) -> dict:
    """What `runs` shows of a config (as a mapping): its corpus, model and epochs (and the device asked)."""
    model = config["model"]
    return {
        "corpus": str(config["data"]["corpus"]),
        "epochs": int(config["train"]["epochs"]),
        "model": f"{model['kind']} {model['num_layers']}x{model['hidden_size']}",
        "device": str(config["train"].get("device", "?")),
    }


def _read_metrics(run: RunDir, damaged: list[str]) -> tuple[list[dict], int]:
    """The lines of metrics.jsonl (events included) and the count of lines skipped."""
    try:
        return run.metrics.read_counted()
    except DamagedFile:
        damaged.append(METRICS)
        return [], 0


def _device(run: RunDir) -> str:
    try:
        return str(run.status.read().get("device", "?"))
    except DamagedFile:
        return "?"


def damaged_checkpoints(run: RunDir) -> dict[str, str]:
    """{file name: what is wrong} for best.pt / last.pt whose zip archive fails its CRC check (a check of the
    bytes that needs no torch; loading a checkpoint also checks its content's sha256)."""
    damaged = {}
    for name in (BEST, LAST):
        if (run.path / name).is_file():
            try:
                with zipfile.ZipFile(run.path / name) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    damaged[name] = f"its bytes do not match their CRC ({bad})"
            except (zipfile.BadZipFile, OSError) as e:
                damaged[name] = f"not a readable checkpoint ({type(e).__name__})"
    return damaged


def damage_notes(run: dict) -> list[str]:
    """One line per problem of a summarized run: damaged files and skipped metrics lines."""
    notes = [
        f"{run['path']}/{name} is damaged or not charlm's (shown as ?): the checkpoints are not affected"
        for name in run["damaged"]
    ]
    if run["skipped_lines"]:
        notes.append(f"{run['path']}/{METRICS}: skipped {run['skipped_lines']} line(s) that are not charlm records")
    if run.get("search_skipped"):
        notes.append(search_note(run["path"], run["search_skipped"]))
    return notes


def search_note(path: str, skipped: int) -> str:
    return (
        f"{path}/{SEARCH_LOG}: skipped {skipped} line(s) that are not the search's (edited, damaged, or not "
        "agreeing with search.json): they are neither shown nor trained from"
    )


def parent_name(parent: dict | None) -> str:
    """A fine-tuned run's parent, short: its folder's name (and :last when it started from last.pt)."""
    if not parent:
        return ""
    return Path(parent["path"]).name + (":last" if parent["checkpoint"] == "last" else "")


def describe_parent(parent: dict) -> str:
    """One line for `charlm info`: where a fine-tuned run's weights came from."""
    what = "model folder" if parent["source"] == "model" else f"run ({parent['checkpoint']}.pt)"
    best = parent.get("best_val_loss")
    loss = f", best val loss {best:.4f} ({best / math.log(2):.3f} bits/char)" if best is not None else ""
    new = parent["new_chars"]
    return (
        f"fine-tuned from {parent['path']}, a {what} trained on {parent['corpus']} (sha256 "
        f"{parent['corpus_sha256'][:12]}…){loss}; vocabulary {parent['parent_vocab_size']:,} + {len(new):,} "
        f"new characters{': ' + repr(new[:20]) if new else ''}"
    )


def list_runs(root: Path | None = None) -> list[dict]:
    """Every run folder under `root` (default runs_root())."""
    root = Path(root) if root is not None else runs_root()
    folders = sorted({p.parent for name in (CONFIG, SEARCH_STATE) for p in root.glob(f"*/{name}")})
    return [summarize(folder) for folder in folders]


def sparkline(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] if math.isfinite(v) else " " for v in values)
