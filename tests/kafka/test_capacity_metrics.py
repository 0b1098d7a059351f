"""The capacity planner as a service (`capacity plan --every 24 --metrics-port`), scraped by a
real Prometheus (Debian's `prometheus`, loopback only): a plan scores the previous plan on the
`capacity.forecasts` topic against the hours since (its divergence), publishes it with the new
forecast, exports the planner's gauges, the divergence rule goes pending for the series that
moved and stays quiet for the one that did not, and every query of the capacity dashboard
answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from novacron_ml.cli.run import free_loopback_ports
from tests.kafka.test_prometheus_scrape import (
    dashboard_queries,
    prometheus_server,
    promtool_checks_scrape,
    query,
    value,
    wait_for,
)

pytest.importorskip("statsforecast")
pytestmark = pytest.mark.kafka
HOUR = 3600


def write_history(path: Path, hours: int, jump_after: int | None = None) -> None:
    """Hourly cpu_util of two clusters: cluster-0 a steady daily cycle, cluster-1 the same on a
    rising trend that reaches the 0.85 capacity within weeks; with `jump_after`, cluster-1 is
    30 % higher from that hour on (what its previous plan could not know)."""
    start = int(time.time() // HOUR * HOUR) - 10 * 86_400
    rng = np.random.default_rng(7)
    lines = ["timestamp,cluster,resource,value"]
    for h in range(hours):
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + h * HOUR))
        cycle = 0.08 * np.sin(2 * np.pi * h / 24)
        steady = 0.45 + cycle + rng.normal(0, 0.003)
        rising = 0.5 + 0.012 * h / 24 + cycle + rng.normal(0, 0.003)
        if jump_after is not None and h >= jump_after:
            rising *= 1.3
        lines += [f"{ts},cluster-0,cpu_util,{steady:.6f}", f"{ts},cluster-1,cpu_util,{rising:.6f}"]
    path.write_text("\n".join(lines) + "\n")


def test_the_planner_exports_its_plan_and_the_previous_plans_divergence(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from novacron_ml.core.kafka import delete_topics, read_topic

    suffix = uuid.uuid4().hex[:10]
    topics = {k: f"test.{suffix}.capacity.{k}" for k in ("forecasts", "alerts")}
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_CAPACITY_FORECASTS=topics["forecasts"],
        NOVACRON_TOPICS_CAPACITY_ALERTS=topics["alerts"],
        NOVACRON_CAPACITY_MODELS='["seasonal_naive", "auto_ets"]',
        NOVACRON_CAPACITY_ENGINE="processes",
        NOVACRON_CAPACITY_WORKERS="1",
    )
    cli = [sys.executable, "-m", "novacron_ml.cli", "capacity", "plan"]
    hours = 10 * 24
    early, full = tmp_path / "early.csv", tmp_path / "full.csv"
    write_history(early, hours - 12)
    write_history(full, hours, jump_after=hours - 12)
    metrics_port, prom_port = free_loopback_ports(2)
    planner = server = None
    try:
        # yesterday's plan, 12 hours ago: nothing earlier to score
        first = subprocess.run(
            [*cli, "--csv", str(early)], env=env, capture_output=True, text=True, timeout=300
        )
        assert first.returncode == 0, first.stderr
        assert "nothing to score yet" in first.stdout
        # today's, as the daily service: scores yesterday's on the 12 hours since
        planner = subprocess.Popen(
            [*cli, "--csv", str(full), "--every", "24", "--metrics-port", str(metrics_port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        server = prometheus_server(tmp_path, prom_port, {"novacron-capacity": metrics_port})
        ok = 'novacron_capacity_plans_total{outcome="ok"}'

        def planned() -> bool:
            try:
                return value(prom_port, ok) == 1
            except OSError:
                return False

        wait_for(planned, 180, "the planner's second plan to be scraped")
        assert value(prom_port, 'novacron_capacity_plans_total{outcome="failed"}') == 0

        def divergence(cluster: str) -> float:
            return value(prom_port, f'novacron_capacity_forecast_divergence{{cluster="{cluster}"}}')

        assert divergence("cluster-1") > 0.15  # it jumped 30 % after the previous plan
        assert divergence("cluster-0") < 0.05  # the same cycle as forecast
        # the same figures travel with the new forecast on the topic
        records = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics["forecasts"])]
        latest = {r["cluster"]: r for r in records if "previous_plan" in r}
        assert set(latest) == {"cluster-0", "cluster-1"}
        assert latest["cluster-1"]["previous_plan"]["hours"] == 12
        assert latest["cluster-1"]["previous_plan"]["wape"] == pytest.approx(
            divergence("cluster-1"), rel=1e-4
        )
        # cluster-1's trend exhausts its 0.85 within the horizon, cluster-0's never does
        left = 'novacron_capacity_time_to_exhaustion_seconds{cluster="%s"}'
        assert 0 < value(prom_port, left % "cluster-1") < 30 * 86_400
        assert value(prom_port, left % "cluster-0") == float("inf")

        # the divergence rule is pending (for: 5m) for cluster-1 only
        def divergence_alerts() -> list[dict]:
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/alerts") as r:
                alerts = json.load(r)["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"].endswith("ForecastDivergence")]

        wait_for(lambda: bool(divergence_alerts()), 30, "the divergence rule to evaluate")
        assert [a["labels"]["cluster"] for a in divergence_alerts()] == ["cluster-1"]
        for expr in dashboard_queries(("capacity.json",)):  # increase() needs two scrapes
            promql = expr.replace("${datasource}", "")
            wait_for(lambda e=promql: bool(query(prom_port, e)), 10, f"data for {promql}")
        promtool_checks_scrape(metrics_port)
    finally:
        for process in (server, planner):
            if process is not None:
                process.terminate()
                process.wait(30)
        delete_topics(kafka_bootstrap, topics.values())
    out = planner.stdout.read() if planner and planner.stdout else ""
    assert "over 15%: cluster-1/cpu_util" in out, out
