"""bf16 on the CPU, beside fp32 in the same run (called by bench.py): training speed and loss under
`train.precision=bf16`, and sampling with the compact step weights of `charlm generate --weights`.

Training: the d2l model and the LSTM 2x512 of bench.py again with train.precision=bf16 (chars/s over fp32's,
MFU against the bf16 matmul peak measured here, the loss after the same steps), and a loss-parity run:
configs/shakespeare-cpu.yaml for the same number of steps in fp32 and in bf16, both scored in fp32 on
the same val text. Sampling: one and 32 sequences for each weight format against version 1's fp32
step (faststep_v1.py), and how closely each format's greedy choices follow fp32's.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
from faststep_v1 import FastStepV1

from charlm.generation import fast_step as step_module
from charlm.generation.fast_step import WEIGHTS, greedy_agreement
from charlm.generation.sampling import generate
from charlm.store import checkpoint as ckpt
from charlm.store.run_dir import RunDir

PARITY_TOLERANCE = 0.01  # |bf16 - fp32| val loss, as a fraction of fp32's, after the same steps
GEN_LENGTH = 2000  # greedy characters compared with fp32 (the --weights default rule)


def d2l_bf16(run_config, config_path: str, epochs: int, work: Path, fp32: dict) -> dict:
    """The d2l model again under train.precision=bf16 for the same epochs."""
    records = run_config(config_path, [f"train.epochs={epochs}", "train.precision=bf16"], work / "d2l-bf16")
    rate = statistics.median(r["chars_per_s"] for r in records[1:])
    fp32_loss, bf16_loss = fp32["charlm_d2l_loss_by_epoch"][-1], records[-1]["train_loss"]
    return {
        "charlm_d2l_bf16_chars_per_s": rate,
        "d2l_bf16_over_fp32": rate / fp32["charlm_d2l_chars_per_s"],
        "d2l_bf16_train_loss": bf16_loss,
        "d2l_bf16_loss_vs_fp32": bf16_loss / fp32_loss - 1,
    }


def lstm_bf16(run_config, config_path: str, overrides: list[str], work: Path, fp32: dict, peak_bf16: float) -> dict:
    """The benchmark LSTM again in bf16: speed, MFU against the bf16 peak, the loss after the same steps."""
    records = run_config(config_path, [*overrides, "train.precision=bf16"], work / "lstm-bf16")
    fp32_records = [r for r in RunDir(work / "lstm").metrics.read() if "event" not in r]
    rate, params = records[-1]["chars_per_s"], fp32["lstm_config"]["non_embedding_parameters"]
    return {
        "lstm_bf16_train_chars_per_s": rate,
        "lstm_bf16_over_fp32": rate / fp32["lstm_train_chars_per_s"],
        "lstm_bf16_mfu": 6 * params * rate / (peak_bf16 * 1e9),
        "lstm_bf16_loss_vs_fp32": records[-1]["train_loss"] / fp32_records[-1]["train_loss"] - 1,
    }


def parity(run_config, config_path: str, quick: bool, work: Path) -> dict:
    """configs/shakespeare-cpu.yaml (LSTM 512, batch 16 x 64) for the same steps in fp32 and bf16."""
    steps = 60 if quick else 400
    chars = 16 * (64 * steps + 1) + 1
    figures = {"parity_steps": steps}
    for name in ("fp32", "bf16"):
        records = run_config(
            config_path,
            [
                f"data.max_chars={int(chars / 0.9) + 1}",
                "train.time_budget=null",
                "train.epochs=1",
                f"train.precision={name}",
            ],
            work / f"parity-{name}",
        )
        figures[f"parity_{name}_val_loss"] = records[-1]["val_loss"]
        figures[f"parity_{name}_chars_per_s"] = records[-1]["chars_per_s"]
        figures["parity_val_chars"] = records[-1]["val_chars"]
    figures["parity_bf16_over_fp32"] = figures["parity_bf16_chars_per_s"] / figures["parity_fp32_chars_per_s"]
    figures["parity_val_loss_diff"] = figures["parity_bf16_val_loss"] / figures["parity_fp32_val_loss"] - 1
    figures["parity_met"] = abs(figures["parity_val_loss_diff"]) <= PARITY_TOLERANCE
    return figures


def sampling(model, vocab, prefix: str, quick: bool) -> dict:
    """chars/s of one and of 32 sequences for version 1's step and each --weights format; greedy agreement.

    One sequence is latency-bound and this shared VM's latency drifts, so the formats take turns over
    three rounds and each keeps its median."""
    length = 500 if quick else GEN_LENGTH
    formats = ("v1", *WEIGHTS)

    def rate(weights: str, num_samples: int) -> float:
        options = {"temperature": 1.0, "seed": 0} if num_samples > 1 else {}
        v1 = mock.patch.object(step_module, "FastStep", lambda model, weights, rows: FastStepV1(model))
        with v1 if weights == "v1" else contextlib.nullcontext():
            chosen = "fp32" if weights == "v1" else weights
            generate(model, vocab, prefix, 50, num_samples=num_samples, weights=chosen, **options)  # warm-up
            started = time.perf_counter()
            generate(model, vocab, prefix, length, num_samples=num_samples, weights=chosen, **options)
            return num_samples * length / (time.perf_counter() - started)

    rounds = [{(w, n): rate(w, n) for w in formats for n in (1, 32)} for _ in range(1 if quick else 3)]
    single = {w: statistics.median(r[w, 1] for r in rounds) for w in formats}
    batch = {w: statistics.median(r[w, 32] for r in rounds) for w in formats}
    figures = {"gen_v1_chars_per_s": single["v1"], "gen_v1_batch_chars_per_s": batch["v1"]}
    context = torch.tensor([vocab.encode(prefix)])
    for weights in WEIGHTS:
        same_until, agreement = greedy_agreement(model, context, length, weights)
        figures.update(
            {
                f"gen_{weights}_chars_per_s": single[weights],
                f"gen_{weights}_over_v1": single[weights] / single["v1"],
                f"gen_{weights}_batch_chars_per_s": batch[weights],
                f"gen_{weights}_batch_over_single": batch[weights] / single[weights],
                f"gen_{weights}_greedy_same_chars": same_until,
                f"gen_{weights}_greedy_agreement": agreement,
            }
        )
    figures["gen_best_single_over_v1"] = max(figures[f"gen_{w}_over_v1"] for w in WEIGHTS)
    return figures


def agreement_on(run_dir: Path, prefix: str, length: int) -> dict:
    """Greedy agreement of the compact formats on a trained model (the parity run's fp32 model), and the
    --weights default it implies: the fastest format (one sequence) whose greedy text is fp32's over
    `length` characters. The benchmark LSTM itself has seen 24 batches, and its greedy text repeats a few
    characters, which any format reproduces: the rule is judged on the trained model."""
    model, vocab, _ = ckpt.load_model(RunDir(run_dir).checkpoint("best"))
    context = torch.tensor([vocab.encode(prefix)])
    figures = {}
    for weights in WEIGHTS[1:]:
        same_until, agreement = greedy_agreement(model, context, length, weights)
        figures[f"trained_{weights}_greedy_same_chars"] = same_until
        figures[f"trained_{weights}_greedy_agreement"] = agreement
    return figures


def default_by_rule(figures: dict, length: int) -> str:
    same = ["fp32"] + [w for w in WEIGHTS[1:] if figures[f"trained_{w}_greedy_same_chars"] == length]
    return max(same, key=lambda w: figures[f"gen_{w}_chars_per_s"])
