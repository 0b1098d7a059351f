"""Shared fixtures. The Kafka broker is real: started from scripts/kafka.sh for the session
(or taken from KAFKA_BOOTSTRAP_SERVERS), and each test gets its own, fresh topic names."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = ROOT / "scripts" / "kafka.sh"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from novacron_ml.core.kafka import wait_ready

    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        wait_ready(external, timeout_s=60)
        yield external
        return
    port = os.environ.get("NOVACRON_BROKER_PORT", "9092")
    status = subprocess.run([str(KAFKA_SCRIPT), "status"], capture_output=True, text=True)
    started_here = status.returncode != 0
    if started_here:
        proc = subprocess.run([str(KAFKA_SCRIPT), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"could not start the local Kafka broker:\n{proc.stderr}")
    bootstrap = f"127.0.0.1:{port}"
    wait_ready(bootstrap, timeout_s=60)
    yield bootstrap
    if started_here:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], capture_output=True, text=True)


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    """Unique metrics/alerts/dlq/features topic names for one test, created up front, deleted
    after."""
    from novacron_ml.core.kafka import delete_topics, ensure_topics

    suffix = uuid.uuid4().hex[:10]
    names = {
        "metrics": f"test.{suffix}.metrics",
        "alerts": f"test.{suffix}.alerts",
        "dlq": f"test.{suffix}.metrics.dlq",
        "features": f"test.{suffix}.metrics.features",
    }
    ensure_topics(kafka_bootstrap, names.values())
    yield names
    delete_topics(kafka_bootstrap, names.values())
