"""charlm's benchmark: baselines and charlm side by side, in one process, on this machine.

    python benchmarks/bench.py [--quick] [--json PATH]
    python benchmarks/bench.py --ddp [--json PATH]   # 1 vs 2 DDP processes: benchmarks/ddp_bench.py
    python benchmarks/bench.py --device cuda [--smoke] [--json PATH]   # on a GPU: benchmarks/gpu_bench.py

Prints a table and writes every figure to JSON. Targets are ratios measured in the same run (never
absolute times), so the figures travel between machines. The jaychou and tinyshakespeare corpora ship inside the
package: it runs offline, finding them as `charlm train` does. speedup_vs_d2l is pooled over D2L_ROUNDS
interleaved rounds, each side of each in a process of its own, printed with the rounds' spread; `--d2l` measures
only that figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bf16_bench  # noqa: E402
import d2l_reference as ref  # noqa: E402

from charlm.config import load_config  # noqa: E402
from charlm.data import BUILTINS, data_dir  # noqa: E402
from charlm.evaluate import TextSource, score_run  # noqa: E402
from charlm.generation.sampling import generate  # noqa: E402
from charlm.store import checkpoint as ckpt  # noqa: E402
from charlm.store.run_dir import RunDir  # noqa: E402
from charlm.training import train  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LSTM = dict(hidden_size=512, num_layers=2, embed_size=128, batch_size=64, num_steps=128)
MODEL_KEYS = ("hidden_size", "num_layers", "embed_size")
TARGETS = {  # figure: (minimum or maximum, value)
    "speedup_vs_d2l": (">=", 1.8),
    "lstm_mfu": (">=", 0.80),
    "eval_over_train": (">=", 3.0),
    "gen_speedup_vs_d2l": (">=", 5.0),
    "gen_batch_over_single": (">=", 10.0),
    "encode_peak_rss_ratio": ("<=", 2.0),
    "encode_mb_per_s": (">=", 20.0),
    "gen_best_single_over_v1": (">=", 2.0),
    "gen_fp32_batch_over_single": (">=", 6.0),
    "gen_bf16_batch_over_single": (">=", 6.0),
    "gen_int8_batch_over_single": (">=", 6.0),
}


def matmul_gflops(m: int, k: int, n: int, seconds: float, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / (time.perf_counter() - started) / 1e9


def peak_shapes() -> list[tuple[int, int, int]]:
    """A large square product and the LSTM's own large shapes."""
    rows = LSTM["batch_size"] * LSTM["num_steps"]
    return [(2048, 2048, 2048), (rows, 1024, 4 * LSTM["hidden_size"]), (rows, LSTM["hidden_size"], 2048)]


def peak_gflops(quick: bool, dtype: torch.dtype = torch.float32) -> float:
    """The best matmul rate in `dtype` over peak_shapes()."""
    return max(matmul_gflops(*shape, 0.5 if quick else 1.5, dtype) for shape in peak_shapes())


def run_config(path: str, overrides: list[str], run_dir: Path) -> list[dict]:
    train(load_config(path, overrides + ["train.device=cpu", "sample.preview_every=0"]), run_dir)
    return [r for r in RunDir(run_dir).metrics.read() if "event" not in r]


D2L_ROUNDS = 10  # interleaved rounds of charlm's trainer and the seed's loop (the order alternating)
D2L_EPOCHS = 15  # per round: 120 batches of 32 x 35, where one 8-batch epoch moved the figure 1.06 -> 1.23


