"""The shipped Prometheus alert rules and the flow's metrics, checked by Prometheus' promtool
(Debian's `prometheus` package, installed by scripts/tools.sh)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, generate_latest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: run scripts/tools.sh"
    return subprocess.run([binary, *args], input=stdin, capture_output=True, timeout=60)


def test_the_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES.with_name("rules.test.yml")))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # every rule has a firing and a quiet case in the unit tests
    rules = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    cases = yaml.safe_load(RULES.with_name("rules.test.yml").read_text())["tests"]
    checks = [c for t in cases for c in t["alert_rule_test"]]
    for name in rules:
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a firing and a quiet case"


def test_the_rules_name_only_metrics_the_flow_exports() -> None:
    from novacron_ml.core import metrics  # noqa: F401  (registers every family)

    exported = {m.name for m in REGISTRY.collect()}
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    used = {
        re.sub(r"_(total|bucket|count|sum)$", "", n)
        for e in exprs
        for n in re.findall(r"novacron_\w+", e)
    }
    assert used and used <= exported, used - exported


def test_a_scrape_of_the_flow_passes_promtool_check_metrics() -> None:
    from dataflows.inprocess import run_in_process
    from dataflows.io import MessageSource
    from novacron_ml.core.settings import Settings
    from novacron_ml.core.simulator import FleetConfig, FleetSimulator

    sim = FleetSimulator(FleetConfig(hosts=2, clusters=1, duration_s=1800, seed=3))
    run_in_process(Settings(), MessageSource(lambda: sim.messages("json"), 500))
    scrape = generate_latest(REGISTRY)
    assert b"novacron_events_total" in scrape and b"novacron_windows_total" in scrape
    result = promtool("check", "metrics", stdin=scrape)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_prometheus_config_loads_the_rules() -> None:
    config = ROOT / "deploy" / "prometheus.yml"
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    n = sum(len(group["rules"]) for group in rules["groups"])
    assert f"SUCCESS: {n} rules found".encode() in checked.stdout  # found and parsed
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/rules.yml:/etc/prometheus/prometheus/rules.yml:ro" in volumes
