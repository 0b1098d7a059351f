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
    assert out.stderr == (  # one line: the setting, its variable, what is wrong, the value
        "novacron-ml: invalid setting window.length_s (NOVACRON_WINDOW_LENGTH_S): Input "
        "should be greater than 0, got '-5'\n"
    )


def test_settings_schema_documents_every_field() -> None:
    out = subprocess.run([*CLI, "settings", "--schema"], capture_output=True, text=True, check=True)
    assert "z_threshold" in out.stdout and "description" in out.stdout


@pytest.mark.kafka
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_run_stops_cleanly_on_ctrl_c_and_sigterm_and_resumes(
    sig: str, kafka_bootstrap: str, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    import os
    import signal
    import time

    import msgspec

    from novacron_ml.core.kafka import produce, read_topic
    from novacron_ml.core.schema import WireEvent

    now = int(time.time() * 1000) // 60_000 * 60_000
    messages = [
        (
            b"",
            msgspec.json.encode(WireEvent(now - 3_600_000 + i * 5000, "h1", "c1", "cpu_util", 0.5)),
        )
        for i in range(600)
    ] + [(b"", b"{not json")]
    produce(kafka_bootstrap, kafka_topics["metrics"], messages)
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        NOVACRON_TOPICS_METRICS=kafka_topics["metrics"],
        NOVACRON_TOPICS_ALERTS=kafka_topics["alerts"],
        NOVACRON_TOPICS_INCIDENTS=kafka_topics["incidents"],
        NOVACRON_TOPICS_DLQ=kafka_topics["dlq"],
        NOVACRON_RECOVERY_DIR=str(tmp_path / "recovery"),
    )
    proc = subprocess.Popen(
        [*CLI, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not read_topic(kafka_bootstrap, kafka_topics["dlq"], timeout_s=1):
        assert time.monotonic() < deadline and proc.poll() is None, "the flow never ran"
    proc.send_signal(getattr(signal, sig))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "panicked" not in err and "Traceback" not in err
    assert "stopped on" in err and "601 messages, 600 events" in err
    assert "resume with the same command" in err
    more = [
        (b"", msgspec.json.encode(WireEvent(now - 500_000 + i * 5000, "h1", "c1", "cpu_util", 0.5)))
        for i in range(100)
    ]
    produce(kafka_bootstrap, kafka_topics["metrics"], more)
    env["NOVACRON_DETECTOR_Z_THRESHOLD"] = "7"  # a setting changed across the restart
    resumed = subprocess.run(
        [*CLI, "run", "--once"], env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming where it stopped" in resumed.stderr
    assert "100 messages, 100 events" in resumed.stderr  # no gap, nothing read twice
    # the restored series takes it (docs/STATE.md), and the run says so
    assert "settings changed since the snapshot (robust_z in 1 of 1 restored" in resumed.stderr


@pytest.mark.parametrize(
    "command", [["run", "--wait", "2"], ["produce", "--wait", "2", "--hours", "0.1"]]
)
def test_an_unreachable_broker_is_one_line_and_exit_1(command: list[str], tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        NOVACRON_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        NOVACRON_OBSERVABILITY_CLIENT_LOG=str(tmp_path / "client.log"),
    )
    out = subprocess.run([*CLI, *command], env=env, capture_output=True, text=True, timeout=60)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("novacron-ml:")]
    assert out.returncode == 1
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0]
    assert "%3|" not in out.stderr  # librdkafka's lines went to the client log
    assert "Connection refused" in (tmp_path / "client.log").read_text()


def test_a_missing_file_is_bad_input_exit_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "nab", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_an_existing_output_is_never_overwritten_without_force(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text("precious\n")
    out = subprocess.run(
        [*CLI, "produce", "--labels", str(labels), "--wait", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2 and "--force" in out.stderr
    assert labels.read_text() == "precious\n"
    report = tmp_path / "demo.json"
    report.write_text("{}")
    out = subprocess.run(
        [*CLI, "demo", "--hours", "0.5", "--hosts", "2", "--clusters", "1", "--quiet",
         "--no-forecast", "--json", str(report)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and report.read_text() == "{}"
    forced = subprocess.run(
        [*CLI, "demo", "--hours", "0.5", "--hosts", "2", "--clusters", "1", "--quiet",
         "--no-forecast", "--json", str(report), "--force"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert forced.returncode == 0 and "events" in report.read_text()


@pytest.mark.parametrize(
    "flag",
    [
        ["run", "--workers", "0"],
        ["run", "--partitions", "0"],
        ["run", "--wait", "-1"],
        ["run", "--processes", "0"],
        ["run", "--metrics-port", "70000"],
        ["run", "--wait", "inf"],
        ["produce", "--rate", "nan"],
        ["alerts", "tail", "--max", "0"],
        ["alerts", "forward", "--resend", "0"],
    ],
)
def test_flags_out_of_range_are_one_line_usage_errors(flag: list[str]) -> None:
    out = subprocess.run([*CLI, *flag], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr  # was: exit 0 having run nothing, or a traceback
    last = out.stderr.strip().splitlines()[-1]
    assert f"argument {flag[-2]}" in last or f"/{flag[-2]}" in last
    assert "is not" in last and "Traceback" not in out.stderr


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_an_in_process_run_stops_cleanly_too(sig: str) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [*CLI, "demo", "--hours", "48", "--quiet", "--no-forecast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)  # inside the Bytewax run by then
    proc.send_signal(getattr(signal, sig))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "panicked" not in err and "Traceback" not in err and "interrupted" in err
