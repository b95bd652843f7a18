"""The table that benchmarks/gpu_check.py prints at the end, from its figures.json (plain text, fixed width)."""

from __future__ import annotations

NATS_PER_BIT = 0.6931471805599453
TRAINING = (
    ("s60", "tiny shakespeare, 60 s"),
    ("s3m", "tiny shakespeare, 3 min"),
    ("auto3m", "--budget 3m, beside s3m"),
    ("ptb", "ptb-char, 5 min"),
)


def render(figures: dict) -> str:
    steps = figures["steps"]
    device = steps.get("sweep", {}) or steps.get("fast", {})
    smoke = "the CPU (--smoke: tiny sizes, the figures mean nothing)"
    where = smoke if figures["smoke"] else device.get("gpu", "a GPU")
    lines = [
        f"charlm GPU check on {where}, torch {device.get('torch', '?')}",
        f"command: {figures['command']}",
        "",
        f"{'step':<10}{'status':<9}{'seconds':>16}  note",
    ]
    for name, step in steps.items():
        spent = f"{step['seconds']:.0f} / {step['limit']:.0f}" if step.get("limit") else "-"
        lines.append(f"{name:<10}{step['status']:<9}{spent:>16}  {step.get('note') or ''}".rstrip())
    for section in (correct_lines, fp16_lines, sweep_lines, training_lines, fast_lines, race_lines):
        lines += ["", *section(steps)]
    return "\n".join(lines)


def correct_lines(steps: dict) -> list[str]:
    step = steps.get("correct", {})
    if "cases" not in step:
        return ["correct: no results"]
    lines = [f"correct (pytest -m gpu): {step['passed']} passed, {step['failed']} failed, {step['skipped']} skipped"]
    for name, case in step["cases"].items():
        shown = ", ".join(f"{k} {v}" for k, v in case["properties"].items())
        lines.append(f"  {case['outcome']:<8}{name}{'  (' + shown + ')' if shown else ''}")
        if case["outcome"] == "failed" and case["message"]:
            lines.append(f"          {' '.join(case['message'].split())[:150]}")
    return lines


def fp16_lines(steps: dict) -> list[str]:
    fp16 = steps.get("fp16", {})
    if "skipped" in fp16:
        return [f"fp16 against fp32: not run: {fp16['skipped'][:150]}"]
    if "fp16_val_loss" not in fp16:
        return [f"fp16 against fp32: no results ({fp16.get('status', 'not run')})"]
    return [
        f"fp16 against fp32 (LSTM 2x256, Markov text): best val fp32 {fp16['fp32_val_loss']:.4f}, fp16 "
        f"{fp16['fp16_val_loss']:.4f} ({fp16['relative_difference']:+.2%}; within "
        f"{fp16['tolerance']:.0%}: {'yes' if fp16['within_tolerance'] else 'NO'})"
    ]


def sweep_lines(steps: dict) -> list[str]:
    sweep = steps.get("sweep", {})
    if "models" not in sweep:
        return [f"sweep: no results ({sweep.get('status', 'not run')})"]
    lines = [
        f"sweep: bf16 training by batch ({sweep['num_steps']} steps; MFU against "
        f"{sweep['peak_tflops_bf16']:,.4g} TFLOP/s measured)"
    ]
    for name, model in sweep["models"].items():
        for batch, run in model["batches"].items():
            lines.append(f"  {name:<14}batch {batch:>4}  {describe_rate(run)}")
        where = model["saturates_at"]
        lines.append(f"  {name:<14}" + (f"saturates at batch {where}" if where else "still gaining at the last batch"))
    return lines


