"""A one-shot capacity plan (cron) pushes the planner's gauges, and nothing else of the process,
to a real Prometheus Pushgateway (Debian's `prometheus-pushgateway`, scripts/tools.sh, loopback
only); an unreachable gateway is one line and exit 1."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from novacron_ml.cli import main
from novacron_ml.cli.run import free_loopback_ports
from tests.kafka.test_capacity_metrics import write_history

pytest.importorskip("statsforecast")


def test_a_one_shot_plan_pushes_its_gauges_to_the_pushgateway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "scripts/tools.sh installs Debian's prometheus-pushgateway"
    (port,) = free_loopback_ports(1)
    gateway = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the pushgateway did not start"
                time.sleep(0.2)
        history = tmp_path / "hourly.csv"
        write_history(history, 10 * 24)
        monkeypatch.setenv("NOVACRON_CAPACITY_MODELS", '["seasonal_naive"]')
        monkeypatch.setenv("NOVACRON_CAPACITY_ENGINE", "processes")
        monkeypatch.setenv("NOVACRON_CAPACITY_WORKERS", "1")
        argv = ["capacity", "plan", "--csv", str(history), "--no-publish"]
        assert main([*argv, "--pushgateway", url]) == 0
        assert "pushed the planner's gauges" in capsys.readouterr().out
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
            pushed = r.read().decode()
        lines = [line for line in pushed.splitlines() if 'job="novacron-capacity"' in line]
        assert any(
            line.startswith("novacron_capacity_plans_total") and 'outcome="ok"' in line
            and line.endswith(" 1") for line in lines
        ), lines  # fmt: skip
        assert any(
            line.startswith("novacron_capacity_time_to_exhaustion_seconds")
            and 'cluster="cluster-1"' in line
            for line in lines
        )
        # only the planner's families: not the flows' (registered in the same process)
        names = {line.split("{")[0] for line in lines}
        assert names and all(n.startswith(("novacron_capacity_", "push_")) for n in names), names
    finally:
        gateway.terminate()
        gateway.wait(10)
    # the gateway gone: the plan is fine, the push is not, said in one line
    capsys.readouterr()
    assert main([*argv, "--pushgateway", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"capacity plan: could not push to {url}")
