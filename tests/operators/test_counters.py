"""Cumulative counters to per-second rates."""

from __future__ import annotations

import pickle

from novacron_ml.core.schema import MetricEvent
from operators.ingest.counters import CounterRates


def ev(ts_s: float, value: float, metric: str = "net_bytes_recv", host: str = "h") -> MetricEvent:
    return MetricEvent(int(ts_s * 1000), host, "c", metric, value, {"interface": "eth0"})


def test_rates_resets_and_what_gives_no_rate() -> None:
    rates = CounterRates()
    out = rates.convert([ev(0, 1000), ev(10, 2000), ev(20, 2500), ev(20, 9999), ev(30, 100)])
    assert [(e.ts_ms, e.value) for e in out] == [(10_000, 100.0), (20_000, 50.0), (30_000, 10.0)]
    assert rates.skipped == {"first": 1, "not_after_last": 1}
    assert rates.resets == 1  # 2500 -> 100: restarted from zero, 100 in 10 s


def test_gauges_pass_untouched_and_in_order() -> None:
    rates = CounterRates()
    batch = [ev(0, 5, "cpu_usage_idle"), ev(0, 1000), ev(10, 6, "cpu_usage_idle"), ev(10, 3000)]
    out = rates.convert(batch)
    assert [(e.metric, e.value) for e in out] == [
        ("cpu_usage_idle", 5.0),
        ("cpu_usage_idle", 6.0),
        ("net_bytes_recv", 200.0),
    ]
    assert rates.convert(batch[:1]) == batch[:1]


def test_series_are_separate_and_state_survives_a_snapshot() -> None:
    rates = CounterRates()
    rates.convert([ev(0, 0, host="a"), ev(0, 0, host="b")])
    resumed = pickle.loads(pickle.dumps(rates))
    out = resumed.convert([ev(10, 10, host="a"), ev(10, 50, host="b")])
    assert [(e.host, e.value) for e in out] == [("a", 1.0), ("b", 5.0)]


def test_idle_counter_series_are_forgotten() -> None:
    rates = CounterRates(idle_ms=60_000)
    rates.convert([ev(0, 1, host="old"), ev(0, 1, host="live")])
    rates.convert([ev(120, 5, host="live")])
    assert rates.prune() == 1 and rates.n_series == 1
