"""GET /metrics: the server's figures in Prometheus' text format, through prometheus-client (the format, its
escaping and its histograms are that library's, not written here).

One registry per app (two servers in one process count apart): requests answered by route and status, time
to the first character and time per character of each generation, rows per batch step; read at each scrape
from the scheduler: requests waiting and computing, batches running, characters generated.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from charlm.serve.jobs import Job

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
PER_CHAR = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self, scheduler):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "charlm_requests", "Requests answered, by route and status", ["route", "status"], registry=self.registry
        )
        self.first_char = Histogram(
            "charlm_time_to_first_char_seconds",
            "From a generation's arrival to its first character",
            buckets=SECONDS,
            registry=self.registry,
        )
        self.per_char = Histogram(
            "charlm_time_per_char_seconds",
            "A generation's time per character after its first",
            buckets=PER_CHAR,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "charlm_batch_rows", "Rows stepped together in one batch step", buckets=ROWS, registry=self.registry
        )
        self.registry.register(SchedulerFigures(scheduler))

    def answered(self, route: str, status: int) -> None:
        self.requests.labels(route, str(status)).inc()

    def job_finished(self, job: Job) -> None:
        """A generation's timings, once, when its request is done with it."""
        if job.first_at is None or job.timed:
            return
        job.timed = True
        self.first_char.observe(max(0.0, job.first_at - job.arrived))
        if job.steps_timed > 1 and job.last_at is not None:
            self.per_char.observe(max(0.0, job.last_at - job.first_at) / (job.steps_timed - 1))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class SchedulerFigures:
    """The scheduler's own counts, read when Prometheus scrapes."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def describe(self):
        return []  # no figures to check at registration: they are read at each scrape

    def collect(self):
        stats = self.scheduler.stats()
        yield GaugeMetricFamily("charlm_queue_depth", "Requests waiting for a worker", value=stats["waiting"])
        yield GaugeMetricFamily("charlm_requests_computing", "Requests computing now", value=stats["computing"])
        yield GaugeMetricFamily("charlm_batches_running", "Batches computing now", value=stats["batches"])
        yield CounterMetricFamily("charlm_chars_generated", "Characters generated (rows stepped)", value=stats["steps"])


class Counting:
    """A pure ASGI middleware: each HTTP request counted by its route's template (so a client cannot make new
    series by inventing paths: an unknown path is "other") and the status it was answered with."""

    def __init__(self, app, *, metrics: ServeMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            self.metrics.answered(getattr(route, "path", "other"), status)
