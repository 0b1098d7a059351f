"""A two-process Bytewax cluster (`novacron-ml run --processes 2`) gives exactly the alerts and
dead letters of one process, and resumes from its recovery state."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from novacron_ml.app.malformed import with_malformed
from novacron_ml.cli.run import free_loopback_ports
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce, read_topic
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
RUN = [sys.executable, "-m", "bytewax.run", "dataflows.detect:flow"]
CLI = [sys.executable, "-m", "novacron_ml.cli"]


def test_two_processes_match_one(
    kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    ensure_topics(kafka_bootstrap, [kafka_topics["metrics"]], partitions=4)
    start = int(time.time() // 3600 * 3_600_000) - 3 * 3_600_000
    sim = FleetSimulator(
        FleetConfig(
            hosts=6, duration_s=2 * 3600, start_ms=start, seed=3, anomalies_per_host_per_hour=1.0
        )
    )
    produce(
        kafka_bootstrap,
        kafka_topics["metrics"],
        with_malformed(sim.timed_messages("json"), 0.001, 3, lambda: int(time.time() * 1000)),
    )
    single = {"alerts": kafka_topics["alerts"] + ".one", "dlq": kafka_topics["dlq"] + ".one"}
    ensure_topics(kafka_bootstrap, [*single.values(), kafka_topics["alerts"], kafka_topics["dlq"]])
    base = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_KAFKA_TAIL="false",
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
    )
    one = subprocess.run(
        RUN,
        env=dict(base, NOVACRON_TOPICS_ALERTS=single["alerts"], NOVACRON_TOPICS_DLQ=single["dlq"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    env = dict(
        base,
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
    )
    cluster = [*CLI, "run", "--processes", "2", "--once", "--recovery-dir", str(tmp_path / "rec")]
    two = subprocess.run(cluster, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    assert "starting 2 processes on 127.0.0.1:" in two.stderr
    assert two.stderr.count("records written in") == 2  # each process's own summary

    def keys(topic: str) -> list[bytes | None]:
        return sorted(r.key or b"" for r in read_topic(kafka_bootstrap, topic))

    alerts = keys(kafka_topics["alerts"])
    assert alerts and alerts == keys(single["alerts"])
    assert (
        len(read_topic(kafka_bootstrap, kafka_topics["dlq"]))
        == len(read_topic(kafka_bootstrap, single["dlq"]))
        > 0
    )
    # The cluster resumes from its recovery state: nothing re-published.
    again = subprocess.run(cluster, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming where it stopped" in again.stderr
    assert keys(kafka_topics["alerts"]) == alerts
    # The Kubernetes layout (deploy/k8s/detect.yaml): each "pod" finds its process id in its
    # name, the cluster in the hostfile, and keeps its own recovery partition on its own volume.
    pods = {"alerts": kafka_topics["alerts"] + ".pods", "dlq": kafka_topics["dlq"] + ".pods"}
    ensure_topics(kafka_bootstrap, pods.values())
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text("".join(f"127.0.0.1:{p}\n" for p in free_loopback_ports(2)))

    def run_pods() -> list[str]:
        procs = [
            subprocess.Popen(
                [*CLI, "run", "--once", "--recovery-dir", str(tmp_path / f"volume-{i}")],
                env=dict(
                    base,
                    NOVACRON_TOPICS_ALERTS=pods["alerts"],
                    NOVACRON_TOPICS_DLQ=pods["dlq"],
                    NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"] + ".pods",
                    BYTEWAX_POD_NAME=f"novacron-detect-{i}",
                    BYTEWAX_STATEFULSET_NAME="novacron-detect",
                    BYTEWAX_HOSTFILE_PATH=str(hostfile),
                ),
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in (0, 1)
        ]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        return errors

    first = run_pods()
    assert all("[process" in e and "(new," in e for e in first)
    assert keys(pods["alerts"]) == alerts
    assert sorted(p.name for p in (tmp_path / "volume-1").glob("*.sqlite3")) == ["part-1.sqlite3"]
    resumed = run_pods()
    assert all("resuming where it stopped" in e for e in resumed)
    assert keys(pods["alerts"]) == alerts  # nothing re-published
    delete_topics(kafka_bootstrap, [*single.values(), *pods.values()])