def d2l_figures(quick: bool, work: Path, rounds: int | None = None, epochs: int | None = None) -> dict:
    """The seed loop and charlm's trainer on d2l's model and data, from the same initial weights, in `rounds`
    interleaved rounds of `epochs` epochs each (the first epoch of each, the warm-up, left out), each side of each
    round in a fresh process: a process's speed is its own (measured 2026-12-07: the rounds of one process agreed
    within a few percent, two processes' differed by 11%), so one process for all rounds fixed its luck for the
    whole figure. Each side's rate is all its characters over all its training time, pooled over the rounds, and
    the figure is their ratio; `speedup_vs_d2l_spread` is (largest - smallest) of the rounds' own ratios / the
    figure: how much one round alone could mislead."""
    rounds = rounds or (2 if quick else D2L_ROUNDS)
    epochs = epochs or (3 if quick else D2L_EPOCHS)
    config = str(REPO / "configs" / "d2l-jaychou-rnn.yaml")
    charlm_rates, seed_rates = [], []
    for n in range(rounds):
        if n % 2:  # the order alternates: a slow spell of the machine falls on both sides alike
            losses, seed_rate = d2l_side("seed", config, epochs, work / f"d2l-{n}")
            records, charlm_rate = d2l_side("charlm", config, epochs, work / f"d2l-{n}")
        else:
            records, charlm_rate = d2l_side("charlm", config, epochs, work / f"d2l-{n}")
            losses, seed_rate = d2l_side("seed", config, epochs, work / f"d2l-{n}")
        charlm_rates.append(charlm_rate)
        seed_rates.append(seed_rate)
        if n == 0:
            first_records, first_losses = records, losses
    ratios = [a / b for a, b in zip(charlm_rates, seed_rates, strict=True)]
    # rounds of equal characters: the pooled rate (all characters over all time) is the rates' harmonic mean
    charlm_rate, seed_rate = statistics.harmonic_mean(charlm_rates), statistics.harmonic_mean(seed_rates)
    speedup = charlm_rate / seed_rate
    return {
        "d2l_ref_chars_per_s": seed_rate,
        "charlm_d2l_chars_per_s": charlm_rate,
        "d2l_ref_rounds_chars_per_s": seed_rates,
        "charlm_d2l_rounds_chars_per_s": charlm_rates,
        "speedup_vs_d2l": speedup,
        "speedup_vs_d2l_spread": (max(ratios) - min(ratios)) / speedup,
        "speedup_vs_d2l_rounds": ratios,
        "d2l_epochs": epochs,
        "d2l_ref_loss_by_epoch": first_losses,
        "charlm_d2l_loss_by_epoch": [r["train_loss"] for r in first_records],
        "d2l_same_losses_5_digits": all(
            f"{a:.5f}" == f"{r['train_loss']:.5f}" for a, r in zip(first_losses, first_records, strict=True)
        ),
    }


