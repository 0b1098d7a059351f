"""Telegraf's default Kafka output (line protocol, tests/fixtures/telegraf/) as it comes:
no dead letters, tags in the series' identity, text fields skipped and counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from novacron_ml.core.schema import series_labels, split_series_key
from operators.ingest.parse import MessageParser, ParseLimits

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "telegraf"
PLUGINS = sorted(p.stem for p in FIXTURES.glob("*.lp"))
NO_CLOCK = ParseLimits(max_event_age_ms=0, max_event_future_ms=0)  # fixtures are from 2023


def parse_fixture(name: str, limits: ParseLimits = NO_CLOCK) -> tuple[list, list, MessageParser]:
    parser = MessageParser(limits)
    events, dead = [], []
    for line in (FIXTURES / f"{name}.lp").read_bytes().splitlines():
        e, d = parser.parse(line + b"\n")  # one metric per Kafka message, as Telegraf sends
        events += e
        dead += d
    return events, dead, parser


def test_every_listed_input_plugin_has_a_fixture() -> None:
    wanted = {"cpu", "mem", "disk", "diskio", "net", "system", "processes", "procstat"}
    wanted |= {"docker", "http_response", "prometheus"}
    assert wanted <= set(PLUGINS)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_default_output_gives_events_and_no_dead_letters(plugin: str) -> None:
    events, dead, _ = parse_fixture(plugin)
    assert dead == []
    assert events
    for e in events:
        assert e.host == "web01" and e.cluster == "default"  # no [global_tags]: the default


def test_a_whole_batch_in_one_message_parses_the_same() -> None:
    payload = (FIXTURES / "docker.lp").read_bytes()
    events, dead = MessageParser(NO_CLOCK).parse(payload)
    assert dead == [] and len(events) == len(parse_fixture("docker")[0])


def test_per_cpu_series_stay_apart() -> None:
    events, _, _ = parse_fixture("cpu")
    idle = {e.series: e.value for e in events if e.metric == "cpu_usage_idle"}
    assert len(idle) == 3
    assert {series_labels(s)["cpu"] for s in idle} == {"cpu0", "cpu1", "cpu-total"}
    assert all(split_series_key(s) == ("default", "web01", "cpu_usage_idle") for s in idle)


def test_tags_with_slashes_are_part_of_an_unambiguous_key() -> None:
    events, _, _ = parse_fixture("http_response")
    times = [e for e in events if e.metric == "http_response_response_time"]
    assert len(times) == 1
    key = times[0].series
    assert split_series_key(key) == ("default", "web01", "http_response_response_time")
    assert series_labels(key) == {
        "method": "GET",
        "result": "success",
        "server": "http://127.0.0.1:8080/health",
        "status_code": "200",
    }


def test_text_and_boolean_fields_are_skipped_and_counted_not_fatal() -> None:
    events, dead, parser = parse_fixture("docker")
    assert dead == []
    metrics = {e.metric for e in events}
    assert "docker_container_status_exitcode" in metrics  # beside oomkilled=false
    assert "docker_container_mem_usage_percent" in metrics  # beside container_id="..."
    assert not any("container_id" in m or "oomkilled" in m for m in metrics)
    assert parser.skipped == {"string_field": 4, "boolean_field": 1}


def test_a_line_of_text_fields_only_is_counted_not_dead_lettered() -> None:
    parser = MessageParser(NO_CLOCK)
    events, dead = parser.parse(
        b'system,host=web01 uptime_format="14 days, 11:07" 1700000000000000000\n'
    )
    assert events == [] and dead == [] and parser.skipped == {"string_field": 1}


def test_cluster_from_a_tag_or_the_setting() -> None:
    line = b"mem,host=web01,cluster=eu-1 used_percent=15.9 1700000000000000000"
    events, _ = MessageParser(NO_CLOCK).parse(line)
    assert events[0].cluster == "eu-1" and events[0].labels is None
    strict = ParseLimits(max_event_age_ms=0, max_event_future_ms=0, default_cluster="")
    events, dead = MessageParser(strict).parse(
        b"mem,host=web01 used_percent=15.9 1700000000000000000"
    )
    assert events == [] and [d.reason.value for d in dead] == ["missing_field"]


def test_ignored_tags_leave_the_identity() -> None:
    limits = ParseLimits(
        max_event_age_ms=0, max_event_future_ms=0, ignore_tags=frozenset({"fstype", "mode"})
    )
    events, _, _ = parse_fixture("disk", limits)
    assert {tuple(sorted((e.labels or {}).keys())) for e in events} == {("device", "path")}


def test_one_overflowing_timestamp_spoils_only_its_line() -> None:
    payload = b"mem,host=a used=1i 1700000000000000000\nmem,host=b used=2i 9" + b"9" * 400 + b"\n"
    events, dead = MessageParser(NO_CLOCK).parse(payload)
    assert [e.host for e in events] == ["a"]
    assert [d.reason.value for d in dead] == ["bad_timestamp"] and dead[0].detail.startswith(
        "line 2"
    )


def test_an_undecodable_line_spoils_only_itself() -> None:
    payload = b"mem,host=a used=1i 1700000000000000000\nmem,host=\xff used=2i 1700000000000000000\n"
    events, dead = MessageParser(NO_CLOCK).parse(payload)
    assert [e.host for e in events] == ["a"]
    assert [d.reason.value for d in dead] == ["undecodable"] and dead[0].payload.startswith(
        b"mem,host="
    )


# -- JSON producers ------------------------------------------------------------------------------

JSON_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def parse_json_lines(path: Path) -> tuple[list, list, MessageParser]:
    parser = MessageParser(NO_CLOCK)
    events, dead = [], []
    for line in path.read_bytes().splitlines():
        e, d = parser.parse(line)
        events += e
        dead += d
    return events, dead, parser


def test_telegraf_json_serializer() -> None:
    events, dead, parser = parse_json_lines(
        JSON_FIXTURES / "telegraf" / "json" / "cpu_mem_disk.json"
    )
    assert dead == []
    by_metric = {e.metric: e for e in events}
    assert by_metric["cpu_usage_idle"].labels == {"cpu": "cpu0"}
    assert by_metric["cpu_usage_idle"].ts_ms == 1_700_000_000_000  # json_timestamp_units = 1s
    assert by_metric["disk_free"].labels == {
        "device": "sda1",
        "fstype": "ext4",
        "mode": "rw",
        "path": "/",
    }
    assert "docker_container_status_exitcode" in by_metric
    assert parser.skipped == {"string_field": 2, "boolean_field": 1}


def test_telegraf_json_batch_format() -> None:
    events, dead, _ = parse_json_lines(JSON_FIXTURES / "telegraf" / "json" / "batch.json")
    assert dead == [] and {e.metric for e in events} >= {"system_load1", "net_bytes_recv"}


def test_prometheus_kafka_adapter_json() -> None:
    events, dead, parser = parse_json_lines(
        JSON_FIXTURES / "prometheus_kafka_adapter" / "samples.json"
    )
    assert dead == []
    assert [(e.host, e.cluster, e.metric) for e in events] == [
        ("web01:9100", "default", "node_memory_MemAvailable_bytes"),
        ("web01:9100", "default", "node_network_receive_bytes_total"),
        ("web01:9100", "eu-1", "node_load1"),
    ]
    assert events[1].labels == {"device": "eth0", "job": "node"}
    assert events[0].ts_ms == 1_700_000_000_000
    assert parser.skipped == {"stale_marker": 1}


def test_a_bad_sample_of_another_producer_keeps_its_reason() -> None:
    parser = MessageParser(NO_CLOCK)
    _, dead = parser.parse(
        b'{"timestamp":"soon","value":"1","name":"up","labels":{"instance":"a"}}'
    )
    assert [d.reason.value for d in dead] == ["bad_timestamp"]
    _, dead = parser.parse(
        b'{"metrics":[{"name":"cpu","fields":{"x":1},"tags":{"host":"a"},"timestamp":1700000000},{"name":"cpu"}]}'
    )
    assert [d.reason.value for d in dead] == ["wrong_type"] and dead[0].detail.startswith("[1]")
    _, dead = parser.parse(b'{"unit":"ms"}')
    assert [d.reason.value for d in dead] == ["unknown_field"]  # ours, with its own message


def test_only_the_tag_that_names_the_host_leaves_the_identity() -> None:
    doc = (
        b'{"timestamp":"2023-11-14T22:13:20Z","value":"1","name":"up",'
        b'"labels":{"host":"web01","instance":"web01:9100","job":"node"}}'
    )
    (event,), dead = MessageParser(NO_CLOCK).parse(doc)
    assert dead == [] and event.host == "web01"
    assert event.labels == {"instance": "web01:9100", "job": "node"}  # two exporters stay apart
