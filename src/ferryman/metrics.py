"""Prometheus metrics: collected when scraped, from the pool, the request counters and
``/proc``, and written by ``prometheus_client`` in its exposition format.

Nothing here runs per request: the request path only adds to the counters of
``http/stats.py``; this module turns them, and the pool's own counters, into metric
families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .census import AppView, proc_usage
from .pool import RetireReason

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
RETIRE_REASONS = (
    RetireReason.IDLE,
    RetireReason.RESTART,
    RetireReason.DETACHED,
    RetireReason.UNREACHABLE,
    RetireReason.LENT,
    RetireReason.DIED,
)


class PoolCollector:
    """A prometheus_client collector over the apps, read at each scrape."""

    def __init__(self, apps: Sequence[AppView], now: float) -> None:
        self.apps = apps
        self.now = now

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ferryman_requests", "Requests answered, by app and status class.",
            labels=["app", "status"],
        )  # fmt: skip
        duration = HistogramMetricFamily(
            "ferryman_request_duration_seconds",
            "From a request's last byte to its response's last byte.",
            labels=["app"],
        )
        queue_wait = HistogramMetricFamily(
            "ferryman_queue_wait_seconds",
            "How long requests waited for a process (0 for those that got one at once).",
            labels=["app"],
        )
        queue = GaugeMetricFamily(
            "ferryman_queue_length", "Requests waiting for a process.", labels=["app"]
        )
        processes = GaugeMetricFamily(
            "ferryman_processes", "App processes by state.", labels=["app", "state"]
        )
        spawning = GaugeMetricFamily(
            "ferryman_spawning", "1 while a process of the app is being started.", labels=["app"]
        )
        spawns = CounterMetricFamily(
            "ferryman_spawns", "Processes started and ready.", labels=["app"]
        )
        failures = CounterMetricFamily(
            "ferryman_spawn_failures", "Processes that failed to start.", labels=["app"]
        )
        restarts = CounterMetricFamily("ferryman_restarts", "Restarts of the app.", labels=["app"])
        recycles = CounterMetricFamily(
            "ferryman_process_retirements",
            "Processes taken out of service, by reason.",
            labels=["app", "reason"],
        )
        sessions = GaugeMetricFamily(
            "ferryman_process_sessions", "Requests a process serves now.", labels=["app", "pid"]
        )
        busyness = GaugeMetricFamily(
            "ferryman_process_busyness",
            "Sessions divided by the process's concurrency (sessions when unlimited).",
            labels=["app", "pid"],
        )
        processed = CounterMetricFamily(
            "ferryman_process_requests", "Requests a process has served.", labels=["app", "pid"]
        )
        rss = GaugeMetricFamily(
            "ferryman_process_resident_memory_bytes",
            "Resident memory of an app process.",
            labels=["app", "pid"],
        )
        cpu = CounterMetricFamily(
            "ferryman_process_cpu_seconds",
            "CPU time (user and system) of an app process.",
            labels=["app", "pid"],
        )
        for view in self.apps:
            group = view.group
            name = group.name
            stats = view.app.stats
            for index, label in enumerate(STATUS_CLASSES, start=1):
                requests.add_metric([name, label], stats.by_class[index])
            duration.add_metric([name], stats.duration.cumulative(), sum_value=stats.duration.total)
            # Requests that never waited are not observed one by one: they are the
            # sessions opened minus those that waited.
            at_once = max(0, group.sessions_opened - stats.queue_wait.count)
            queue_wait.add_metric(
                [name], stats.queue_wait.cumulative(at_once), sum_value=stats.queue_wait.total
            )
            queue.add_metric([name], group.waiting())
            processes.add_metric([name, "ready"], len(group.processes))
            processes.add_metric([name, "retiring"], len(group.retiring))
            spawning.add_metric([name], 1 if group.spawning else 0)
            spawns.add_metric([name], group.spawns)
            failures.add_metric([name], group.spawn_failures)
            restarts.add_metric([name], group.restarts)
            for reason in RETIRE_REASONS:
                recycles.add_metric([name, reason], group.retired.get(reason, 0))
            for process in (*group.processes, *group.retiring):
                pid = str(process.pid)
                sessions.add_metric([name, pid], process.sessions)
                busyness.add_metric([name, pid], process.busyness())
                processed.add_metric([name, pid], process.processed)
                usage = proc_usage(process.pid)
                if usage is not None:
                    cpu.add_metric([name, pid], usage[0])
                    rss.add_metric([name, pid], usage[1])
        yield from (requests, duration, queue_wait, queue, processes, spawning, spawns)
        yield from (failures, restarts, recycles, sessions, busyness, processed, rss, cpu)


def render_metrics(apps: Sequence[AppView], now: float) -> tuple[bytes, str]:
    """The exposition text and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(apps, now))
    return generate_latest(registry), CONTENT_TYPE_LATEST
