"""Series bounds: a label explosion is refused, counted and dead-lettered, not a memory blow-up."""

from __future__ import annotations

from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.core.deadletter import Reason
from novacron_ml.core.features import FeatureConfig
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import Settings
from operators.features.engine import FeatureEngine

T0 = 1_790_000_000_000


def ev(host: str, metric: str, ts: int = T0) -> MetricEvent:
    return MetricEvent(ts, host, "c", metric, 1.0)


def test_series_beyond_the_per_host_bound_are_refused() -> None:
    engine = FeatureEngine(FeatureConfig(max_series_per_host=2))
    engine.ingest([ev("a", "m1"), ev("a", "m2"), ev("a", "m3"), ev("b", "m1")], T0)
    assert engine.n_series == 3
    assert [(e.host, e.metric) for e in engine.over_limit] == [("a", "m3")]
    engine.over_limit.clear()
    engine.ingest([ev("a", "m1", T0 + 5000), ev("a", "m3", T0 + 5000)], T0)  # still refused
    assert [e.metric for e in engine.over_limit] == ["m3"]


def test_the_total_bound_and_room_after_eviction() -> None:
    engine = FeatureEngine(FeatureConfig(max_series=2, idle_ttl_s=60.0))
    engine.ingest([ev("a", "m1"), ev("b", "m1"), ev("c", "m1")], T0)
    assert engine.n_series == 2 and [e.host for e in engine.over_limit] == ["c"]
    engine.over_limit.clear()
    engine.advance(T0 + 3_600_000)  # both idle: evicted
    engine.ingest([ev("c", "m1", T0 + 3_600_000)], T0 + 3_600_000)
    assert engine.n_series == 1 and engine.over_limit == []


def test_the_flow_dead_letters_refused_series_and_keeps_the_rest() -> None:
    lines = [
        b"app,host=web01,request_id=r%d latency_ms=1 %d" % (i, (T0 + i * 1000) * 10**6)
        for i in range(50)
    ]
    settings = Settings(
        features={"max_series_per_host": 10, "shards": 1},
        ingest={"max_event_age_s": 0, "max_event_future_s": 0},
    )
    out = run_in_process(settings, MessageSource(lambda: ((b"", v) for v in lines), 100))
    reasons = [d.reason for d in out.dead_letters]
    assert reasons == [Reason.SERIES_LIMIT] * 40
    assert out.dead_letters[0].key.startswith(b"default/web01/app_latency_ms{request_id=r")
