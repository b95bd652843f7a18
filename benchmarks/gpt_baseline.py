"""A small GPT trained to a wall-clock budget on charlm's own split, scored with charlm's own protocol.

    python benchmarks/gpt_baseline.py [--config configs/shakespeare-gpu.yaml] [--budget 150] [--eval-every 15]
                                      [--device cuda] [--json PATH] [--set KEY=VALUE ...] [--smoke]

The model and recipe follow nanoGPT's `config/train_shakespeare_char.py` (6 layers, 6 heads, 384 dims, block
256, batch 64, dropout 0.2, no biases, tied embedding and head, AdamW lr 1e-3 with betas (0.9, 0.99) and weight
decay 0.1 on matrices, 100 warm-up iterations, cosine to 1e-4 over 5,000 iterations, clip 1.0, bf16 autocast
on CUDA), with attention through `scaled_dot_product_attention` and no torch.compile. Its published best val
loss is 1.4697 after 5,000 iterations. Two changes make the race fair: the cosine runs on the clock as well
(whichever is further along, iterations or budget, as in charlm), and the data is charlm's: the corpus,
90/10 split and vocabulary come from `charlm.data.load_corpus` with the charlm config given.

Val loss is charlm's `evaluate` over the whole val split: the split cut into the config's
`train.eval_batch_size` streams, each read in windows of block/2 characters; the GPT sees the window after
the last block/2 characters of the same stream (`StreamGPT`), so every scored character has 129-256
characters of context (nanoGPT's own estimate averages 128). Evals come every `--eval-every` seconds of
training time and at the budget (evals are not training time, as in charlm); the JSON holds every eval and
the val loss at the marks and the time to reach each target (time_to_loss.checkpoints).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import time_to_loss  # noqa: E402

from charlm.config import load_config  # noqa: E402
from charlm.data import load_corpus  # noqa: E402
from charlm.evaluate import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    batch_size: int = 64
    dropout: float = 0.2
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 5000
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    seed: int = 1337


SMOKE = Recipe(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, warmup_iters=5, lr_decay_iters=200)


class SelfAttention(nn.Module):
    def __init__(self, r: Recipe):
        super().__init__()
        self.n_head, self.dropout = r.n_head, r.dropout
        self.c_attn = nn.Linear(r.n_embd, 3 * r.n_embd, bias=False)
        self.c_proj = nn.Linear(r.n_embd, r.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(r.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.c_attn(x).split(c, 2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class Block(nn.Module):
    def __init__(self, r: Recipe):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(r.n_embd, bias=False), nn.LayerNorm(r.n_embd, bias=False)
        self.attn = SelfAttention(r)
        self.mlp = nn.Sequential(
            nn.Linear(r.n_embd, 4 * r.n_embd, bias=False),
            nn.GELU(),
            nn.Linear(4 * r.n_embd, r.n_embd, bias=False),
            nn.Dropout(r.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """nanoGPT's model: token + position embeddings, pre-norm blocks, a head tied to the token embedding."""

    def __init__(self, r: Recipe, vocab_size: int):
        super().__init__()
        self.block_size = r.block_size
        self.wte, self.wpe = nn.Embedding(vocab_size, r.n_embd), nn.Embedding(r.block_size, r.n_embd)
        self.drop = nn.Dropout(r.dropout)
        self.blocks = nn.ModuleList(Block(r) for _ in range(r.n_layer))
        self.ln_f = nn.LayerNorm(r.n_embd, bias=False)
        self.lm_head = nn.Linear(r.n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:  # residual projections scaled by depth (GPT-2)
            for proj in (block.attn.c_proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * r.n_layer))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class StreamGPT(nn.Module):
    """The GPT read the way charlm's `evaluate` reads a recurrent model: (ids (streams, steps), carried state)
    -> (logits (steps, streams, vocab), new state). The carried state is the last block - window characters of
    each stream, so a window of up to `window` characters always fits the block after them."""

    def __init__(self, gpt: GPT, window: int):
        super().__init__()
        if not 0 < window < gpt.block_size:
            raise ValueError(f"window {window} must be in 1..{gpt.block_size - 1}")
        self.gpt, self.window = gpt, window

    def forward(self, ids: torch.Tensor, context: torch.Tensor | None):
        ids = ids.long()  # evaluate passes the corpus's own small integer type
        x = ids if context is None else torch.cat([context, ids], 1)
        logits = self.gpt(x)[:, -ids.shape[1] :]
        return logits.transpose(0, 1), x[:, -(self.gpt.block_size - self.window) :]


