"""The table that benchmarks/gpu_check.py prints at the end, from its figures.json (plain text, fixed width)."""

from __future__ import annotations


def render(figures: dict) -> str:
    steps = figures["steps"]
    fast = steps.get("fast", {})
    where = "the CPU (--smoke: tiny sizes, the figures mean nothing)" if figures["smoke"] else fast.get("gpu", "a GPU")
    lines = [f"charlm GPU check on {where}, torch {fast.get('torch', '?')}", f"command: {figures['command']}", "",
             f"{'step':<9}{'status':<9}{'seconds':>16}  note"]
    for name, step in steps.items():
        spent = f"{step['seconds']:.0f} / {step['limit']:.0f}" if step.get("limit") else "-"
        lines.append(f"{name:<9}{step['status']:<9}{spent:>16}  {step.get('note') or ''}".rstrip())
    for section in (correct_lines, fast_lines, race_lines, ptb_lines):
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


def fast_lines(steps: dict) -> list[str]:
    fast = steps.get("fast", {})
    if "train" not in fast:
        return ["fast: no results"]
    peaks = " / ".join(f"{v:,.4g}" for v in fast["peak_tflops"].values())
    lines = [f"fast (LSTM, batch {fast['batch_size']} x {fast['num_steps']} steps; MFU against the matmul peak "
             "measured for the dtype)", f"  matmul peak fp32 / tf32 / bf16: {peaks} TFLOP/s; nn.LSTM under bf16 "
             f"autocast computes in {fast['lstm_autocast_dtype']}"]
    lines += [f"  train {name:<34}{describe_rate(run)}" for name, run in fast["train"].items()]
    lines.append(f"  eval {fast['eval_model']:<35}{describe_rate(fast['eval'])}")
    generation = fast["generation"]
    if "error" in generation:
        return [*lines, f"  generation: failed: {generation['error']}"]
    for name, value in generation.items():
        lines.append(f"  {name:<40}{value:>14,.3f}" if isinstance(value, float) else f"  {name:<40}{value!s:>14}")
    return lines


def race_lines(steps: dict) -> list[str]:
    sides = [steps.get("gpt", {}), steps.get("lstm", {})]
    if not any("checkpoints" in side for side in sides):
        return ["race: no results"]
    points = next(side["checkpoints"] for side in sides if "checkpoints" in side)

    def row(label: str, cell) -> str:
        return f"  {label:<26}" + "".join(f"{cell(side):>24}" for side in sides)

    rows = ["race: val loss (nats/char) on the whole val split, by training time",
            row("", lambda side: side.get("model", "-"))]
    rows += [row(f"at {mark} s", lambda side, mark=mark: _at(side, mark)) for mark in points["val_at"]]
    rows += [row(f"first at or below {target}", lambda side, target=target: _to(side, target))
             for target in points["time_to"]]
    rows += [row("best", _best), row("training chars/s", _rate)]
    notes = [side["note"] for side in sides if side.get("note")]
    return rows + [f"  ({note})" for note in notes]


def _at(side: dict, mark: str) -> str:
    hit = side.get("checkpoints", {}).get("val_at", {}).get(mark)
    return f"{hit['val_loss']:.4f} ({hit['train_seconds']:.1f} s)" if hit else "-"


def _to(side: dict, target: str) -> str:
    if "checkpoints" not in side:
        return "-"
    seconds = side["checkpoints"]["time_to"].get(target)
    return f"{seconds:.1f} s" if seconds is not None else "not reached"


def _best(side: dict) -> str:
    best = side.get("checkpoints", {}).get("best")
    return f"{best['val_loss']:.4f} ({best['train_seconds']:.1f} s)" if best else "-"


def _rate(side: dict) -> str:
    return f"{side['chars_per_s']:,.0f}" if side.get("chars_per_s") else "-"


def ptb_lines(steps: dict) -> list[str]:
    ptb = steps.get("ptb", {})
    if "test_bpc" not in ptb:
        return [f"ptb: no test score ({ptb.get('status', 'not run')})"]
    val = ptb["checkpoints"]["best"]
    return [f"ptb-char (configs/ptb-char-gpu.yaml, {ptb.get('budget', 0):g} s budget): test {ptb['test_bpc']:.4f} "
            f"bits/char, best val {val['val_loss'] / 0.6931471805599453:.4f} bits/char, "
            f"{ptb.get('epochs_done', 0):.2f} epochs (AWD-LSTM: 1.175 after days on a GPU)"]


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
