"""charlm on a GPU: training speed in fp32, TF32 and bf16 with MFU against a matmul peak measured in the same
run, eval speed, and generation speed with the single-sequence step in a CUDA graph (before and after).

    python benchmarks/bench.py --device cuda [--json PATH]           # on a CUDA GPU
    python benchmarks/bench.py --device cuda --smoke [--json PATH]   # the same code paths on the CPU, tiny

Training runs go through charlm's own trainer (`charlm.training.train`); a reporter synchronises the device
at two batch boundaries, so the time between them is the device's, not the host's queueing. MFU counts
6 x the non-embedding parameters per character (forward 2, backward 4) against the peak of the dtype the
run's matmuls use. The CUDA-graph step needs CUDA: in --smoke it is reported as not run, everything
around it runs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from gpu_table import describe_rate

from charlm.config import load_config
from charlm.data import load_corpus
from charlm.evaluate import evaluate
from charlm.events import SilentReporter
from charlm.generation.fast_step import FastStep
from charlm.generation.sampling import generate
from charlm.runtime.device import synchronize
from charlm.store.checkpoint import load_run_model
from charlm.store.run_dir import RunDir
from charlm.training import train
from charlm.training.compute import CUBLAS_WORKSPACE


@dataclass(frozen=True)
class Sizes:
    """What one suite runs: the real one on a GPU, or the smoke one on the CPU."""

    models: tuple[tuple[int, int], ...]  # (layers, hidden)
    batch_size: int
    num_steps: int
    warmup_batches: int  # untimed: cuDNN plans, allocator pools, lazy kernel loading
    timed_batches: int
    matmul_size: int
    eval_chars: int
    gen_chars: int
    gen_batch: int


GPU = Sizes(
    models=((2, 512), (3, 1024)),
    batch_size=128,
    num_steps=256,
    warmup_batches=3,
    timed_batches=10,
    matmul_size=8192,
    eval_chars=400_000,
    gen_chars=2000,
    gen_batch=256,
)
SMOKE = Sizes(
    models=((1, 32), (2, 48)),
    batch_size=8,
    num_steps=16,
    warmup_batches=1,
    timed_batches=2,
    matmul_size=128,
    eval_chars=4000,
    gen_chars=40,
    gen_batch=4,
)
DTYPES = ("fp32", "tf32", "bf16")
PREFIX = "First Citizen:"  # the corpus's first line: in the vocabulary of any run on its start


def set_fp32_matmuls(tf32: bool) -> None:
    """TF32 on or off for float32 matmuls and cuDNN RNNs. PyTorch >= 2.9 refuses a mix of its old flags
    (allow_tf32) and the new ones (fp32_precision), so only one kind is ever set."""
    if hasattr(torch.backends.cudnn, "rnn"):
        precision = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.rnn.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision  # never a mix: torch.export refuses to read one
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def matmul_tflops(dtype: str, size: int, device: torch.device, groups: int = 5, per_group: int = 10) -> float:
    """The rate of size^3 products of random matrices in `dtype` (fp32, tf32 or bf16): the median over
    `groups` timings of `per_group` back-to-back products (so host clock reads and syncs are amortised)."""
    set_fp32_matmuls(dtype == "tf32")
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = (torch.randn(size, size, device=device, dtype=kind) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(groups):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(per_group):
            a @ b
        synchronize(device)
        times.append((time.perf_counter() - started) / per_group)
    set_fp32_matmuls(False)
    return 2 * size**3 / statistics.median(times) / 1e12


class BatchClock(SilentReporter):
    """Synchronises the device after two given batches and keeps the time of each; notes the model's size."""

    def __init__(self, device: torch.device, first: int, last: int):
        self.device, self.first, self.last, self.marks = device, first, last, {}

    def start(self, event):
        self.parameters, self.vocab_size = event.parameters, event.vocab_size

    def batch(self, done, loss):
        if done in (self.first, self.last):
            synchronize(self.device)
            self.marks[done] = time.perf_counter()


def lstm_overrides(layers: int, hidden: int, sizes: Sizes, device: torch.device, batches: int) -> list[str]:
    chars = sizes.batch_size * (batches * sizes.num_steps + 1) + 1  # exactly `batches` batches in one epoch
    return [
        "data.corpus=tinyshakespeare",
        f"data.max_chars={chars}",
        "data.val_fraction=0",
        "model.kind=lstm",
        "model.input=embedding",
        "model.embed_size=128",
        f"model.hidden_size={hidden}",
        f"model.num_layers={layers}",
        "model.dropout=0",
        "model.tie_weights=false",
        f"train.batch_size={sizes.batch_size}",
        f"train.num_steps={sizes.num_steps}",
        "train.epochs=1",
        "train.warmup_steps=0",
        "train.label_smoothing=0",
        f"train.device={device}",
        "sample.preview_every=0",
    ]


