"""The tuning flow on the real broker: `metrics` and `dwcp.config` in (bounded), every verdict
on `optimizer.actions`, applied settings on `dwcp.config`, a malformed setting on the DLQ."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import msgspec
import pytest
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient, ConfigResource

from dataflows.tune import kafka_flow, tuner_context
from novacron_ml.app.tune_demo import ClosedLoop
from novacron_ml.core.kafka import (
    client_config,
    delete_topics,
    ensure_topics,
    produce,
    read_topic,
)
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from novacron_ml.core.tuning import KnobSetting, Recommendation

pytestmark = pytest.mark.kafka


@pytest.fixture
def tune_topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    names = {
        "metrics": f"test.{suffix}.metrics",
        "dlq": f"test.{suffix}.metrics.dlq",
        "optimizer_actions": f"test.{suffix}.optimizer.actions",
        "dwcp_config": f"test.{suffix}.dwcp.config",
    }
    ensure_topics(kafka_bootstrap, list(names.values())[:3], compacted=[names["dwcp_config"]])
    yield names
    delete_topics(kafka_bootstrap, names.values())


def test_tune_flow_on_kafka(kafka_bootstrap: str, tune_topics: dict[str, str]) -> None:
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "tail": False},
        topics=tune_topics,
        tune={"mode": "apply", "canary_fraction": 1.0},
    )
    now = int(time.time() // 60 * 60_000)
    sim = FleetSimulator(
        FleetConfig(hosts=3, clusters=1, duration_s=1800, step_s=10, start_ms=now - 3_600_000)
    )
    loop = ClosedLoop(sim, tuner_context(settings), 1.0)
    sim.hook = loop.hook  # the hosts report link and payload mix; settings stay (open loop)
    produce(kafka_bootstrap, tune_topics["metrics"], sim.timed_messages("json"))
    operator = KnobSetting(host="host-002", hde_level=5, hde_chunk_kib=64, hde_window_log=17,
                           version=1, source="operator")  # fmt: skip
    # an operator sets a host with kcat, as docs/TUNING.md shows (and mistypes another)
    lines = f"host-002|{msgspec.json.encode(operator).decode()}\nhost-001|not a setting\n"
    kcat("-P", "-K", "|", "-t", tune_topics["dwcp_config"], stdin=lines, bootstrap=kafka_bootstrap)
    run_main(kafka_flow(settings))

    # what an operator's consumer sees: kcat reads optimizer.actions, key and value
    out = kcat("-C", "-e", "-q", "-f", "%k|%s\n", "-t", tune_topics["optimizer_actions"],
               bootstrap=kafka_bootstrap)  # fmt: skip
    pairs = [line.split("|", 1) for line in out.splitlines() if line]
    recs = [msgspec.json.decode(v, type=Recommendation) for _k, v in pairs]
    assert recs and all(k == r.host for (k, _v), r in zip(pairs, recs, strict=True))
    assert len(recs) == len(read_topic(kafka_bootstrap, tune_topics["optimizer_actions"]))
    assert {r.host for r in recs} == {"host-000", "host-001", "host-002"}
    assert all(r.mode == "apply" and r.model == "dqn_compression@1" for r in recs)
    assert any(r.allowed for r in recs) and all(r.assumed == [] for r in recs)
    records = read_topic(kafka_bootstrap, tune_topics["dwcp_config"])
    assert records[1].value == b"not a setting"  # the two produced above come first
    published = [msgspec.json.decode(r.value, type=KnobSetting) for r in records[2:]]
    assert all(r.key == s.host.encode() for r, s in zip(records[2:], published, strict=True))
    changes = [r for r in recs if r.allowed]
    assert [(s.host, s.source) for s in published] == [(r.host, "optimizer") for r in changes]
    assert len(changes) > 0
    # open loop: the settings never reach the simulated hosts, which keep reporting the
    # default they run; the flow says so (not-applied) instead of judging a change that never
    # happened (before hosts reported their setting, these came back as reverts)
    assert any(r.action == "not-applied" for r in recs)
    assert not any(r.action == "revert" for r in recs)
    dlq = read_topic(kafka_bootstrap, tune_topics["dlq"])
    assert len(dlq) == 1 and dlq[0].headers["novacron.reason"] == b"bad_setting"
    assert dlq[0].value == b"not a setting" and dlq[0].key == b"host-001"
    # the broker keeps dwcp.config compacted: the latest setting per host survives
    admin = AdminClient(client_config(kafka_bootstrap))
    resource = ConfigResource(ConfigResource.Type.TOPIC, tune_topics["dwcp_config"])
    described = admin.describe_configs([resource])[resource].result(timeout=30)
    assert described["cleanup.policy"].value == "compact"


def kcat(*args: str, bootstrap: str, stdin: str | None = None) -> str:
    """Debian's kcat (scripts/tools.sh) against the test broker; its output."""
    binary = shutil.which("kcat")
    assert binary, "kcat missing: run scripts/tools.sh"
    done = subprocess.run([binary, "-b", bootstrap, *args], input=stdin, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout
