"""The tuning flow on the real broker: `metrics` and `dwcp.config` in (bounded), every verdict
on `optimizer.actions`, applied settings on `dwcp.config`, a malformed setting on the DLQ."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient, ConfigResource

from dataflows.tune import kafka_flow, settings_at_start, tuner_context
from novacron_ml.app.tune_demo import ClosedLoop
from novacron_ml.core.kafka import (
    client_config,
    delete_topics,
    ensure_topics,
    produce,
    read_topic,
)
from novacron_ml.core.schema import rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from novacron_ml.core.tuning import ConsensusSetting, KnobSetting, Recommendation, consensus_key

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
    # what the flow reads to the end before it starts (its loops' settings at start)
    start = settings_at_start(
        KafkaSourceMessage(r.key, r.value, topic="t", partition=r.partition, offset=r.offset)
        for r in read_topic(kafka_bootstrap, tune_topics["dwcp_config"])
    )
    assert start == {"host-002": operator}
    run_main(kafka_flow(settings))

    # what an operator's consumer sees: kcat reads optimizer.actions, key and value
    out = kcat("-C", "-e", "-q", "-f", "%k|%s\n", "-t", tune_topics["optimizer_actions"],
               bootstrap=kafka_bootstrap)  # fmt: skip
    pairs = [line.split("|", 1) for line in out.splitlines() if line]
    every = [msgspec.json.decode(v, type=Recommendation) for _k, v in pairs]
    assert len(every) == len(read_topic(kafka_bootstrap, tune_topics["optimizer_actions"]))
    # the cluster's consensus (its leader, host-000, reports acp_* metrics) beside the hosts
    acp = [(k, r) for (k, _v), r in zip(pairs, every, strict=True) if r.subsystem == "consensus"]
    assert acp and all(k == "consensus/cluster-0" and r.host == "" for k, r in acp)
    assert all(r.model == "dqn_consensus@2" and r.mode == "apply" for _k, r in acp)
    recs = [r for r in every if r.subsystem == "compression"]
    assert recs and all(k == r.host for (k, _v), r in zip(pairs, every, strict=True) if r in recs)
    assert {r.host for r in recs} == {"host-000", "host-001", "host-002"}
    assert all(r.mode == "apply" and r.model == "dqn_compression@2" for r in recs)
    assert any(r.allowed for r in recs) and all(r.assumed == [] for r in recs)
    records = read_topic(kafka_bootstrap, tune_topics["dwcp_config"])
    assert records[1].value == b"not a setting"  # the two produced above come first
    consensus_records = [r for r in records[2:] if r.key.startswith(b"consensus/")]
    host_records = [r for r in records[2:] if not r.key.startswith(b"consensus/")]
    published = [msgspec.json.decode(r.value, type=KnobSetting) for r in host_records]
    assert all(r.key == s.host.encode() for r, s in zip(host_records, published, strict=True))
    changes = [r for r in recs if r.allowed]
    assert [(s.host, s.source) for s in published] == [(r.host, "optimizer") for r in changes]
    assert len(changes) > 0
    acp_settings = [msgspec.json.decode(r.value, type=ConsensusSetting) for r in consensus_records]
    acp_changes = [r for _k, r in acp if r.allowed]
    assert acp_changes and [s.version for s in acp_settings] == list(range(1, len(acp_changes) + 1))
    assert all(s.cluster == "cluster-0" and s.source == "optimizer" for s in acp_settings)
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


def test_a_restart_resumes_every_hosts_loop(
    kafka_bootstrap: str, tune_topics: dict[str, str], tmp_path: Path
) -> None:
    """`tune run` twice with recovery (the default), the second half of the metrics produced
    between the runs, publishes exactly the verdicts and settings of one uninterrupted run:
    cooldowns, pending changes, published verdicts and half-filled intervals survive the
    restart, the hosts' and the cluster's consensus loop alike. Without recovery the second
    run starts every host over and differs."""
    now = int(time.time() // 60 * 60_000)
    sim = FleetSimulator(
        FleetConfig(
            hosts=6, clusters=1, duration_s=2 * 3600, step_s=10, start_ms=now - 3 * 3_600_000
        )
    )
    loop = ClosedLoop(sim, tuner_context(Settings()), 1.0)
    sim.hook = loop.hook
    messages = list(sim.timed_messages("json"))
    half = messages[0][2] + 3_600_000 + 25_000  # mid-interval: a half-filled one is carried
    produce(kafka_bootstrap, tune_topics["metrics"], [m for m in messages if m[2] < half])
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=tune_topics["metrics"],
        NOVACRON_TOPICS_DLQ=tune_topics["dlq"],
        NOVACRON_TUNE_MODE="apply",
        NOVACRON_TUNE_CANARY_FRACTION="1.0",
    )
    resumed = dict(env, NOVACRON_TOPICS_OPTIMIZER_ACTIONS=tune_topics["optimizer_actions"],
                   NOVACRON_TOPICS_DWCP_CONFIG=tune_topics["dwcp_config"])  # fmt: skip
    command = [*TUNE_CLI, "--recovery-dir", str(tmp_path / "recovery")]
    first = tune_cli(command, resumed)
    assert "recovery state" in first and "(new)" in first
    produce(kafka_bootstrap, tune_topics["metrics"], [m for m in messages if m[2] >= half])
    assert "resuming" in tune_cli(command, resumed)

    clean = {k: f"{tune_topics[k]}.clean" for k in ("optimizer_actions", "dwcp_config")}
    ensure_topics(kafka_bootstrap, [clean["optimizer_actions"]], compacted=[clean["dwcp_config"]])
    tune_cli([*TUNE_CLI, "--no-recovery"], dict(
        env, NOVACRON_TOPICS_OPTIMIZER_ACTIONS=clean["optimizer_actions"],
        NOVACRON_TOPICS_DWCP_CONFIG=clean["dwcp_config"]))  # fmt: skip
    expected = verdicts(kafka_bootstrap, clean["optimizer_actions"])
    got = verdicts(kafka_bootstrap, tune_topics["optimizer_actions"])
    hosts = {f"host-00{i}" for i in range(6)}  # and the cluster's consensus loop
    assert len(expected) >= 12 and {v[0] for v in expected} == hosts | {"consensus/cluster-0"}
    assert {"change", "not-applied"} <= {v[5] for v in expected}  # state worth carrying
    assert got == expected
    settings = [r.value for r in read_topic(kafka_bootstrap, tune_topics["dwcp_config"])]
    assert sorted(settings) == sorted(
        r.value for r in read_topic(kafka_bootstrap, clean["dwcp_config"])
    )
    delete_topics(kafka_bootstrap, clean.values())

    # the contrast: the second half alone without the first run's state starts every host over
    fresh = {k: f"{tune_topics[k]}.fresh" for k in ("metrics", "optimizer_actions", "dwcp_config")}
    ensure_topics(kafka_bootstrap, [fresh["metrics"], fresh["optimizer_actions"]],
                  compacted=[fresh["dwcp_config"]])  # fmt: skip
    produce(kafka_bootstrap, fresh["metrics"], [m for m in messages if m[2] >= half])
    tune_cli([*TUNE_CLI, "--no-recovery"], dict(
        env, NOVACRON_TOPICS_METRICS=fresh["metrics"],
        NOVACRON_TOPICS_OPTIMIZER_ACTIONS=fresh["optimizer_actions"],
        NOVACRON_TOPICS_DWCP_CONFIG=fresh["dwcp_config"]))  # fmt: skip
    later = [v for v in expected if v[1] >= rfc3339_ms(half)]
    assert verdicts(kafka_bootstrap, fresh["optimizer_actions"]) != later
    delete_topics(kafka_bootstrap, fresh.values())


TUNE_CLI = [sys.executable, "-m", "novacron_ml.cli", "tune", "run", "--once", "--wait", "30"]


def tune_cli(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def verdicts(bootstrap: str, topic: str) -> list[tuple[object, ...]]:
    """Each host's verdicts in the order published (hosts interleave as batches fall)."""
    recs = [msgspec.json.decode(r.value, type=Recommendation) for r in read_topic(bootstrap, topic)]
    rows = [(r.host or consensus_key(r.cluster), r.ts, r.knob, r.old, r.new, r.action, r.allowed,
             r.guardrail) for r in recs]  # fmt: skip
    return sorted(rows, key=lambda row: row[0])  # stable: a host's own order is kept
