"""The command line as a user meets it: help texts, the demo, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "novacron_ml.cli"]


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        "run",
        "produce",
        "topics",
        "settings",
        "nab",
        "replay",
        "alerts tail",
        "alerts forward",
    ],
)
def test_every_command_explains_itself(command: str) -> None:
    out = subprocess.run(
        [*CLI, *command.split(), "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: novacron-ml " + command in out.stdout
    assert len(out.stdout.splitlines()) > 4


def test_demo_prints_alerts_and_a_scored_summary(tmp_path: Path) -> None:
    report = tmp_path / "demo.json"
    out = subprocess.run(
        [
            *CLI,
            "demo",
            "--hosts",
            "4",
            "--clusters",
            "2",
            "--hours",
            "3",
            "--step",
            "10",
            "--anomaly-rate",
            "1",
            "--show",
            "5",
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Summary" in out.stdout and "precision" in out.stdout and "recall" in out.stdout
    figures = json.loads(report.read_text())
    assert figures["events"] == 4 * 10 * 3 * 360
    assert figures["alerts"] > 0 and figures["recall"] >= 0.9
    assert figures["windows"] == 4 * 10 * 3 * 60  # 60 s windows
    assert (
        0
        <= figures["false_positive_windows"]
        <= figures["alerts"] * (1 - figures["precision"]) + 1e-9
    )
    assert figures["false_positive_rate"] == figures["false_positive_windows"] / figures["windows"]
    assert "false-positive windows" in out.stdout


def test_invalid_settings_fail_with_a_clear_message() -> None:
    out = subprocess.run(
        [*CLI, "settings"],
        capture_output=True,
        text=True,
        env={"NOVACRON_WINDOW_LENGTH_S": "-5", "PATH": ""},
    )
    assert out.returncode == 2
    assert "invalid settings" in out.stderr and "length_s" in out.stderr


def test_settings_schema_documents_every_field() -> None:
    out = subprocess.run([*CLI, "settings", "--schema"], capture_output=True, text=True, check=True)
    assert "z_threshold" in out.stdout and "description" in out.stdout
