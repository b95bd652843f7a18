"""Next-character probabilities from counts: every order from 0 up to the longest context that occurs,
interpolated from the shortest up, each order trusted by how often its context occurred:

    P_k(c) = (n_k(c) + a_k * P_{k-1}(c)) / (n_k + a_k),   a_k = u_k * exp(t_k) + exp(f_k),   P_{-1}(c) = 1 / V

where n_k counts the occurrences of the order-k context that a character followed, n_k(c) those followed by
c and u_k the distinct characters that followed it; an order whose context never occurs leaves P as it was.
With t = 0 and f = -inf this is Witten-Bell (PPM's method C). Fixed, it trusts a context seen once as much
at order 12 as at order 2, which costs 0.5 nats a character on held-out text (measured: 2.11 nats/char on
tiny shakespeare's val against 1.56 for orders 0-4 only); `t` and `f`, one pair per order up to ORDERS
and one for all beyond, are fitted on held-out text by the mixer (mixer.py), so no order limit is needed.

`Evidence` holds what the counts say at each order for a window of positions; the features the mixer's
gate reads come from it too, and none depends on the character to come.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.counts.index import MAX_ORDER, CountIndex

ORDERS = 16  # orders with a smoothing pair of their own; every longer one shares the last
WINDOW = 8192  # positions looked up at once
UNROLLED = 1 << 18  # target_probs unrolls the orders up to this many (order, position) entries


@dataclass(frozen=True)
class Evidence:
    """What an index's counts say before each of a window's positions: (orders, positions) arrays of the
    occurrences with a next character (n), the distinct next characters (u), and how many were the
    position's own character (hits); `longest` is the longest order whose context occurs (-1: none)."""

    n: torch.Tensor
    u: torch.Tensor
    hits: torch.Tensor
    top: torch.Tensor  # at the longest order: the commonest next character's count
    longest: torch.Tensor

    def features(self) -> torch.Tensor:
        """(positions, 4): the longest order matched, and at it log(1 + n), log(1 + u) and the share of the
        commonest next character: how much and how sharply the counts know this context."""
        at = self.longest.clamp(min=0)[None]
        n = self.n.gather(0, at)[0]
        u = self.u.gather(0, at)[0]
        return torch.stack([self.longest.double(), n.log1p(), u.log1p(), self.top / n.clamp(min=1)], dim=1)


def evidence(index: CountIndex, history: np.ndarray, positions: np.ndarray, *, max_order: int = MAX_ORDER) -> Evidence:
    """The Evidence of `index` for `positions` of `history` (ids; -1 outside the vocabulary)."""
    targets = history[positions]
    lo, hi = index.intervals(history, positions, max_order)
    q = len(positions)
    n, u, hits = (np.zeros((lo.shape[0], q)) for _ in range(3))
    longest, top = np.full(q, -1), np.zeros(q)
    for k in range(lo.shape[0]):
        s = index.stats(lo[k], hi[k], np.where(targets >= 0, targets, 0))
        n[k], u[k], hits[k] = s.n, s.u, np.where(targets >= 0, s.hits, 0)
        seen = s.n > 0
        longest[seen], top[seen] = k, s.top[seen]
    as_tensor = torch.from_numpy
    return Evidence(as_tensor(n), as_tensor(u), as_tensor(hits), as_tensor(top), as_tensor(longest))


def order_params(params: torch.Tensor, orders: int) -> torch.Tensor:
    """(orders, 2) rows of `params` (ORDERS + 1, 2): order k's own pair, the last for every longer one."""
    return params[torch.clamp(torch.arange(orders), max=ORDERS)]


def target_probs(ev: Evidence, params: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """P(the position's character) under the counts, float64: 0 for a character outside the vocabulary.

    The recursion over orders, p_k = alpha_k * p_{k-1} + beta_k (alpha 1, beta 0 where the context never
    occurs), step by step; on a small window unrolled, p = sum_k beta_k * prod_{j>k} alpha_j + prod_j alpha_j / V,
    in a few whole-array operations. The mixer's fit runs it and its gradient 200 times: on 592 characters the
    unrolled form took 1.0 s against 4.2 s (64 orders: each step's operations cost their call, not their size),
    on tiny shakespeare's 60,000 it took 31 s against 17 s (twice the operations over the whole array)."""
    rows = order_params(params, ev.n.shape[0])
    if ev.n.numel() > UNROLLED:
        # each order's `a` of its own: a row of a whole array would cost its gradient a whole array per order
        p = torch.full(ev.n.shape[1:], 1.0 / vocab_size, dtype=torch.float64)
        for k in range(ev.n.shape[0]):
            a = ev.u[k] * rows[k, 0].exp() + rows[k, 1].exp()
            p = torch.where(ev.n[k] > 0, (ev.hits[k] + a * p) / (ev.n[k] + a), p)
        return p
    a = ev.u * rows[:, :1].exp() + rows[:, 1:].exp()
    seen = ev.n > 0
    alpha = torch.where(seen, a / (ev.n + a), 1.0)
    beta = torch.where(seen, ev.hits / (ev.n + a), 0.0)
    # after[k] = prod_{j>k} alpha_j, summed in logs (cumprod's gradient costs several times cumsum's)
    tail = alpha.log().flip(0).cumsum(0).flip(0)
    after = torch.cat([tail[1:], torch.zeros_like(tail[:1])]).exp()
    return (beta * after).sum(0) + tail[0].exp() / vocab_size


def distributions(
    index: CountIndex, history: np.ndarray, positions: np.ndarray, params: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole next-character distribution (positions, V) after history[:p] for each p in `positions` (for
    sampling: a few positions at a time, p may be len(history)), float64, and the gate's features as
    Evidence.features gives them."""
    lo, hi = index.intervals(history, positions, MAX_ORDER)
    q = len(positions)
    p = torch.full((q, index.vocab_size), 1.0 / index.vocab_size, dtype=torch.float64)
    rows = order_params(params, lo.shape[0])
    longest, last = np.full(q, -1), np.zeros((q, 3))
    for k in range(lo.shape[0]):
        counts = torch.from_numpy(index.counts(lo[k], hi[k])).double()
        s = index.stats(lo[k], hi[k])
        n, u = torch.from_numpy(s.n).double()[:, None], torch.from_numpy(s.u).double()[:, None]
        a = u * rows[k, 0].exp() + rows[k, 1].exp()
        p = torch.where(n > 0, (counts + a * p) / (n + a), p)
        seen = s.n > 0
        longest[seen], last[seen] = k, np.stack([s.n[seen], s.u[seen], s.top[seen]], axis=1)
    n, u, top = (torch.from_numpy(last[:, i]) for i in range(3))
    features = torch.stack([torch.from_numpy(longest).double(), n.log1p(), u.log1p(), top / n.clamp(min=1)], 1)
    return p, features
