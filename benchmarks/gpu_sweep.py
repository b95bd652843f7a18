"""Where a GPU saturates on charlm's LSTMs: bf16 training chars/s and MFU at batch 128, 256 and 512 for the
LSTM 2x512 and 3x1024, through charlm's trainer (gpu_bench.train_rate: two synchronised batch boundaries).

    python benchmarks/gpu_sweep.py --json PATH            # on a CUDA GPU (about 40 s on an H200)
    python benchmarks/gpu_sweep.py --smoke --json PATH    # the same code paths on the CPU, tiny

A recurrent step is a chain of small matrix products, so at batch 128 the card mostly waits (bf16 MFU 0.04
for the 2x512 on an H200): more streams cost little more time per step until the products fill the card.
"Saturates at" is the first batch whose doubling gains less than SATURATION (chars/s), or none in the sweep.
Windows are 128 steps (the GPU configs' own), so that batch 512 fits 11 batches of tiny shakespeare.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from gpu_bench import GPU, SMOKE, attempt, device_facts, matmul_tflops, train_rate

from charlm.training.compute import CUBLAS_WORKSPACE

SATURATION = 1.2  # a doubling of the batch that buys less than this much speed: the card is full
BATCHES = (128, 256, 512)
SMOKE_BATCHES = (4, 8, 16)


def sweep(smoke: bool) -> dict:
    device = torch.device("cpu" if smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_sweep.py: no CUDA GPU is visible (use --smoke to check it on the CPU)")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    base, batches = (SMOKE, SMOKE_BATCHES) if smoke else (replace(GPU, num_steps=128, timed_batches=8), BATCHES)
    peak = matmul_tflops("bf16", base.matmul_size, device)
    figures = {
        "smoke": smoke,
        **device_facts(device),
        "num_steps": base.num_steps,
        "peak_tflops_bf16": peak,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for layers, hidden in base.models:
            runs = {}
            for batch in batches:
                sizes = replace(base, batch_size=batch)
                folder = Path(tmp) / f"{layers}-{batch}"
                run = attempt(partial(train_rate, layers, hidden, "bf16", sizes, device, folder))
                if "error" not in run:
                    run["mfu"] = 6 * run["non_embedding_parameters"] * run["chars_per_s"] / (peak * 1e12)
                runs[str(batch)] = run
            figures["models"][f"lstm_{layers}x{hidden}"] = {"batches": runs, "saturates_at": saturates_at(runs)}
    return figures


def saturates_at(runs: dict) -> int | None:
    """The first batch whose doubling gains less than SATURATION in chars/s; None if every doubling paid."""
    measured = [(int(b), r["chars_per_s"]) for b, r in runs.items() if "chars_per_s" in r]
    for (batch, rate), (_, doubled) in zip(measured, measured[1:], strict=False):  # each with the next
        if doubled < SATURATION * rate:
            return batch
    return None


def describe(figures: dict) -> list[str]:
    lines = [
        f"bf16 training by batch ({figures['num_steps']} steps; MFU against {figures['peak_tflops_bf16']:,.0f} "
        "TFLOP/s measured)"
    ]
    for name, model in figures["models"].items():
        cells = [
            f"{b}: " + (f"{r['chars_per_s']:,.0f} chars/s MFU {r['mfu']:.3f}" if "mfu" in r else r["error"][:60])
            for b, r in model["batches"].items()
        ]
        where = model["saturates_at"]
        lines.append(
            f"  {name}: {'; '.join(cells)}; "
            + (f"saturates at batch {where}" if where else "still gaining at the largest batch")
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="on the CPU with tiny sizes (checks the code paths)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures = sweep(args.smoke)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print("\n".join(describe(figures)))
    return figures


if __name__ == "__main__":
    main()
