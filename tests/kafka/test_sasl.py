"""Kafka security settings reach every client the project creates: each command below runs
against the local broker's SASL_PLAINTEXT listener (SCRAM-SHA-256, scripts/kafka.sh) and nothing
else, so a client created without the settings cannot connect and its command fails."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from novacron_ml.core.clients import use_client_properties
from novacron_ml.core.kafka import client_config, read_topic
from novacron_ml.core.schema import Alert

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "novacron_ml.cli"]
USER, PASSWORD = "novacron-test", "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def sasl_bootstrap(kafka_bootstrap: str) -> Iterator[str]:
    host, port = kafka_bootstrap.rsplit(":", 1)
    admin = AdminClient(client_config(kafka_bootstrap))
    upsert = UserScramCredentialUpsertion(
        USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), PASSWORD.encode()
    )
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result()
    sasl = f"{host}:{int(port) + 2}"
    properties = {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": USER,
        "sasl.password": PASSWORD,
    }
    deadline = time.monotonic() + 30  # the credential reaches the listener shortly after
    while True:
        try:
            AdminClient(client_config(sasl, **properties)).list_topics(timeout=5)
            break
        except Exception:
            assert time.monotonic() < deadline, f"no SASL listener at {sasl} (scripts/kafka.sh)"
    yield sasl
    deletion = UserScramCredentialDeletion(USER, ScramMechanism.SCRAM_SHA_256)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result()


def sasl_env(bootstrap: str, password: str = PASSWORD, **extra: str) -> dict[str, str]:
    return dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        NOVACRON_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        NOVACRON_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        NOVACRON_KAFKA_SASL_USERNAME=USER,
        NOVACRON_KAFKA_SASL_PASSWORD=password,
        **extra,
    )


def cli(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_every_command_talks_sasl_when_set(sasl_bootstrap: str, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    topics = {
        "NOVACRON_TOPICS_METRICS": f"sasl.{suffix}.metrics",
        "NOVACRON_TOPICS_ALERTS": f"sasl.{suffix}.alerts",
        "NOVACRON_TOPICS_DLQ": f"sasl.{suffix}.dlq",
        "NOVACRON_TOPICS_INCIDENTS": f"sasl.{suffix}.incidents",
        "NOVACRON_TOPICS_FEEDBACK": f"sasl.{suffix}.feedback",
    }
    env = sasl_env(sasl_bootstrap, **topics)
    start = int(time.time() // 3600 * 3_600_000) - 3 * 3_600_000
    produced = cli(
        env, "produce", "--hosts", "3", "--clusters", "1", "--hours", "2", "--step", "10",
        "--anomaly-rate", "1", "--seed", "4", "--start", str(start),
        "--labels", str(tmp_path / "labels.jsonl"),
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr  # admin (topics) and producer
    ran = cli(env, "run", "--once", "--no-recovery")  # admin, the flow's source and sink
    assert ran.returncode == 0, ran.stderr
    assert "LOST" not in ran.stderr
    use_client_properties(
        {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": USER,
            "sasl.password": PASSWORD,
        }
    )
    try:
        alerts = [
            msgspec.json.decode(r.value, type=Alert)
            for r in read_topic(sasl_bootstrap, topics["NOVACRON_TOPICS_ALERTS"])
        ]
        assert any(a.status == "firing" for a in alerts)
        replayed = f"sasl.{suffix}.replayed"
        replay = cli(
            env, "replay", "--topic", topics["NOVACRON_TOPICS_METRICS"], "--from", str(start),
            "--to", str(start + 2 * 3_600_000), "--out-topic", replayed,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr  # the range reader's consumer, producer
        assert len(read_topic(sasl_bootstrap, replayed)) > 0
        firing = next(a for a in alerts if a.status == "firing")
        feedback = cli(env, "alerts", "feedback", firing.alert_id, "--false-positive")
        assert feedback.returncode == 0, feedback.stderr  # the alerts consumer and a producer
        (verdict,) = read_topic(sasl_bootstrap, topics["NOVACRON_TOPICS_FEEDBACK"])
        assert firing.alert_id.encode() in verdict.value
        tail = cli(env, "alerts", "tail", "--from-beginning", "--max", "1", "--timeout", "30")
        assert tail.returncode == 0, tail.stderr
    finally:
        use_client_properties({})
    # A wrong password fails in one line, with the exit code of a failed run.
    refused = cli(sasl_env(sasl_bootstrap, "wrong", **topics), "run", "--once", "--wait", "5")
    assert refused.returncode == 1, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("novacron-ml: cannot reach Kafka at") and "wrong" not in last
    assert "Authentication failed" in last  # the cause, from the client's own log


def test_no_client_is_created_without_the_shared_properties() -> None:
    """Every confluent-kafka client in the project is built from `client_config`,
    `with_client_log` (both start from the security properties) or a config made by one."""
    allowed = {"client_config", "with_client_log", "_admin_config"}
    # configs held in a variable, each built from client_config or with_client_log:
    held = {
        ("novacron_ml/core/kafka.py", "conf"),  # produce(): {**client_config(...), ...}
        ("novacron_ml/core/delivery.py", "self._config"),  # the sink's, from with_client_log
    }
    offenders = []
    for path in [*ROOT.glob("novacron_ml/**/*.py"), *ROOT.glob("dataflows/*.py"),
                 *ROOT.glob("training/*.py")]:  # fmt: skip
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id not in {"Producer", "Consumer", "AdminClient"}:
                continue
            arg = node.args[0] if node.args else None
            built = (
                isinstance(arg, ast.Call)
                and isinstance(arg.func, ast.Name)
                and arg.func.id in allowed
            )
            name = ast.unparse(arg) if arg is not None else ""
            if not (built or (str(path.relative_to(ROOT)), name) in held):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"clients built without client_config: {offenders}"
