"""kill -9 at random points, on the real broker: with recovery on (the default) a flow that is
killed and restarted until it finishes publishes exactly the alert ids of an uninterrupted
run (none lost, none spurious; replays after a crash repeat ids, never invent them). A single
process, and one process of a two-process `run --processes 2` cluster."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from novacron_ml.core.kafka import ensure_topics, produce, read_topic
from novacron_ml.core.schema import Alert
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
CLI = [sys.executable, "-m", "novacron_ml.cli", "run", "--once"]


def alert_ids(bootstrap: str, topic: str) -> set[str]:
    return {msgspec.json.decode(r.value, type=Alert).alert_id for r in read_topic(bootstrap, topic)}


def crash_until_done(
    command: list[str], env: dict[str, str], kills: list[float], victim: str = "parent"
) -> int:
    """Run `command`, SIGKILL it (or, with victim="child", one process of its cluster) after
    each delay in `kills`, then let it finish; how many kills landed before it finished."""
    landed = 0
    for delay in kills:
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            proc.wait(delay)
            return landed  # finished before this kill
        except subprocess.TimeoutExpired:
            pass
        if victim == "child":
            children = subprocess.run(
                ["pgrep", "-f", "--", "--process-id 1"], capture_output=True, text=True
            ).stdout.split()
            for pid in children:
                os.kill(int(pid), signal.SIGKILL)
            proc.wait(60)  # the supervisor stops the other process and exits
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            subprocess.run(["pkill", "-KILL", "-f", "--", "--process-id"], check=False)
        landed += 1
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    if "--processes" not in command:  # (a cluster's processes keep it each, unannounced)
        assert "novacron-ml run: freed memory kept for reuse (glibc" in final.stderr
        assert "novacron-ml run: garbage collector: " in final.stderr  # runtime.quiet_gc
    return landed


@pytest.mark.parametrize("processes", [1, 2])
def test_kill_9_at_random_points_loses_and_invents_no_alert(
    kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path, processes: int
) -> None:
    ensure_topics(kafka_bootstrap, [kafka_topics["metrics"]], partitions=2)
    start = int(time.time() // 3600 * 3_600_000) - 7 * 3_600_000
    sim = FleetSimulator(
        FleetConfig(hosts=6, clusters=2, duration_s=6 * 3600, step_s=10, start_ms=start,
                    seed=31, anomalies_per_host_per_hour=1.0)
    )  # fmt: skip
    produce(kafka_bootstrap, kafka_topics["metrics"], sim.timed_messages("json"))
    clean = kafka_topics["alerts"] + ".clean"
    ensure_topics(kafka_bootstrap, [clean, kafka_topics["alerts"]])
    base = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_RECOVERY_SNAPSHOT_INTERVAL_S="1",
    )
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "--no-recovery"],
        env=dict(base, NOVACRON_TOPICS_ALERTS=clean, NOVACRON_RUNTIME_QUIET_GC="false"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "freed memory kept" not in done.stderr  # no recovery, no snapshots to keep it for
    assert "garbage collector" not in done.stderr  # the reference run: Python's collector
    clean_s = time.monotonic() - started
    expected = alert_ids(kafka_bootstrap, clean)
    assert len(expected) >= 10
    rng = random.Random(processes)
    kills = sorted(rng.uniform(0.3, 0.9) * clean_s for _ in range(3))
    kills = [b - a for a, b in zip([0.0, *kills], kills, strict=False)]  # delays between kills
    command = [*CLI, "--recovery-dir", str(tmp_path / "recovery")]
    if processes > 1:
        command += ["--processes", str(processes)]
    landed = crash_until_done(
        command,
        dict(base, NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"]),
        [max(k, 2.0) for k in kills],
        victim="child" if processes > 1 else "parent",
    )
    assert landed >= 1, "no kill landed before the flow finished: nothing was tested"
    assert alert_ids(kafka_bootstrap, kafka_topics["alerts"]) == expected
