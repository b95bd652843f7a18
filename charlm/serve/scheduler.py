"""Where requests compute: `Scheduler` owns `Limits.computing` worker threads, a bounded queue and the batches.

A worker takes the next group from the queue and runs it: a batch of sampling requests (batch.py), which
other unseeded requests join at any step while it has rows to spare, or one request alone (a seeded sample,
beam search, scoring). A request is admitted when it joins a batch that is computing or will start at once,
when an idle worker will take it, or when fewer than `Limits.queue` requests are waiting; else `submit`
says no and the app answers 503.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import torch

from charlm.generation.fast_step import FastStep
from charlm.serve.batch import Batch
from charlm.serve.jobs import Job, Withdrawn, failure
from charlm.serve.limits import Limits


class Group:
    """What one worker runs: a batch's jobs (more may join until it is closed), or one job alone."""

    def __init__(self, job: Job):
        self.batched, self.weights = job.batched, job.weights
        self.jobs, self.incoming, self.rows, self.closed = [job], [job], job.rows, False

    def takes(self, job: Job, most_rows: int) -> bool:
        return (
            self.batched
            and job.batched
            and not self.closed
            and self.weights == job.weights
            and self.rows + job.rows <= most_rows
        )


class StepCache:
    """One FastStep per weights mode, shared by every batch: the first batch builds it (packs the weights,
    measures kernels) while others wait."""

    def __init__(self, model, rows: int):
        self.model, self.rows, self.made, self.building = model, rows, {}, threading.Lock()

    def get(self, weights: str) -> FastStep:
        with self.building:
            if weights not in self.made:
                self.made[weights] = FastStep(self.model, weights, rows=self.rows)
            return self.made[weights]


JOIN_SECONDS = 5.0  # how long close() waits for a worker still finishing a step


def join_workers(threads: list[threading.Thread], wait: float = JOIN_SECONDS) -> None:
    """Wait (up to `wait` s each) for the worker threads to end: one still alive in torch as the interpreter ends
    can abort the process ("terminate called without an active exception", exit -6: seen once after a drain)."""
    for thread in threads:
        if thread.is_alive() and thread is not threading.current_thread():
            thread.join(wait)


