"""Loss curves as a picture: train and val loss against epoch and wall time, the LR, the best epoch.

matplotlib is an optional extra (pip install 'charlm[plot]'); nothing else in charlm needs it.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from charlm.errors import UsageError
from charlm.store.run_info import summarize
from charlm.store.search_log import is_searched, read_lines, trials, winner
from charlm.store.targets import check_output_file, write_output_file


def plot_runs(run_dirs: list[Path], out: Path, *, force: bool = False):
    """Draw every run (overlaid) into `out` (PNG, published atomically) and return the matplotlib figure. `out`
    is checked first (targets.check_output_file: loss.png inside a run folder, or a file outside charlm's
    folders; a file charlm did not write only with `force`)."""
    check_output_file(out, option="--out", force=force, plot=True)
    plt = _pyplot()
    runs = [summarize(d) for d in run_dirs]
    searches = [(run["name"], read_lines(Path(run["path"]))) for run in runs if is_searched(Path(run["path"]))]
    panels = 3 + bool(searches)  # a run chosen by --search: its rungs too
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5), layout="constrained")
    by_epoch, by_time, lr = axes[:3]
    for run in runs:
        records = run["records"]
        if not records:
            raise UsageError(f"run {run['path']} has no finished epoch yet: nothing to plot")
        label = f"{run['name']} ({run['model']})"
        epochs = [r.get("epochs_done", r["epoch"]) for r in records]  # evals inside an epoch fall in between
        clock = _cumulative([r.get("seconds", 0.0) for r in records])
        (line,) = by_epoch.plot(epochs, [r["train_loss"] for r in records], label=f"{label} train")
        by_time.plot(clock, [r["train_loss"] for r in records], color=line.get_color(), label=f"{label} train")
        if run["monitored"] == "val_loss":
            val = [r["val_loss"] for r in records]
            by_epoch.plot(epochs, val, "--", color=line.get_color(), label=f"{label} val")
            by_time.plot(clock, val, "--", color=line.get_color(), label=f"{label} val")
        by_epoch.plot(
            [run["best_epochs_done"]],
            [run["best_loss"]],
            "*",
            markersize=12,
            color=line.get_color(),
            label=f"best {run['monitored'][:-5]} {run['best_loss']:.3f} (ppl {run['best_ppl']:.3g}), "
            f"epoch {run['best_epoch']}",
        )
        lr.plot(epochs, [r["lr"] for r in records], color=line.get_color(), label=label)
    for axis, xlabel in ((by_epoch, "epoch"), (by_time, "wall time (s)")):
        axis.set_xlabel(xlabel)
        axis.set_ylabel("loss (nats/char)")
        bits = axis.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
        bits.set_ylabel("bits/char")
        axis.grid(alpha=0.3)
    by_epoch.legend(fontsize=7)
    by_time.legend(fontsize=7)
    lr.set_xlabel("epoch")
    lr.set_ylabel("learning rate (end of epoch)")
    lr.grid(alpha=0.3)
    if searches:
        _draw_rungs(axes[3], searches)
    corpora = ", ".join(sorted({r["corpus"] for r in runs}))
    models = ", ".join(sorted({r["model"] for r in runs}))
    fig.suptitle(f"{corpora} · {models}")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90, metadata={"Software": "charlm"})  # how targets knows charlm wrote it
    plt.close(fig)
    write_output_file(out, png.getvalue(), option="--out", force=force, plot=True)
    return fig


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no screen needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("charlm plot needs matplotlib: pip install 'charlm[plot]'") from None
    return plt


def _cumulative(values: list[float]) -> list[float]:
    total, out = 0.0, []
    for v in values:
        total += v
        out.append(total)
    return out


def _draw_rungs(axis, searches: list[tuple[str, list[dict]]]) -> None:
    """--search's trials: each one's val loss at each rung against its training time; x where it was pruned,
    a star on the winner."""
    for name, lines in searches:
        won = winner(lines)
        for number, all_steps in sorted(trials(lines).items()):
            steps = [s for s in all_steps if s["val_loss"] is not None]  # a diverged rung has none
            if not steps:
                continue
            seconds, losses = [s["seconds"] for s in steps], [s["val_loss"] for s in steps]
            best = won is not None and won["trial"] == number
            (line,) = axis.plot(seconds, losses, "o-", linewidth=2.5 if best else 1, alpha=1 if best else 0.6)
            line.set_label(f"{name} trial {number}" + (" (winner)" if best else ""))
            if steps[-1].get("pruned"):
                axis.plot(seconds[-1:], losses[-1:], "x", color="black", markersize=9)
            if best:
                axis.plot(seconds[-1:], losses[-1:], "*", color=line.get_color(), markersize=14)
    axis.set_xlabel("trial training time (s)")
    axis.set_ylabel("val loss at each rung (nats/char)")
    axis.set_title("search: rungs (x: pruned)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