def train_rate(
    layers: int, hidden: int, dtype: str, sizes: Sizes, device: torch.device, run_dir: Path, deterministic: bool = False
) -> dict:
    """charlm's trainer on an LSTM: chars/s between two synchronised batch boundaries."""
    first, last = sizes.warmup_batches, sizes.warmup_batches + sizes.timed_batches
    precision = "bf16" if dtype == "bf16" else "fp32"  # tf32 is fp32 autocast-free, with TF32 matmuls
    config = load_config(
        None,
        lstm_overrides(layers, hidden, sizes, device, last)
        + [f"train.precision={precision}", f"train.deterministic={deterministic}"],
    )
    set_fp32_matmuls(dtype == "tf32")
    clock = BatchClock(device, first, last)
    try:
        train(config, run_dir, clock)
    finally:
        set_fp32_matmuls(False)
    seconds = clock.marks[last] - clock.marks[first]
    chars_per_s = sizes.timed_batches * sizes.batch_size * sizes.num_steps / seconds
    params = clock.parameters - clock.vocab_size * config.model.embed_size  # untied: the embedding is its own
    return {
        "chars_per_s": chars_per_s,
        "seconds": seconds,
        "batches": sizes.timed_batches,
        "non_embedding_parameters": params,
    }


def attempt(measure) -> dict:
    """One measurement; if it breaks (on a card nobody has tried yet), {"error": ...} and the others still run."""
    try:
        return measure()
    except Exception as error:  # the error is the figure: it goes to the JSON and the table
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {str(error)[:300]}"}


def training_figures(sizes: Sizes, device: torch.device, work: Path, peaks: dict) -> dict:
    """Every model in every dtype, MFU against that dtype's peak, and deterministic mode's cost in bf16.
    The first model's fp32 run folder is kept for the eval and generation figures."""
    figures = {}
    for layers, hidden in sizes.models:
        name = f"lstm_{layers}x{hidden}"
        for dtype in DTYPES:
            run = work / f"{name}-{dtype}"
            result = attempt(partial(train_rate, layers, hidden, dtype, sizes, device, run))
            if "error" not in result:
                result["mfu"] = 6 * result["non_embedding_parameters"] * result["chars_per_s"] / (peaks[dtype] * 1e12)
            figures[f"{name}_{dtype}"] = result
            if (layers, hidden) != sizes.models[0] or dtype != "fp32":
                shutil.rmtree(run, ignore_errors=True)  # checkpoints of hundreds of MB: the disk is not measured
        strict = attempt(
            partial(train_rate, layers, hidden, "bf16", sizes, device, work / f"{name}-strict", deterministic=True)
        )
        shutil.rmtree(work / f"{name}-strict", ignore_errors=True)
        if "error" not in strict and "error" not in figures[f"{name}_bf16"]:
            strict["slowdown"] = figures[f"{name}_bf16"]["chars_per_s"] / strict["chars_per_s"]
        figures[f"{name}_bf16_deterministic"] = strict
    return figures


