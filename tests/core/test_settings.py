"""Typed settings: defaults, environment names from the settings path, TOML files, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from novacron_ml.core.settings import Settings, load_settings


def test_defaults() -> None:
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (s.topics.metrics, s.topics.alerts, s.topics.dlq) == ("metrics", "alerts", "metrics.dlq")
    assert s.window.length_s == 60 and s.window.slide_s is None


def test_environment_names_follow_the_settings_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVACRON_DETECTOR_Z_THRESHOLD", "4.5")
    monkeypatch.setenv("NOVACRON_WINDOW_LENGTH_S", "30")
    monkeypatch.setenv("NOVACRON_TOPICS_METRICS", "fleet.metrics")
    s = load_settings()
    assert s.detector.z_threshold == 4.5
    assert s.window.length_s == 30
    assert s.topics.metrics == "fleet.metrics"


def test_conventional_kafka_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOVACRON_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    assert load_settings().kafka.brokers == ["k1:9092", "k2:9092"]


def test_toml_file_below_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "novacron.toml"
    cfg.write_text("[detector]\nz_threshold = 8.0\nmin_history = 6\n[window]\nlength_s = 120\n")
    monkeypatch.setenv("NOVACRON_CONFIG", str(cfg))
    monkeypatch.setenv("NOVACRON_WINDOW_LENGTH_S", "90")
    s = load_settings()
    assert s.detector.z_threshold == 8.0 and s.detector.min_history == 6
    assert s.window.length_s == 90


def test_missing_config_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVACRON_CONFIG", "/nonexistent/novacron.toml")
    with pytest.raises(FileNotFoundError, match="NOVACRON_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    "bad",
    [
        {"window": {"length_s": 0}},
        {"window": {"length_s": 30, "slide_s": 60}},
        {"detector": {"min_history": 100, "history_windows": 10}},
        {"detector": {"z_threshold": -1}},
        {"detector": {"novelty_scales": [1, 1, 4]}},
        {"detector": {"novelty_scales": [0, 2]}},
        {"detector": {"novelty_scales": []}},
        {"detector": {"novelty_history": 100}},
        {"detector": {"bigger_event": 0.5}},
        {"ingest": {"line_protocol_precision": "ps"}},
        {"window": {"lenght_s": 30}},
    ],
)
def test_invalid_values_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_the_readme_settings_table_is_current() -> None:
    from pathlib import Path

    from novacron_ml.core.settings import settings_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("<!-- settings-table:")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- /settings-table -->")]
    assert block == settings_table(), "regenerate it: novacron-ml settings --table"


def test_inf_and_nan_are_no_settings() -> None:
    import pydantic
    import pytest

    from novacron_ml.core.settings import Settings

    for value in ("inf", "nan", "-inf"):
        with pytest.raises(pydantic.ValidationError):
            Settings(detector={"z_threshold": value})


def test_secrets_are_never_printed() -> None:
    import json
    import os
    import subprocess
    import sys

    from novacron_ml.core.settings import Settings, redacted

    s = Settings(kafka={"consumer_config": {"sasl.password": "s3cret", "sasl.username": "u"}})
    assert redacted(s)["kafka"]["consumer_config"] == {"sasl.password": "***", "sasl.username": "u"}
    env = dict(os.environ, NOVACRON_KAFKA_PRODUCER_CONFIG=json.dumps({"ssl.key.password": "k3y"}))
    out = subprocess.run(
        [sys.executable, "-m", "novacron_ml.cli", "settings"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        out.returncode == 0
        and "k3y" not in out.stdout
        and '"ssl.key.password": "***"' in out.stdout
    )


def test_the_metrics_endpoint_binds_loopback_by_default() -> None:
    from novacron_ml.core.settings import Settings

    assert Settings().observability.metrics_bind == "127.0.0.1"


def test_a_novacron_variable_that_names_no_setting_is_a_one_line_error() -> None:
    from novacron_ml.core.settings import check_environment

    good = {
        "NOVACRON_DETECTOR_Z_THRESHOLD": "7",
        "NOVACRON_RECOVERY_DIR": "/tmp/r",  # a setting (recovery.dir), not a script variable
        "NOVACRON_BROKER_PORT": "19092",  # read by scripts/kafka.sh
        "NOVACRON_CONFIG": "novacron.toml",
        "PATH": "/bin",
    }
    check_environment(good)
    cases = {
        "NOVACRON_DETECTOR_Z_THRESHLD": "did you mean NOVACRON_DETECTOR_Z_THRESHOLD?",
        "NOVACRON_DETECTR_Z_THRESHOLD": "no settings group 'detectr' (did you mean",
        "NOVACRON_BROKER_PORTT": "the broker script reads",
    }
    for var, message in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            check_environment({**good, var: "1"})
        assert var in str(err.value) and "\n" not in str(err.value)
