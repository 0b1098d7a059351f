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
    """Unique metrics/alerts/dlq/features/incidents topic names for one test, created up
    front, deleted after."""
    from novacron_ml.core.kafka import delete_topics, ensure_topics

    suffix = uuid.uuid4().hex[:10]
    names = {
        "metrics": f"test.{suffix}.metrics",
        "alerts": f"test.{suffix}.alerts",
        "dlq": f"test.{suffix}.metrics.dlq",
        "features": f"test.{suffix}.metrics.features",
        "incidents": f"test.{suffix}.incidents",
    }
    ensure_topics(kafka_bootstrap, names.values())
    yield names
    delete_topics(kafka_bootstrap, names.values())


class Alertmanager:
    """A real Alertmanager (Debian's prometheus-alertmanager, scripts/tools.sh) on a free
    loopback port, routing every alert by alertname and cluster to `webhook` (a local
    receiver that records what Alertmanager notifies)."""

    def __init__(self, tmp: Path, group_by: str = "[alertname, cluster]") -> None:
        import json
        import shutil
        import socket
        import threading
        import time
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail("Alertmanager is not installed: run scripts/tools.sh (Debian package)")
        self.notifications: list[dict[str, object]] = []
        outer = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=self.hook.serve_forever, daemon=True).start()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = tmp / "alertmanager.yml"
        config.write_text(
            "route:\n"
            "  receiver: hook\n"
            f"  group_by: {group_by}\n"
            "  group_wait: 1s\n"
            "  group_interval: 1s\n"
            "  repeat_interval: 1h\n"
            "receivers:\n"
            "  - name: hook\n"
            "    webhook_configs:\n"
            f"      - url: http://127.0.0.1:{self.hook.server_port}/\n"
            "        send_resolved: true\n"
        )
        self.url = f"http://127.0.0.1:{port}"
        self.log = (tmp / "alertmanager.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Alertmanager did not start: {(tmp / 'alertmanager.log').read_text()}")
            time.sleep(0.1)

    def get(self, path: str) -> object:
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.hook.shutdown()
        self.log.close()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path)
    yield am
    am.close()


@pytest.fixture
def alertmanager_shipped_route(tmp_path: Path) -> Iterator[Alertmanager]:
    """The same, grouping as the shipped deploy/alertmanager/alertmanager.yml does."""
    import yaml

    shipped = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    group_by = yaml.safe_load(shipped.read_text())["route"]["group_by"]
    am = Alertmanager(tmp_path, "[" + ", ".join(group_by) + "]")
    yield am
    am.close()