def training_lines(steps: dict) -> list[str]:
    """Each training run: model, speed (its share of the card), val loss at its marks, time to targets, best."""
    lines = ["training runs (val loss in nats/char on the val split, by training time; from metrics.jsonl)"]
    for name, label in TRAINING:
        run = steps.get(name, {})
        if "checkpoints" not in run:
            lines.append(
                f"  {name:<7}{label}: no results ({run.get('status', 'not run')}"
                f"{': ' + run['note'] if run.get('note') else ''})"
            )
            continue
        points = run["checkpoints"]
        at = ", ".join(f"{v['val_loss']:.4f} at {m} s" if v else f"- at {m} s" for m, v in points["val_at"].items())
        to = ", ".join(
            f"{t} at {s:.0f} s" if s is not None else f"{t} not reached" for t, s in points["time_to"].items()
        )
        best = points["best"]
        lines.append(
            f"  {name:<7}{label}: {run.get('model', '?')}, {run.get('chars_per_s') or 0:,.0f} chars/s, "
            f"{run.get('epochs_done') or 0:.1f} epochs"
        )
        lines.append(
            f"         val {at}; {to}; best {best['val_loss']:.4f} at {best['train_seconds']:.0f} s"
            if best
            else f"         val {at}; {to}"
        )
        if name == "ptb" and run.get("test_bpc") is not None:
            lines.append(
                f"         test {run['test_bpc']:.4f} bits/char (best checkpoint, whole test split; "
                f"best val {best['val_loss'] / NATS_PER_BIT:.4f}; AWD-LSTM 1.175 after days)"
            )
    return lines


def fast_lines(steps: dict) -> list[str]:
    fast = steps.get("fast", {})
    if "train" not in fast:
        return []
    peaks = " / ".join(f"{v:,.4g}" for v in fast["peak_tflops"].values())
    lines = [
        f"fast (LSTM, batch {fast['batch_size']} x {fast['num_steps']} steps; MFU against the matmul peak "
        "measured for the dtype)",
        f"  matmul peak fp32 / tf32 / bf16: {peaks} TFLOP/s; nn.LSTM under bf16 "
        f"autocast computes in {fast['lstm_autocast_dtype']}",
    ]
    lines += [f"  train {name:<34}{describe_rate(run)}" for name, run in fast["train"].items()]
    lines.append(f"  eval {fast['eval_model']:<35}{describe_rate(fast['eval'])}")
    generation = fast["generation"]
    if "error" in generation:
        return [*lines, f"  generation: failed: {generation['error']}"]
    for name, value in generation.items():
        lines.append(f"  {name:<40}{value:>14,.3f}" if isinstance(value, float) else f"  {name:<40}{value!s:>14}")
    return lines


def race_lines(steps: dict) -> list[str]:
    """The GPT baseline (optional step gpt) beside the 3-minute LSTM, at the same marks."""
    gpt = steps.get("gpt", {})
    if "checkpoints" not in gpt:
        return []
    sides = [gpt, steps.get("s3m", {})]

    def row(label: str, cell) -> str:
        return f"  {label:<26}" + "".join(f"{cell(side):>24}" for side in sides)

    rows = [
        "race: val loss (nats/char) on the whole val split, by training time",
        row("", lambda side: side.get("model", "-")),
    ]
    rows += [row(f"at {mark} s", lambda side, mark=mark: _at(side, mark)) for mark in gpt["checkpoints"]["val_at"]]
    rows += [row("best", _best), row("training chars/s", _rate)]
    return rows


def _at(side: dict, mark: str) -> str:
    hit = side.get("checkpoints", {}).get("val_at", {}).get(mark)
    return f"{hit['val_loss']:.4f} ({hit['train_seconds']:.1f} s)" if hit else "-"


def _best(side: dict) -> str:
    best = side.get("checkpoints", {}).get("best")
    return f"{best['val_loss']:.4f} ({best['train_seconds']:.1f} s)" if best else "-"


def _rate(side: dict) -> str:
    return f"{side['chars_per_s']:,.0f}" if side.get("chars_per_s") else "-"


def describe_rate(result: dict) -> str:
    """'N chars/s', with the MFU or the deterministic slowdown when there is one, or the error."""
    if "error" in result:
        return f"failed: {result['error']}"
    text = f"{result['chars_per_s']:,.0f} chars/s"
    if "streams" in result:
        text += f" ({result['streams']} streams)"
    if "mfu" in result:
        text += f", MFU {result['mfu']:.3f}"
    if "slowdown" in result:
        text += f", {result['slowdown']:.2f}x slower than without"
    return text