def eval_rate(model, checkpoint, sizes: Sizes, device: torch.device) -> dict:
    """charlm's eval (`evaluate`, 256 streams) over the run's own text (its vocabulary encodes it)."""
    ids = load_corpus(checkpoint.config.data).train[: sizes.eval_chars].to(device)
    evaluate(model, ids[: len(ids) // 4], batch_size=256, num_steps=sizes.num_steps, device=device)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    result = evaluate(
        model, ids, batch_size=256, num_steps=sizes.num_steps, device=device
    )  # ends with a host read: synchronised
    seconds = time.perf_counter() - started
    return {"chars_per_s": result["chars"] / seconds, "streams": 256, "chars": result["chars"]}


class GraphedGreedyStep:
    """One greedy step of `FastStep` captured in a CUDA graph, after PyTorch's documented recipe: warm-up on a
    side stream, capture with static input and output tensors, then replay. Each replay reads the static ids
    and hidden state and writes the next ones over them, so replaying n times generates n characters."""

    def __init__(self, step: FastStep, ids: torch.Tensor, hidden):
        self.step, self.lstm = step, isinstance(hidden, tuple)
        self.ids = ids.clone()
        self.hidden = [h.clone() for h in (hidden if self.lstm else (hidden,))]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # cuBLAS handles and workspaces, lazy kernel loading: none of it may be captured
                self.advance(write=False)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.advance(write=True)

    def advance(self, write: bool) -> None:
        logits, hidden = self.step(self.ids, tuple(self.hidden) if self.lstm else self.hidden[0])
        if write:  # the warm-up leaves the static state as it was, so the first replay starts from it
            self.ids.copy_(logits.argmax(-1))
            for static, new in zip(self.hidden, hidden if self.lstm else (hidden,), strict=True):
                static.copy_(new)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.ids


@torch.no_grad()
def graphed_greedy(model, vocab, prefix: str, length: int, device: torch.device) -> str:
    """What `generate(model, vocab, prefix, length)` (greedy) returns, one CUDA-graph replay per character."""
    was_training = model.training
    model.eval()
    ids = torch.tensor(vocab.encode(prefix), device=device)[None]
    _, hidden = model(ids[:, :-1], None) if ids.shape[1] > 1 else (None, model.begin_hidden(1, device))
    step = GraphedGreedyStep(FastStep(model), ids[:, -1], hidden)
    out = torch.empty(length, dtype=torch.long, device=device)
    for t in range(length):
        out[t : t + 1].copy_(step.replay())
    model.train(was_training)
    return prefix + vocab.decode(out.tolist())


def timed(device: torch.device, fn):
    synchronize(device)
    started = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - started


def generation_figures(model, vocab, sizes: Sizes, device: torch.device) -> dict:
    n, batch = sizes.gen_chars, sizes.gen_batch
    generate(model, vocab, PREFIX, 20, device=device)  # warm-up
    eager, seconds = timed(device, lambda: generate(model, vocab, PREFIX, n, device=device)[0])
    figures = {"gen_1_eager_chars_per_s": n / seconds}
    _, seconds = timed(
        device, lambda: generate(model, vocab, PREFIX, n, temperature=1.0, num_samples=batch, seed=0, device=device)
    )
    figures[f"gen_{batch}_eager_chars_per_s"] = batch * n / seconds
    figures["gen_batch"] = batch
    if device.type != "cuda":
        figures["gen_1_graph"] = "not run: a CUDA graph needs CUDA"
        return figures

    def graph_figures() -> dict:
        graphed_greedy(model, vocab, PREFIX, 20, device)  # warm-up
        graphed, seconds = timed(device, lambda: graphed_greedy(model, vocab, PREFIX, n, device))
        rate = n / seconds
        return {
            "gen_1_graph_chars_per_s": rate,
            "gen_1_graph_speedup": rate / figures["gen_1_eager_chars_per_s"],
            "gen_1_graph_same_text": sum(a == b for a, b in zip(eager, graphed, strict=True)) / len(eager),
        }

    graph = attempt(graph_figures)
    return {**figures, **({"gen_1_graph": graph["error"]} if "error" in graph else graph)}


def lstm_autocast_dtype(device: torch.device) -> str:
    """The dtype an nn.LSTM computes in under bf16 autocast: PyTorch's cuDNN RNN autocast wrapper has cast to
    fp16 whatever the autocast dtype (aten/src/ATen/cudnn/AutocastRNN.cpp), so this is read, not assumed."""
    lstm = torch.nn.LSTM(8, 8).to(device)
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out, _ = lstm(torch.randn(3, 2, 8, device=device))
    except RuntimeError:  # an AVX2-only CPU: oneDNN has no bf16 LSTM there
        return "none (no bf16 LSTM kernel here)"
    return str(out.dtype).removeprefix("torch.")


def device_facts(device: torch.device) -> dict:
    facts = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.update(
            gpu=props.name,
            multiprocessors=props.multi_processor_count,
            memory_gib=props.total_memory / 2**30,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return facts


def run_suite(smoke: bool) -> dict:
    """Every figure of the GPU suite (on the CPU with tiny sizes when `smoke`)."""
    device, sizes = (torch.device("cpu"), SMOKE) if smoke else (torch.device("cuda"), GPU)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.py --device cuda: no CUDA GPU is visible (use --smoke to check the suite on the CPU)")
    # the deterministic runs need cuBLAS's fixed workspace, which cuBLAS reads once: every run gets it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    figures: dict = {
        "smoke": smoke,
        **device_facts(device),
        "batch_size": sizes.batch_size,
        "num_steps": sizes.num_steps,
        "lstm_autocast_dtype": lstm_autocast_dtype(device),
    }
    figures["peak_tflops"] = {dtype: matmul_tflops(dtype, sizes.matmul_size, device) for dtype in DTYPES}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        figures["train"] = training_figures(sizes, device, work, figures["peak_tflops"])
        layers, hidden = sizes.models[0]
        figures["eval_model"] = f"lstm_{layers}x{hidden}"
        loaded = attempt(
            lambda: dict(
                zip(
                    ("model", "vocab", "checkpoint"),
                    load_run_model(RunDir(work / f"lstm_{layers}x{hidden}-fp32"), "last", device),
                    strict=True,
                )
            )
        )
        if "error" in loaded:
            figures["eval"] = figures["generation"] = loaded
            return figures
        figures["eval"] = attempt(lambda: eval_rate(loaded["model"], loaded["checkpoint"], sizes, device))
        figures["generation"] = attempt(lambda: generation_figures(loaded["model"], loaded["vocab"], sizes, device))
    return figures


def rows(figures: dict) -> list[tuple[str, str]]:
    """The table's (figure, value) rows."""
    out = [
        ("device", f"{figures.get('gpu', figures['device'])}, torch {figures['torch']}"),
        ("nn.LSTM under bf16 autocast computes in", figures["lstm_autocast_dtype"]),
    ]
    out += [(f"matmul peak {dtype}", f"{value:,.4g} TFLOP/s") for dtype, value in figures["peak_tflops"].items()]
    for name, result in figures["train"].items():
        out.append((f"train {name}", describe_rate(result)))
    out.append((f"eval {figures['eval_model']}", describe_rate(figures["eval"])))
    if "error" in figures["generation"]:
        return [*out, ("generation", figures["generation"]["error"])]
    for name, value in figures["generation"].items():
        out.append((name, f"{value:,.3f}" if isinstance(value, float) else str(value)))
    return out