class Scheduler:
    def __init__(self, model, limits: Limits, *, device):
        self.model, self.limits, self.device = model, limits, device
        self.lock = threading.Condition()
        self.pending: deque[Group] = deque()
        self.running: list[Group] = []
        self.idle, self.closed = limits.computing, False
        self.steps = 0  # rows stepped by batches: a request that is cancelled stops adding to it
        self.steps_made = StepCache(model, limits.batch_rows)
        self.on_batch_step = None  # called with the rows of each batch step (the server's metrics), if set
        named = (f"charlm-serve-{n}" for n in range(limits.computing))
        self.threads = [threading.Thread(target=self._work, name=name, daemon=True) for name in named]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        """Refuse new work, cancel what waits, and let the workers end (see join_workers)."""
        with self.lock:
            self.closed = True
            for group in self.pending:
                for job in group.jobs:
                    job.cancelled.set()
            self.pending.clear()
            self.lock.notify_all()
        join_workers(self.threads)

    def submit(self, job: Job) -> bool:
        """Admit the job (True), or refuse it: the queue is full (False)."""
        with self.lock:
            if self.closed:
                return False
            queued = list(self.pending)[self.idle :]  # the groups no idle worker will take at once
            waiting = sum(len(group.jobs) for group in queued)
            for group in [*self.running, *self.pending]:
                if group.takes(job, self.limits.batch_rows) and (group not in queued or waiting < self.limits.queue):
                    group.jobs.append(job)
                    group.incoming.append(job)
                    group.rows += job.rows
                    return True
            if len(self.pending) >= self.idle and waiting >= self.limits.queue:
                return False
            self.pending.append(Group(job))
            self.lock.notify()
            return True

    def jobs(self) -> list[Job]:
        """Every request's job, waiting or computing."""
        with self.lock:
            return [job for group in [*self.pending, *self.running] for job in group.jobs]

    def withdraw(self, job: Job) -> None:
        """The request is answered or gone (its client left, its time is up): a computing job stops at its
        next step, a waiting one leaves the queue."""
        job.cancelled.set()
        with self.lock:
            for group in [group for group in self.pending if job in group.jobs]:
                group.jobs.remove(job)
                group.incoming.remove(job)
                group.rows -= job.rows
                if not group.jobs:
                    self.pending.remove(group)

    def stats(self) -> dict:
        with self.lock:
            starting, queued = list(self.pending)[: self.idle], list(self.pending)[self.idle :]
            return {
                "computing": sum(len(group.jobs) for group in [*self.running, *starting]),
                "waiting": sum(len(group.jobs) for group in queued),
                "batches": sum(group.batched for group in self.running),
                "steps": self.steps,
            }

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.pending and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                group = self.pending.popleft()
                self.idle -= 1
                self.running.append(group)
            try:
                with torch.inference_mode():
                    self._batch(group) if group.batched else run_alone(group.jobs[0], self)
            finally:
                with self.lock:
                    group.closed = True
                    self.running.remove(group)
                    self.idle += 1

    def _batch(self, group: Group) -> None:
        batch = None
        try:
            while True:
                for job in self._joining(group, batch is not None and bool(batch.jobs)):
                    if job.length == 0:
                        job.reply.put("done", job.stream.results())
                    elif not job.cancelled.is_set():
                        batch = batch or Batch(self.model, self.steps_made.get(job.weights), self.device)
                        batch.join(job)
                if batch is None or not batch.jobs:
                    if group.closed:
                        return
                    continue
                done = self._advance(batch)
                with self.lock:  # their rows are free for others to join
                    group.rows -= sum(job.rows for job in done)
                    group.jobs = [job for job in group.jobs if job not in done]
        # every request of the batch (and those about to join) gets the error; the server goes on
        except Exception as e:
            with self.lock:
                group.closed = True
                waiting, group.incoming = group.incoming, []
            for job in [*(batch.jobs if batch is not None else []), *waiting]:
                job.reply.put("error", failure(e))

    def _advance(self, batch: Batch) -> list[Job]:
        """One step of the batch; each streamed job gets its characters, each finished one its samples."""
        ids = batch.step()
        self.steps += batch.rows
        now = time.monotonic()
        for job in batch.jobs:
            job.stepped(now)
        if self.on_batch_step is not None:
            self.on_batch_step(batch.rows)
        if ids is not None:
            for job, own in zip(batch.jobs, ids, strict=True):
                if job.streamed:
                    job.reply.put("chars", job.visible(own))
        done = batch.finished()
        for job in done:
            if job.failed is not None:
                job.reply.put("error", job.failed)
            elif not job.cancelled.is_set():
                job.reply.put("done", job.stream.results())
        return done

    def _joining(self, group: Group, busy: bool) -> list[Job]:
        """The jobs that arrived since the last step; the group closes (no one joins) when it has none left."""
        with self.lock:
            joining, group.incoming = group.incoming, []
            if not joining and not busy:
                group.closed = True
            gone = [job for job in joining if job.cancelled.is_set() or job.length == 0]
            group.rows -= sum(job.rows for job in gone)
            group.jobs = [job for job in group.jobs if job not in gone]
            return joining


def abort(scheduler: Scheduler, status: int, message: str) -> None:
    """Every request waiting or computing gets this error and stops at its next step (the server stops)."""
    for job in scheduler.jobs():
        if not job.cancelled.is_set():
            job.cancelled.set()
            job.reply.put("error", (status, message))


def run_alone(job: Job, scheduler: Scheduler) -> None:
    """A job that is not batched, in a worker: its result, or its error, goes to its reply."""
    if job.cancelled.is_set():
        return
    try:
        result = _stream_alone(job, scheduler) if job.stream is not None else job.work(job)
    except Withdrawn:  # nobody waits for it any more
        return
    except Exception as e:  # the request gets the error; the server goes on
        job.reply.put("error", failure(e))
    else:
        if not job.cancelled.is_set():
            job.reply.put("done", result)


def _stream_alone(job: Job, scheduler: Scheduler):
    """A seeded sample, by `Stream`'s own loop (`charlm generate`'s): it stops at the step after a cancel."""
    try:
        for ids in job.stream:
            scheduler.steps += job.rows
            job.stepped(time.monotonic())
            if job.streamed:
                job.reply.put("chars", job.visible(ids.tolist()))
            if job.cancelled.is_set():
                return None
        return job.stream.samples()
    finally:
        job.stream.close()  # here, in the worker's thread (a no-op after the last step)