def d2l_side(side: str, config: str, epochs: int, run_dir: Path) -> tuple[list, float]:
    """One side of a round (charlm_d2l or seed_d2l) in a fresh process of this script: (its losses, its rate)."""
    command = [sys.executable, __file__, "--d2l-side", side, "--d2l-epochs", str(epochs), "--d2l-run", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["losses"], answer["rate"]


def d2l_side_main(side: str, epochs: int, run_dir: Path) -> None:
    """--d2l-side: run one side in this process, print {"losses", "rate"} as the last line."""
    config = str(REPO / "configs" / "d2l-jaychou-rnn.yaml")
    losses, rate = charlm_d2l(config, epochs, run_dir) if side == "charlm" else seed_d2l(config, epochs)
    print(json.dumps({"losses": losses, "rate": rate}))


def charlm_d2l(config: str, epochs: int, run_dir: Path) -> tuple[list[dict], float]:
    """charlm's run of the seed experiment: its records, and its chars/s over the epochs after the first."""
    records = run_config(config, [f"train.epochs={epochs}"], run_dir)
    return records, statistics.harmonic_mean([r["chars_per_s"] for r in records[1:]])  # equal epochs: total / time


def seed_d2l(config_path: str, epochs: int) -> tuple[list[float], float]:
    """The seed's loop on the corpus of charlm's run, from the same initial weights: its losses, and its chars/s
    over the epochs after the first."""
    from charlm.data import load_corpus

    config = load_config(config_path)
    corpus = load_corpus(config.data)
    ids = corpus.train.tolist()  # the seed keeps its corpus as a Python list
    torch.manual_seed(config.train.seed)  # the same initial weights as charlm's run: nn.RNN, then Linear
    seed_model = ref.RNNModel(nn.RNN(len(corpus.vocab), 256), len(corpus.vocab))
    losses, rates = ref.train_epochs(seed_model, ids, epochs, 35, 1e-3, 0.01, 32)
    return losses, statistics.harmonic_mean(rates[1:])


def plain_lstm_chars_per_s(vocab_size: int, batches: int) -> float:
    """A plain nn.LSTM training loop on random ids: what PyTorch alone reaches on these shapes."""
    torch.manual_seed(0)
    emb = nn.Embedding(vocab_size, LSTM["embed_size"])
    lstm = nn.LSTM(LSTM["embed_size"], LSTM["hidden_size"], LSTM["num_layers"])
    head = nn.Linear(LSTM["hidden_size"], vocab_size)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    x = torch.randint(0, vocab_size, (LSTM["num_steps"], LSTM["batch_size"]))
    y = torch.randint(0, vocab_size, (LSTM["num_steps"] * LSTM["batch_size"],))

    def step():
        out, _ = lstm(emb(x))
        loss = nn.functional.cross_entropy(head(out).view(-1, vocab_size), y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    step()  # warm-up: oneDNN builds its primitives on the first call
    started = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * x.numel() / (time.perf_counter() - started)


def lstm_overrides(quick: bool) -> list[str]:
    """configs/tiny.yaml made into the benchmark's LSTM 2x512 (embedding 128) on a part of tiny shakespeare."""
    batches = 4 if quick else 12
    chars = LSTM["batch_size"] * (batches * LSTM["num_steps"] + 1) + 1
    return [
        "data.corpus=tinyshakespeare",
        f"data.max_chars={chars}",
        "data.val_fraction=0",
        "model.kind=lstm",
        "model.input=embedding",
        "model.dropout=0",
        "model.tie_weights=false",
        "train.epochs=2",
        "train.warmup_steps=0",
        "train.eval_batch_size=256",
        *(f"{'model' if k in MODEL_KEYS else 'train'}.{k}={v}" for k, v in LSTM.items()),
    ]


def lstm_figures(quick: bool, work: Path, peak: float) -> dict:
    """Training, eval and generation of an LSTM 2x512 (embedding 128) on tiny shakespeare."""
    batches = 4 if quick else 12
    records = run_config(str(REPO / "configs" / "tiny.yaml"), lstm_overrides(quick), work / "lstm")
    train_rate = records[-1]["chars_per_s"]  # epoch 2: oneDNN's first-call set-up is behind us
    model, vocab, _ = ckpt.load_model(RunDir(work / "lstm").checkpoint("last"))
    params = model.num_parameters(embedding=False)
    plain_rate = plain_lstm_chars_per_s(len(vocab), batches)

    text = work / "eval.txt"
    source = builtin_text("tinyshakespeare").decode("utf-8")
    known = "".join(c for c in source[: (100_000 if quick else 400_000)] if c in vocab.index)  # the run saw a part
    text.write_text(known, encoding="utf-8")
    started = time.perf_counter()
    result, _ = score_run(work / "lstm", "last", TextSource(file=text))
    eval_rate = result["chars"] / (time.perf_counter() - started)

    length = 500 if quick else 2000
    started = time.perf_counter()
    ours = generate(model, vocab, "ROMEO:", length)[0]
    gen_rate = length / (time.perf_counter() - started)

    def seed_model(x, state):  # the seed's predict calls model(X, state) -> (logits (1, vocab), state)
        logits, state = model(x, state)
        return logits.reshape(-1, len(vocab)), state

    started = time.perf_counter()
    with torch.inference_mode():
        theirs = ref.predict(vocab.encode("ROMEO:"), length, seed_model)
    seed_gen_rate = length / (time.perf_counter() - started)
    started = time.perf_counter()
    generate(model, vocab, "ROMEO:", length, temperature=1.0, num_samples=32, seed=0)
    batch_rate = 32 * length / (time.perf_counter() - started)
    agree = sum(a == b for a, b in zip(ours, vocab.decode(theirs), strict=True)) / len(ours)
    return {
        "lstm_config": {**LSTM, "vocab_size": len(vocab), "non_embedding_parameters": params},
        "lstm_train_chars_per_s": train_rate,
        "lstm_mfu": 6 * params * train_rate / (peak * 1e9),
        "plain_lstm_chars_per_s": plain_rate,
        "plain_lstm_mfu": 6 * params * plain_rate / (peak * 1e9),
        "eval_chars_per_s": eval_rate,
        "eval_over_train": eval_rate / train_rate,
        "gen_chars_per_s": gen_rate,
        "d2l_gen_chars_per_s": seed_gen_rate,
        "gen_speedup_vs_d2l": gen_rate / seed_gen_rate,
        "gen_greedy_agreement_with_d2l": agree,
        "gen_batch_chars_per_s": batch_rate,
        "gen_batch_over_single": batch_rate / gen_rate,
    }


def builtin_text(name: str) -> bytes:
    """A built-in corpus's bytes, found as `charlm train` finds it (data.text.resolve_source): the package's own
    copy when it ships there (the lyrics, tiny shakespeare: no network, no cache), else the verified cache, fetched
    once when missing."""
    from charlm.data.text import resolve_source

    parts = resolve_source(name).parts
    return b"".join(part.open().read() for part in parts)


ENCODE_PROBE = textwrap.dedent("""
    import json, sys, time
    from charlm.config import DataConfig
    from charlm.data import load_corpus

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    load_corpus(DataConfig(corpus=sys.argv[2], val_fraction=0.1))  # torch's lazy set-up, not the step's cost
    before = status("VmRSS:")
    started = time.perf_counter()
    corpus = load_corpus(DataConfig(corpus=sys.argv[1], val_fraction=0.1))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_bytes": status("VmHWM:") - before}))
""")


def encode_figures(quick: bool, work: Path) -> dict:
    """Load and encode a large text file in a fresh process: speed, and peak RSS over the file size."""
    size = (20 if quick else 100) * 1_000_000
    source = builtin_text("tinyshakespeare")
    path = work / "big.txt"
    with open(path, "wb") as f:
        for _ in range(size // len(source) + 1):
            f.write(source)
    with open(path, "r+b") as f:
        f.truncate(size)
    small = work / "small.txt"
    small.write_bytes(source[:100_000])
    probe = subprocess.run(
        [sys.executable, "-c", ENCODE_PROBE, str(path), str(small)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    measured = json.loads(probe.stdout)
    return {
        "encode_file_mb": size / 1e6,
        "encode_mb_per_s": size / 1e6 / measured["seconds"],
        "encode_peak_rss_ratio": measured["peak_bytes"] / size,
    }


def bf16_figures(quick: bool, work: Path, fp32: dict) -> dict:
    """bf16 training and compact sampling weights beside the fp32 figures above (bf16_bench.py)."""
    figures = {"peak_bf16_gflops": peak_gflops(quick, torch.bfloat16)}
    figures.update(
        bf16_bench.d2l_bf16(run_config, str(REPO / "configs" / "d2l-jaychou-rnn.yaml"), fp32["d2l_epochs"], work, fp32)
    )
    figures.update(
        bf16_bench.lstm_bf16(
            run_config,
            str(REPO / "configs" / "tiny.yaml"),
            lstm_overrides(quick),
            work,
            fp32,
            figures["peak_bf16_gflops"],
        )
    )
    figures.update(bf16_bench.parity(run_config, str(REPO / "configs" / "shakespeare-cpu.yaml"), quick, work))
    model, vocab, _ = ckpt.load_model(RunDir(work / "lstm").checkpoint("last"))
    figures.update(bf16_bench.sampling(model, vocab, "ROMEO:", quick))
    length = 500 if quick else bf16_bench.GEN_LENGTH
    figures.update(bf16_bench.agreement_on(work / "parity-fp32", "ROMEO:", length))
    figures["weights_default_by_rule"] = bf16_bench.default_by_rule(figures, length)
    return figures


def verdicts(figures: dict) -> dict:
    return {
        name: {
            "target": f"{op} {value}",
            "value": figures[name],
            "met": figures[name] >= value if op == ">=" else figures[name] <= value,
        }
        for name, (op, value) in TARGETS.items()
        if name in figures
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke version (CI)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--d2l", action="store_true", help="only speedup_vs_d2l, in its interleaved rounds (run it twice to compare)"
    )
    parser.add_argument("--ddp", action="store_true", help="only 1 vs 2 DDP processes on the CPU (ddp_bench.py)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: the GPU suite (gpu_bench.py): fp32/TF32/bf16 training, eval, CUDA-graph generation",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="with --device cuda: run the GPU suite's code paths on the CPU with tiny sizes",
    )
    # one side of one d2l round, in a process of its own (d2l_side starts it)
    parser.add_argument("--d2l-side", choices=("charlm", "seed"), help=argparse.SUPPRESS)
    parser.add_argument("--d2l-epochs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--d2l-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.d2l_side:
        return d2l_side_main(args.d2l_side, args.d2l_epochs, args.d2l_run)
    if args.ddp:
        import ddp_bench

        ddp_bench.main(["--json", str(args.json)] if args.json else [])
        return
    if args.device == "cuda" or args.smoke:
        gpu_main(args.smoke, args.json)
        return
    console = Console(highlight=False)
    for name in ("jaychou", "tinyshakespeare"):
        builtin_text(name)  # a corpus that neither ships nor is cached: downloaded (and verified) before any timing
    console.print(
        f"charlm benchmark{' (quick)' if args.quick else ''}: torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, corpora in {data_dir()} ({', '.join(BUILTINS)})"
    )
    started = time.perf_counter()
    figures: dict = {
        "quick": args.quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.d2l:
            figures["peak_gflops"] = peak_gflops(args.quick)
        figures.update(d2l_figures(args.quick, work))
        if not args.d2l:
            figures.update(lstm_figures(args.quick, work, figures["peak_gflops"]))
            figures.update(bf16_figures(args.quick, work, figures))
            figures.update(encode_figures(args.quick, work))
    figures["seconds"] = time.perf_counter() - started
    figures["targets"] = verdicts(figures)
    console.print(table_of(figures))
    if not args.d2l:
        console.print(
            f"--weights by the default rule (the fastest with fp32's greedy text over {bf16_bench.GEN_LENGTH} "
            f"chars on a trained model): {figures['weights_default_by_rule']}; bf16 loss parity "
            f"(|diff| <= {bf16_bench.PARITY_TOLERANCE:.0%}): {'met' if figures['parity_met'] else 'MISSED'}"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        console.print(f"figures written to {args.json}")


def table_of(figures: dict) -> Table:
    """The figures and their targets; a figure measured in rounds shows its spread beside it (speedup_vs_d2l
    1.150 ±2.1% over 5 rounds: (largest - smallest) / median / 2 of the rounds' ratios)."""
    table = Table(title="charlm benchmark (ratios are measured in this run)")
    for column in ("figure", "value", "target"):
        table.add_column(column)
    for name, value in figures.items():
        if (isinstance(value, float) or name.endswith("_same_chars")) and not name.endswith("_spread"):
            target = figures["targets"].get(name)
            mark = "" if target is None else f"{target['target']} {'met' if target['met'] else 'MISSED'}"
            shown = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
            if f"{name}_spread" in figures:
                rounds = len(figures[f"{name}_rounds"])
                shown += f" ±{figures[f'{name}_spread'] / 2:.1%} over {rounds} round{'s' * (rounds > 1)}"
            table.add_row(name, shown, mark)
    return table


def gpu_main(smoke: bool, json_path: Path | None) -> None:
    import gpu_bench

    console = Console(highlight=False, width=120)
    started = time.perf_counter()
    figures = gpu_bench.run_suite(smoke)
    figures["seconds"] = time.perf_counter() - started
    table = Table(title=f"charlm on {'the CPU (--smoke)' if smoke else 'a GPU'}: peaks and MFU measured in this run")
    for column in ("figure", "value"):
        table.add_column(column)
    for name, value in gpu_bench.rows(figures):
        table.add_row(name, value)
    console.print(table)
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        console.print(f"figures written to {json_path}")


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
