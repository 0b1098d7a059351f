"""The configs users copy (README snippets, deploy/, docker-compose.yml) are the tested ones and
point at what the parser reads by default."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml

from novacron_ml.core import topics

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_shows_the_deploy_configs_verbatim() -> None:
    for path in ("deploy/telegraf/telegraf.conf", "deploy/otelcol/config.yaml",
                 "deploy/prometheus-kafka-adapter.env"):  # fmt: skip
        assert (ROOT / path).read_text().rstrip() in README, f"README's snippet of {path} differs"


def test_telegraf_writes_its_default_line_protocol_to_the_metrics_topic() -> None:
    conf = tomllib.loads((ROOT / "deploy/telegraf/telegraf.conf").read_text())
    (kafka,) = conf["outputs"]["kafka"]
    assert kafka["topic"] == topics.METRICS
    assert kafka["data_format"] == "influx"  # the format of tests/fixtures/telegraf/*.lp
    inputs = set(conf["inputs"])
    assert {"cpu", "mem", "disk", "diskio", "net", "system", "processes"} <= inputs
    fixtures = {p.stem for p in (ROOT / "tests/fixtures/telegraf").glob("*.lp")}
    assert inputs <= fixtures  # every input it enables has a fixture the parser is tested on


def test_the_collector_exports_otlp_protobuf_to_the_metrics_topic() -> None:
    conf = yaml.safe_load((ROOT / "deploy/otelcol/config.yaml").read_text())
    kafka = conf["exporters"]["kafka"]
    assert kafka["topic"] == topics.METRICS and kafka["encoding"] == "otlp_proto"
    assert conf["service"]["pipelines"]["metrics"]["exporters"] == ["kafka"]


def test_the_adapter_writes_json_to_the_metrics_topic() -> None:
    env = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy/prometheus-kafka-adapter.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["KAFKA_TOPIC"] == topics.METRICS and env["SERIALIZATION_FORMAT"] == "json"


def test_alertmanager_config_passes_amtool() -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool missing: run scripts/tools.sh"
    result = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_has_the_fleet_side_and_two_listeners_on_loopback() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "telegraf", "alertmanager", "forwarder", "detect"} <= set(services)
    env = services["kafka"]["environment"]
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://127.0.0.1:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert (
        "./deploy/telegraf/telegraf.conf:/etc/telegraf/telegraf.conf:ro"
        in services["telegraf"]["volumes"]
    )
    assert services["forwarder"]["command"][:3] == ["novacron-ml", "alerts", "forward"]


def test_compose_runs_two_dataflow_processes_and_prometheus_scrapes_each() -> None:
    from novacron_ml.cli import build_parser

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["detect"]["command"]
    args = build_parser().parse_args(command[1:])  # the CLI accepts it as written
    assert args.processes == 2
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "novacron-detect"]
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"detect:{args.metrics_port + i}" for i in range(args.processes)}
    published = {p.rsplit(":", 1)[1] for p in compose["services"]["detect"]["ports"]}
    assert published == {str(args.metrics_port + i) for i in range(args.processes)}
    tune = build_parser().parse_args(compose["services"]["tune"]["command"][1:])
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "novacron-tune"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == [
        f"tune:{tune.metrics_port}"
    ]
    capacity = build_parser().parse_args(compose["services"]["capacity"]["command"][1:])
    assert capacity.every == 24 and capacity.metrics_port
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "novacron-capacity"]
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == [
        f"capacity:{capacity.metrics_port}"
    ]


def test_compose_retrains_on_a_schedule_into_the_registry_the_flows_follow() -> None:
    import shlex
    import subprocess

    from novacron_ml.cli import build_parser

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    script = services["retrain"]["command"][2].replace("$$", "$")  # compose's escape
    assert subprocess.run(["sh", "-n", "-c", script], capture_output=True).returncode == 0
    runs = [
        part.strip().removeprefix("do ").removeprefix("[ $((i % 7)) -eq 0 ] && ")
        for part in script.split(";")
    ]
    trains = [build_parser().parse_args(shlex.split(r)[1:]) for r in runs
              if r.startswith("novacron-ml")]  # fmt: skip
    assert [(a.only, a.promote, a.out) for a in trains] == [
        (["forecaster"], True, "/registry"),
        (["iforest"], True, "/registry"),
    ]
    assert "sleep 86400" in script
    # the forests learn the windows the detect flow publishes
    assert trains[1].features_topic == services["detect"]["environment"]["NOVACRON_TOPICS_FEATURES"]
    for flow, setting in (("detect", "NOVACRON_FORECAST_MODEL"), ("tune", "NOVACRON_TUNE_POLICY")):
        service = services[flow]
        assert service["environment"][setting].startswith("/registry/")
        assert "registry:/registry:ro" in service["volumes"]
        assert service["depends_on"]["registry-init"] == {
            "condition": "service_completed_successfully"
        }
    assert "registry:/registry" in services["retrain"]["volumes"]


def test_compose_grafana_has_no_anonymous_access_and_no_default_password() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
