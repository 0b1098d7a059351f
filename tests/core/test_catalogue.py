"""The metric catalogue and the series key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, catalogue_for, spec_for
from novacron_ml.core.schema import AnomalyType, series_key, series_labels, split_series_key
from novacron_ml.core.settings import CatalogueSettings

T = AnomalyType


@pytest.mark.parametrize(
    ("metric", "direction", "kind", "counter"),
    [
        ("cpu_usage_idle", -1, T.RESOURCE_EXHAUSTION, False),  # idle falling is exhaustion
        ("cpu_usage_user", +1, T.RESOURCE_EXHAUSTION, False),
        ("mem_available", -1, T.RESOURCE_EXHAUSTION, False),
        ("mem_available_percent", -1, T.RESOURCE_EXHAUSTION, False),
        ("mem_used_percent", +1, T.RESOURCE_EXHAUSTION, False),
        ("disk_free", -1, T.RESOURCE_EXHAUSTION, False),
        ("disk_used_percent", +1, T.RESOURCE_EXHAUSTION, False),
        ("net_bytes_recv", 0, T.THROUGHPUT_DROP, True),
        ("net_err_in", +1, T.ERROR_BURST, True),
        ("diskio_reads", +1, T.RESOURCE_EXHAUSTION, True),
        ("diskio_iops_in_progress", +1, T.RESOURCE_EXHAUSTION, False),
        ("processes_total", +1, T.RESOURCE_EXHAUSTION, False),  # a gauge despite its name
        ("http_response_response_time", +1, T.LATENCY_SPIKE, False),
        ("node_memory_MemAvailable_bytes", -1, T.RESOURCE_EXHAUSTION, False),
        ("node_network_receive_bytes_total", 0, T.THROUGHPUT_DROP, True),
        ("app_requests_total", 0, T.UNCLASSIFIED, True),
        ("app_errors_total", +1, T.ERROR_BURST, True),
        ("latency_p99_ms", +1, T.LATENCY_SPIKE, False),  # DWCP, exact
        ("edge_latency_seconds", +1, T.LATENCY_SPIKE, False),  # a name hint
        ("value", 0, T.UNCLASSIFIED, False),  # unknown: both directions
    ],
)
def test_catalogue_entries(metric: str, direction: int, kind: AnomalyType, counter: bool) -> None:
    spec = spec_for(metric)
    assert (spec.bad_direction, spec.anomaly_type, spec.counter) == (direction, kind, counter)
    assert spec.name == metric


def test_user_entries_come_first() -> None:
    settings = CatalogueSettings.model_validate(
        {
            "entries": [
                {"name": "cpu_usage_idle", "type": "unclassified", "bad": "both"},
                {"name": "app_queue_*", "type": "resource_exhaustion", "bad": "up"},
                {"name": "app_jobs_done", "counter": True},
            ]
        }
    )
    cat = catalogue_for(settings)
    assert cat.spec_for("cpu_usage_idle").bad_direction == 0
    assert cat.spec_for("app_queue_depth").anomaly_type is T.RESOURCE_EXHAUSTION
    assert cat.spec_for("app_jobs_done").counter
    assert cat.spec_for("mem_available").bad_direction == -1  # the built-in ones still apply
    assert catalogue_for(CatalogueSettings()) is DEFAULT_CATALOGUE


def test_plain_keys_are_unchanged() -> None:
    assert series_key("cluster-0", "host-000", "cpu_util") == "cluster-0/host-000/cpu_util"
    assert series_key("c", "h", "cpu_usage_idle", {"cpu": "cpu0"}) == "c/h/cpu_usage_idle{cpu=cpu0}"


def test_slashes_no_longer_make_two_series_one() -> None:
    assert series_key("c", "a/b", "m") != series_key("c", "a", "b/m")
    assert split_series_key(series_key("c", "a/b", "m")) == ("c", "a/b", "m")
    assert split_series_key(series_key("c", "a", "b/m")) == ("c", "a", "b/m")


def test_tag_order_does_not_matter() -> None:
    assert series_key("c", "h", "m", {"b": "2", "a": "1"}) == series_key(
        "c", "h", "m", {"a": "1", "b": "2"}
    )


names = st.text(min_size=1, max_size=12)


@given(names, names, names, st.none() | st.dictionaries(names, st.text(max_size=12), max_size=3))
def test_every_key_splits_back_into_its_parts(
    cluster: str, host: str, metric: str, labels: dict[str, str] | None
) -> None:
    key = series_key(cluster, host, metric, labels)
    assert split_series_key(key) == (cluster, host, metric)
    assert series_labels(key) == (labels or None)


def test_physical_bounds_from_the_unit() -> None:
    from novacron_ml.core.catalogue import physical_bounds

    assert physical_bounds(spec_for("memory_util")) == (0.0, 1.0)  # a ratio
    assert physical_bounds(spec_for("mem_used_percent")) == (0.0, 100.0)
    assert physical_bounds(spec_for("latency_p99_ms")) == (0.0, None)
    assert physical_bounds(spec_for("net_bytes_recv")) == (0.0, None)  # a counter's rate
    assert physical_bounds(spec_for("value")) == (None, None)
