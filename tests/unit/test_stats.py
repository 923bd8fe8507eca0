"""The request counters: status classes and Prometheus-style cumulative buckets."""

from __future__ import annotations

from ferryman.http.app import HealthCheck
from ferryman.http.request import RequestHead
from ferryman.http.stats import BUCKETS, Histogram, RequestStats
from ferryman.pool import GroupOptions, Pool


def test_buckets_count_values_at_or_below_their_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.10001, 1.0, 5.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 1]
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 4), ("+Inf", 5)]
    assert histogram.cumulative(extra_zeros=3) == [("0.1", 5), ("1.0", 7), ("+Inf", 8)]
    assert histogram.count == 5 and abs(histogram.total - 6.20001) < 1e-9


def test_status_classes_and_durations() -> None:
    stats = RequestStats()
    for status in (200, 204, 304, 404, 499, 502, 0):
        stats.record(status, 0.002)
    assert stats.by_class == [1, 0, 2, 1, 2, 1]  # index 0: no status (cut short)
    assert stats.duration.count == 7
    assert stats.duration.cumulative()[0] == (repr(BUCKETS[0]), 7)


def test_the_health_check_answers_only_its_own_path() -> None:
    pool = Pool(2)
    group = pool.add_group("app", GroupOptions(min_instances=1))
    check = HealthCheck("/healthz", [group])

    def answer(method: bytes, target: bytes) -> int | None:
        head = RequestHead(method, target, b"1.1", [], b"x", b"1", b"1", False, b"x", b"80")
        found = check(head, 0.0)
        return None if found is None else found.status

    assert answer(b"GET", b"/") is None
    assert answer(b"GET", b"/healthzz") is None
    assert answer(b"GET", b"/healthz/x") is None
    assert answer(b"GET", b"/healthz") == 503
    group.spawning = True
    group.spawn_done(pid=1, concurrency=1, now=0.0)
    assert answer(b"GET", b"/healthz") == 200
    assert answer(b"HEAD", b"/healthz?from=lb") == 200
    assert answer(b"POST", b"/healthz") == 405
