"""A real Prometheus server (Debian's `prometheus`, loopback only) scrapes a running flow: the
flow's families are there from the first scrape and move as events flow through the broker,
the target is up, and the shipped rules load against live data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from novacron_ml.cli.run import free_loopback_ports
from novacron_ml.core.kafka import produce
from novacron_ml.core.simulator import FleetConfig, FleetSimulator

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
FAMILIES = (
    "novacron_messages_total",
    "novacron_events_total",
    "novacron_windows_total",
    "novacron_dead_letters_total",
    "novacron_output_records_total",
    "novacron_build_info",
)


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def value(port: int, expr: str) -> float:
    result = query(port, expr)
    return float(result[0]["value"][1]) if result else float("nan")


def wait_for(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def prometheus_server(tmp_path: Path, port: int, jobs: dict[str, int]) -> subprocess.Popen[bytes]:
    """Debian's Prometheus on 127.0.0.1:`port`, scraping each job's loopback target every
    second with the shipped rules (evaluated every second)."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "scripts/tools.sh installs Debian's prometheus"
    rules = tmp_path / "rules.yml"
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", rules)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{rules}]\n"
        "scrape_configs:\n"
        + "".join(
            f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
            for job, target in jobs.items()
        )
    )
    return subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def promtool_checks_scrape(metrics_port: int) -> None:
    """`promtool check metrics` passes on a scrape of the process's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        scrape = r.read()
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=scrape, capture_output=True, timeout=30,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_a_running_flow(
    kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    metrics_port, prom_port, tune_port = free_loopback_ports(3)
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_OBSERVABILITY_LAG_INTERVAL_S="1",
        NOVACRON_FORECAST_ENABLED="true",  # a served model: its inference histogram too
        # the forests too: their input drift (PSI against the manifest's reference)
        NOVACRON_DETECTOR_IFOREST_MODELS="models/onnx",
    )
    flow = subprocess.Popen(
        [sys.executable, "-m", "novacron_ml.cli", "run", "--no-recovery",
         "--metrics-port", str(metrics_port)],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # the tuning flow beside it (dry-run), for the auto-optimisation dashboard
    tune_env = dict(
        env,
        NOVACRON_TOPICS_OPTIMIZER_ACTIONS=kafka_topics["metrics"] + ".actions",
        NOVACRON_TOPICS_DWCP_CONFIG=kafka_topics["metrics"] + ".dwcp",
    )
    tuner = subprocess.Popen(
        [sys.executable, "-m", "novacron_ml.cli", "tune", "run", "--no-recovery",
         "--metrics-port", str(tune_port)],
        env=tune_env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    server = prometheus_server(
        tmp_path, prom_port, {"novacron-detect": metrics_port, "novacron-tune": tune_port}
    )
    try:
        wait_for(lambda: _up(prom_port), 60, "Prometheus to scrape the flow")
        wait_for(lambda: value(prom_port, 'up{job="novacron-tune"}') == 1, 60,
                 "Prometheus to scrape the tuning flow")  # fmt: skip
        for family in FAMILIES:  # there before any event: known label values start at zero
            assert query(prom_port, family), f"{family} not scraped"
        before = value(prom_port, 'sum(novacron_events_total{job="novacron-detect"})')
        # two hours of six hosts: the forecaster serves once a series has input_len (48)
        # windows, and checks > 2,000 forecasts (the error-drift baseline); > 1,000 windows a
        # forest family (its input-drift figure)
        start = int(time.time() // 60 * 60_000) - 120 * 60_000
        sim = FleetSimulator(
            FleetConfig(hosts=6, clusters=1, duration_s=120 * 60, start_ms=start, seed=2)
        )
        produce(kafka_bootstrap, kafka_topics["metrics"], sim.timed_messages("json"))
        produce(kafka_bootstrap, kafka_topics["metrics"], [(b"bad", b"{not json")])
        wait_for(
            lambda: (
                value(prom_port, 'sum(novacron_events_total{job="novacron-detect"})') - before
                >= sim.n_events
            ),
            90,
            "the scraped event count to reach what was produced",
        )
        detect_events = 'sum(novacron_events_total{job="novacron-detect"})'
        assert value(prom_port, detect_events) - before == sim.n_events
        wait_for(
            lambda: (
                value(
                    prom_port,
                    'novacron_dead_letters_total{job="novacron-detect",reason="bad_json"}',
                )
                >= 1
            ),
            30,
            "the dead letter to be counted",
        )
        assert value(prom_port, "sum(novacron_windows_total)") > 0
        # live windows were decided, each one's latency after close observed
        assert value(prom_port, "sum(novacron_detection_latency_seconds_count)") > 0
        assert (
            value(prom_port, 'sum(novacron_inference_seconds_count{model="lstm_forecaster"})') > 0
        )
        # consumer lag: sampled for the input partition, back to 0 once everything is consumed
        lag = (  # the detect flow's (the tuning flow reads the same topic)
            'novacron_consumer_lag_messages{job="novacron-detect",'
            f'topic="{kafka_topics["metrics"]}"}}'
        )
        wait_for(lambda: value(prom_port, lag) == 0, 30, "the consumer lag to return to 0")
        assert value(prom_port, lag.replace("_messages", "_seconds")) == 0
        # the shipped rules load and evaluate against live data (none fires on a healthy run)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5) as r:
            groups = json.load(r)["data"]["groups"]
        rules_loaded = [rule for g in groups for rule in g["rules"]]
        assert len(rules_loaded) >= 7 and all(r["health"] == "ok" for r in rules_loaded)
        # every query of the flows' dashboards answers with data from the running flows
        for expr in dashboard_queries():
            assert query(prom_port, expr.replace("${datasource}", "")), f"no data: {expr}"
        promtool_checks_scrape(metrics_port)
    finally:
        server.terminate()
        flow.terminate()
        tuner.terminate()
        server.wait(30)
        _, err = flow.communicate(timeout=60)
        _, tune_err = tuner.communicate(timeout=60)
    assert flow.returncode in (0, 130), err
    assert tuner.returncode in (0, 130), tune_err


def dashboard_queries(names: tuple[str, ...] | None = None) -> list[str]:
    """The queries of the shipped dashboards: `names` (file names), or all but the capacity
    planner's (tests/kafka/test_capacity_metrics.py runs those against a running planner)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "grafana_build", ROOT / "deploy" / "grafana" / "build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return [
        e
        for name, text in build.render().items()
        if (name in names if names else name != "capacity.json")
        for e in build.expressions(text)
    ]


def _up(port: int) -> bool:
    try:
        return value(port, 'up{job="novacron-detect"}') == 1
    except OSError:
        return False