def val_loss(gpt: GPT, val: torch.Tensor, streams: int, device: torch.device) -> dict:
    """charlm's protocol on the whole split (fp32 logits, as charlm's own evals)."""
    return evaluate(
        StreamGPT(gpt, gpt.block_size // 2), val, batch_size=streams, num_steps=gpt.block_size // 2, device=device
    )


def lr_at(it: int, time_fraction: float, r: Recipe) -> float:
    """nanoGPT's warm-up then cosine, the cosine's progress being iterations or the clock, whichever leads."""
    if it < r.warmup_iters:
        return r.lr * (it + 1) / (r.warmup_iters + 1)
    progress = min(1.0, max((it - r.warmup_iters) / (r.lr_decay_iters - r.warmup_iters), time_fraction))
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (r.lr - r.min_lr)


def optimizer_for(gpt: GPT, r: Recipe, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in gpt.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": r.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=r.lr, betas=r.betas, fused=device.type == "cuda")


@dataclass
class Race:
    """What the trainer needs besides the recipe: the data, the clock and where it reports."""

    train_ids: torch.Tensor  # on the device
    val_ids: torch.Tensor
    streams: int
    budget: float
    eval_every: float
    device: torch.device


def train_to_budget(gpt: GPT, r: Recipe, race: Race, log=print) -> list[dict]:
    """Train until `race.budget` seconds of training time; evaluate every `eval_every` seconds and at the end."""
    device = race.device
    optimizer = optimizer_for(gpt, r, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    generator = torch.Generator(device=device).manual_seed(r.seed)
    window = torch.arange(r.block_size + 1, device=device)
    evals, it, seconds, loss_sum = [], 0, 0.0, torch.zeros((), device=device)
    clock, seconds_before, since = time.perf_counter(), 0.0, 0
    while seconds < race.budget:
        starts = torch.randint(
            len(race.train_ids) - r.block_size - 1, (r.batch_size, 1), device=device, generator=generator
        )
        chunk = race.train_ids[starts + window].long()  # (batch, block + 1): one gather, no per-character work
        for group in optimizer.param_groups:
            group["lr"] = lr_at(it, seconds / race.budget, r)
        with autocast:
            logits = gpt(chunk[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), chunk[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), r.grad_clip)
        optimizer.step()
        loss_sum += loss.detach()
        it, since, before = it + 1, since + 1, seconds
        seconds = seconds_before + time.perf_counter() - clock
        if seconds // race.eval_every > before // race.eval_every or seconds >= race.budget:
            gpt.eval()
            result = val_loss(gpt, race.val_ids, race.streams, device)
            gpt.train()
            evals.append(
                {
                    "iter": it,
                    "train_seconds": seconds,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": loss_sum.item() / since,
                    "val_loss": result["nats_per_char"],
                    "val_chars": result["chars"],
                    "chars_seen": it * r.batch_size * r.block_size,
                }
            )
            log(json.dumps(evals[-1]))
            loss_sum.zero_()
            since, clock, seconds_before = 0, time.perf_counter(), seconds  # evals are not training time
    return evals


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        type=Path,
        default=REPO / "configs" / "shakespeare-gpu.yaml",
        help="the charlm config whose corpus, split and eval streams the GPT uses",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override that config")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of training time")
    parser.add_argument("--eval-every", type=float, default=15.0, help="seconds of training time between evals")
    parser.add_argument("--marks", type=float, nargs="*", default=[30, 60, 150], help="report the val loss at these")
    parser.add_argument("--targets", type=float, nargs="*", default=[1.55, 1.47], help="report the time to these")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="a one-layer 32-wide GPT (checks the script on a CPU)")
    parser.add_argument("--json", type=Path, help="write the evals and checkpoints here")
    args = parser.parse_args(argv)
    recipe, device = (SMOKE if args.smoke else Recipe()), torch.device(args.device)
    if device.type == "cuda":  # nanoGPT's setting: TF32 matmuls (the new flag only: PyTorch refuses a mix)
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    config = load_config(args.config, args.set)
    corpus = load_corpus(config.data)
    torch.manual_seed(recipe.seed)
    gpt = GPT(recipe, len(corpus.vocab)).to(device)
    race = Race(
        corpus.train.to(device),
        corpus.val.to(device),
        config.train.eval_batch_size,
        args.budget,
        args.eval_every,
        device,
    )
    print(
        f"gpt {recipe.n_layer}x{recipe.n_embd}, {gpt.num_parameters():,} parameters, vocab {len(corpus.vocab)}, "
        f"train {len(corpus.train):,} / val {len(corpus.val):,} chars, {device}, budget {args.budget:g} s",
        flush=True,
    )
    evals = train_to_budget(gpt, recipe, race, log=lambda line: print(line, flush=True))
    result = {
        "model": f"GPT {recipe.n_layer}x{recipe.n_embd}",
        "recipe": asdict(recipe),
        "parameters": gpt.num_parameters(),
        "device": str(device),
        "config": str(args.config),
        "overrides": args.set,
        "budget": args.budget,
        "streams": race.streams,
        "evals": evals,
        "checkpoints": time_to_loss.checkpoints(evals, args.marks, args.targets),
        "chars_per_s": evals[-1]["chars_seen"] / evals[-1]["train_seconds"],
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(time_to_loss.describe("gpt", result["checkpoints"]))
    return result


if __name__ == "__main__":
    main()
