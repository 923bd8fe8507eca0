"""RequestStats: what the request path counts for ``ferryman status`` and ``/metrics``.

Counters and fixed-bucket histograms only: a request adds to a few integers, and
everything else (rates, quantiles, Prometheus's text) is worked out when someone
asks, from these and from the pool.
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds (seconds) of the request duration and queue wait buckets: Prometheus's
#: defaults, from 5 ms to 10 s; a last bucket takes everything above.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Observations counted per bucket: ``counts[i]`` are those <= ``bounds[i]`` and above
    the bound before; ``counts[-1]`` those above every bound."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self, extra_zeros: int = 0) -> list[tuple[str, int]]:
        """Prometheus's buckets: (le, observations <= le), ending with +Inf; ``extra_zeros``
        are observations of 0 not counted one by one."""
        out = []
        running = extra_zeros
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class RequestStats:
    """Requests answered, by status class; their durations; the queue waits."""

    __slots__ = ("by_class", "duration", "queue_wait")

    def __init__(self) -> None:
        #: by_class[n]: responses with status nxx (index 0: cut short before a status).
        self.by_class = [0] * 6
        #: From a request's last byte to its response's last byte (seconds).
        self.duration = Histogram()
        #: How long requests that queued waited for a process; requests that got one at
        #: once are not observed here (they are the group's sessions minus these).
        self.queue_wait = Histogram()

    def record(self, status: int, seconds: float) -> None:
        index = status // 100
        self.by_class[index if 0 < index < 6 else 0] += 1
        self.duration.observe(seconds)
