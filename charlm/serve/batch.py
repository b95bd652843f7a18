"""The rows of many requests stepped as one batch: `Batch.join` adds a request's rows at a step boundary,
`Batch.step` steps every row once (one FastStep call) and samples each set of rows that share their options
in one call, and a request leaves as soon as it is done, cancelled or stopped.

A request's rows are its own `Stream`'s (generation/sampling.py): the same checks, stop texts and results
as `charlm generate`. What differs from running it alone is only that its rows share the matrix products
with other rows, and that rows without a seed are sampled with the batch's own generator.
"""

from __future__ import annotations

import torch

from charlm.generation.fast_step import FastStep, read_context, reset_rows
from charlm.generation.sampling import sample_next
from charlm.serve.jobs import Job, failure


class Batch:
    def __init__(self, model, step: FastStep, device):
        self.model, self.run_step, self.device = model, step, device
        self.jobs: list[Job] = []
        self.hidden = None
        self.current: torch.Tensor | None = None
        self.generator = torch.Generator(device=device)
        self.generator.seed()  # fresh randomness, apart from torch's global generator
        self.plan: list = []

    @property
    def rows(self) -> int:
        return 0 if self.current is None else len(self.current)

    def join(self, job: Job) -> None:
        """The job's rows after its prefix (read here, in the worker), from the next step on."""
        context = job.stream.context
        hidden = read_context(self.model, context)
        if self.hidden is None:
            self.hidden, self.current = hidden, context[:, -1]
        else:
            self.hidden = _cat(self.hidden, hidden)
            self.current = torch.cat([self.current, context[:, -1]])
        self.jobs.append(job)
        self.plan = self._plan()

    def step(self) -> list[list[int]] | None:
        """One step of every row; the ids of each job's rows on the host when one is streamed (else None)."""
        # one model, one reset id (<eod> for a run trained with the reset; else None): every stream's is the same
        reset = self.jobs[0].stream.reset if self.jobs else None
        logits, self.hidden = self.run_step(self.current, reset_rows(self.hidden, self.current, reset))
        current = logits.argmax(-1)  # what a set of rows that failed to sample reads on (it leaves at once)
        for options, rows, members in self.plan:
            try:
                self._sample(logits, current, options, rows, members)
            except Exception as error:  # these rows fail alone: the other requests of the batch go on
                for job, _, _ in members:
                    job.failed = failure(error)
        self.current = current
        for job in self.jobs:
            job.written += 1
        if not any(job.streamed for job in self.jobs):
            return None
        host, spans = current.tolist(), self._spans()
        return [host[start:end] for start, end in spans]

    def _sample(self, logits: torch.Tensor, current: torch.Tensor, options, rows, members) -> None:
        """The next ids of one set of rows that share their options, into `current`, recorded by their streams."""
        if options is None:  # a repetition penalty or a mix: the stream samples its own rows
            (job, start, end), *_ = members
            current[start:end] = job.stream.choose(logits[start:end])
            return
        chosen = logits.index_select(0, rows)
        temperature, top_k, top_p = options
        ids = sample_next(chosen, temperature=temperature, top_k=top_k, top_p=top_p, generator=self.generator)
        log_probs = chosen.float().log_softmax(-1).gather(1, ids[:, None]).squeeze(1)
        current.index_copy_(0, rows, ids)
        at = 0
        for job, start, end in members:
            job.stream.record(ids[at : at + end - start], log_probs[at : at + end - start])
            at += end - start

    def finished(self) -> list[Job]:
        """The jobs done after this step (length reached, every sample stopped) or cancelled; their rows leave."""
        done, keep = [], []
        for job, (start, end) in zip(self.jobs, self._spans(), strict=True):
            ids = self.current[start:end]
            over = job.failed is not None or job.stream.all_stopped(ids, job.written) or job.written >= job.length
            if over or job.cancelled.is_set():
                done.append(job)
            else:
                keep.extend(range(start, end))
        if done:
            self.jobs = [job for job in self.jobs if job not in done]
            rows = torch.tensor(keep, dtype=torch.long, device=self.current.device)
            self.hidden, self.current = _select(self.hidden, rows), self.current.index_select(0, rows)
            self.plan = self._plan()
        return done

    def _spans(self) -> list[tuple[int, int]]:
        spans, start = [], 0
        for job in self.jobs:
            spans.append((start, start + job.rows))
            start += job.rows
        return spans

    def _plan(self) -> list:
        """(options, the rows' indices, [(job, start, end)]) per set of jobs sampled in one call; a job with a
        repetition penalty alone, with options None."""
        together: dict = {}
        plan = []
        for job, (start, end) in zip(self.jobs, self._spans(), strict=True):
            options = job.sampling()
            if options is None:
                plan.append((None, None, [(job, start, end)]))
            else:
                together.setdefault(options, []).append((job, start, end))
        for options, members in together.items():
            rows = torch.cat([torch.arange(start, end) for _, start, end in members]).to(self.device)
            plan.append((options, rows, members))
        return plan


def _cat(a, b):
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y], 1) for x, y in zip(a, b, strict=True))
    return torch.cat([a, b], 1)


def _select(hidden, rows: torch.Tensor):
    if isinstance(hidden, tuple):
        return tuple(h.index_select(1, rows) for h in hidden)
    return hidden.index_select(1, rows)
