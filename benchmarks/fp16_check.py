"""fp16 with its gradient scaler against fp32, on the model of tests/test_gpu.py's bf16 test (an LSTM 2x256
on text from a random order-2 Markov source): the best val losses, and whether fp16 is within 1% of fp32.

    python benchmarks/fp16_check.py --json PATH            # on a CUDA GPU (about 20 s on an H200)
    python benchmarks/fp16_check.py --smoke --json PATH    # the CPU, tiny: checks the script

Both runs go through charlm's trainer with `--set train.precision=...`. A charlm without train.precision, or
(in --smoke) a CPU that refuses fp16, gives {"skipped": why} and exit 0 in --smoke; on a GPU that is a failure.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from charlm.config import load_config
from charlm.errors import ConfigError, UsageError
from charlm.training import train

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.01  # fp16's best val loss within 1% of fp32's (issue 33)
GPU_OPTIONS = (
    "train.device=cuda",
    "model.hidden_size=256",
    "model.embed_size=64",
    "train.batch_size=64",
    "train.num_steps=64",
    "train.epochs=12",
    "train.lr=0.003",
)
SMOKE_OPTIONS = (
    "train.device=cpu",
    "model.hidden_size=16",
    "model.embed_size=8",
    "train.batch_size=8",
    "train.num_steps=16",
    "train.epochs=2",
    "train.lr=0.003",
)


def markov_text(path: Path, chars: int, symbols: str = "abcdefghijklmno ", seed: int = 0) -> Path:
    """The same source as tests/test_gpu.py: a model must learn the transitions, and nothing is memorisable."""
    rng = random.Random(seed)
    table = {(a, b): [rng.random() ** 4 for _ in symbols] for a in symbols for b in symbols}
    out = ["a", "b"]
    for _ in range(chars - 2):
        out.append(rng.choices(symbols, weights=table[out[-2], out[-1]])[0])
    path.write_text("".join(out), encoding="utf-8")
    return path


def compare(smoke: bool, work: Path) -> dict:
    corpus = markov_text(work / "markov.txt", 20_000 if smoke else 200_000)
    options = [
        f"data.corpus={corpus}",
        "data.max_chars=null",
        "model.kind=lstm",
        "model.num_layers=2",
        "sample.preview_every=0",
        *(SMOKE_OPTIONS if smoke else GPU_OPTIONS),
    ]
    losses = {}
    for precision in ("fp32", "fp16"):
        config = load_config(REPO / "configs" / "tiny.yaml", [*options, f"train.precision={precision}"])
        losses[precision] = train(config, work / precision).best_loss
    difference = (losses["fp16"] - losses["fp32"]) / losses["fp32"]
    return {
        "fp32_val_loss": losses["fp32"],
        "fp16_val_loss": losses["fp16"],
        "relative_difference": difference,
        "tolerance": TOLERANCE,
        "within_tolerance": abs(difference) <= TOLERANCE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="on the CPU, tiny (checks the script)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = compare(args.smoke, Path(tmp))
        except (ConfigError, UsageError) as error:  # no train.precision in this charlm, or no fp16 here
            result = {"skipped": str(error)[:300]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if "skipped" in result:
        print(f"fp16 check not run: {result['skipped']}")
        return 0 if args.smoke else 1
    print(
        f"best val loss: fp32 {result['fp32_val_loss']:.4f}, fp16 {result['fp16_val_loss']:.4f} "
        f"({result['relative_difference']:+.2%}; within {TOLERANCE:.0%}: {result['within_tolerance']})"
    )
    return 0 if result["within_tolerance"] or args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
