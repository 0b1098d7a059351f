"""The Grafana dashboards (deploy/grafana): the committed JSON is what grafana-foundation-sdk
builds, every query is valid PromQL (promtool parses it as a rule) and names only metrics the
flow exports, and compose provisions them. tests/kafka/test_prometheus_scrape.py runs every
query against a real Prometheus scraping a running flow."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def build_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def all_expressions() -> list[str]:
    build = build_module()
    return [e for text in build.render().values() for e in build.expressions(text)]


def test_the_committed_dashboards_are_the_builders_output() -> None:
    for name, text in build_module().render().items():
        committed = (GRAFANA / "dashboards" / name).read_text()
        assert committed == text, f"regenerate: python deploy/grafana/build.py ({name})"


def test_every_query_is_promql_and_names_only_exported_metrics(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from novacron_ml.core import metrics  # noqa: F401  (registers every family)

    exprs = all_expressions()
    assert len(exprs) >= 20
    exported = {m.name for m in REGISTRY.collect()}
    for expr in exprs:
        used = {re.sub(r"_(total|bucket)$", "", n) for n in re.findall(r"novacron_\w+", expr)}
        assert (used or expr.startswith("sum(up{")) and used <= exported, (expr, used - exported)
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("${datasource}", "")}
        for i, e in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump(rules))
    promtool = shutil.which("promtool")
    assert promtool, "scripts/tools.sh installs Debian's prometheus"
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_compose_provisions_the_datasource_and_the_dashboards() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/novacron.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
