"""metrics.recorder: the hot path's per-thread tallies expose exactly what prometheus-client's
own values would, from any number of threads, ended or running, scrape after scrape."""

from __future__ import annotations

import threading

from gradserve import metrics
from prometheus_client import CollectorRegistry, Histogram

R = metrics.REGISTRY
# Exactly on a bound, between bounds, below the first, beyond the last (+Inf only).
DURATIONS = [0.0001, 0.0003, 0.00002, 0.5, 1.0, 75.0, 0.0025]


def _in_threads(work, n: int = 4) -> None:
    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _samples(metric, registry: CollectorRegistry | None = None) -> dict[tuple, float]:
    """(sample name, labels) -> value, without the _created timestamps."""
    families = registry.collect() if registry is not None else metric.collect()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families
        for s in f.samples
        if not s.name.endswith("_created")
    }


def test_histogram_through_tallies_exposes_what_prometheus_client_would():
    method = "/test.Recorder/Histogram"
    hot = metrics.recorder(metrics.REQUEST_DURATION.labels(method))
    direct = Histogram("direct", "", ["method"], buckets=metrics.DURATION_BUCKETS, registry=None)

    def work(i: int) -> None:
        for d in DURATIONS[i:]:
            hot.observe(d)
            direct.labels(method).observe(d)

    for _ in range(2):  # a second scrape adds only what is new
        _in_threads(work)
        got = {
            k: v
            for k, v in _samples(None, R).items()
            if k[0].startswith("gradserve_request_duration_seconds") and ("method", method) in k[1]
        }
        want = {
            (name.replace("direct", "gradserve_request_duration_seconds"), labels): v
            for (name, labels), v in _samples(direct).items()
        }
        assert got == want


def test_counter_and_gauge_through_tallies():
    method, code = "/test.Recorder/Counter", "OK"
    requests = metrics.recorder(metrics.REQUESTS.labels(method, code))
    inflight = metrics.recorder(metrics.INFLIGHT_REQUESTS)
    labels = {"method": method, "code": code}
    before = R.get_sample_value("gradserve_inflight_requests")
    started = threading.Barrier(5)
    done = threading.Event()

    def running(i: int) -> None:  # still running when the registry is collected
        for _ in range(10 + i):
            requests.inc()
        inflight.inc()
        started.wait()
        done.wait()
        inflight.dec()

    threads = [threading.Thread(target=running, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    assert R.get_sample_value("gradserve_requests_total", labels) == 10 + 11 + 12 + 13
    assert R.get_sample_value("gradserve_inflight_requests") == before + 4
    done.set()
    for t in threads:
        t.join()
    inflight.inc(2)  # this thread's tally; another's decrements it
    _in_threads(lambda i: inflight.dec(), n=2)
    assert R.get_sample_value("gradserve_requests_total", labels) == 46
    assert R.get_sample_value("gradserve_inflight_requests") == before


def test_one_recorder_per_value():
    child = metrics.REQUEST_MESSAGE_BYTES.labels("/test.Recorder/Same")
    assert metrics.recorder(child) is metrics.recorder(child)
    assert (
        metrics.recorder(metrics.GRAPH_CACHE_HITS).inc
        == metrics.recorder(metrics.GRAPH_CACHE_HITS).inc
    )


def test_every_hot_metric_is_folded_when_collected():
    """A hot metric registered as itself would be collected without the tallies' updates."""
    exposed = {f.name for f in R.collect()}
    for metric in metrics.HOT_METRICS:
        name = metric._name
        assert name in exposed, name
        registered = [c for c in R._collector_to_names if name in R._collector_to_names[c]]
        assert registered and registered[0] is not metric, name


def test_histogram_buckets_are_prometheus_clients_fields():
    """`_TallyHistogram` adds to these fields of prometheus-client's Histogram."""
    h = Histogram("fields", "", buckets=(1.0, 2.0), registry=None)
    assert h._upper_bounds == [1.0, 2.0, float("inf")]
    h._buckets[1].inc(3)
    h._sum.inc(4.5)
    samples = _samples(h)
    assert samples[("fields_bucket", (("le", "2.0"),))] == 3
    assert samples[("fields_sum", ())] == 4.5
