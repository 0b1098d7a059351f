"""Maintenance windows and silences: matched in event time, recorded on the alert."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bytewax.testing import run_main
from pydantic import ValidationError

from dataflows.detect import build_flow
from dataflows.io import CallbackSink, MessageSource
from novacron_ml.core.schema import Alert, alert_id_for, rfc3339_ms
from novacron_ml.core.settings import Settings, load_settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.alerting.suppression import WEEK_MS, Matcher, Rule, suppression_for

T0 = 1_790_000_000_000


def alert(start: int, host: str = "h1", cluster: str = "c1", kind: str = "error_burst") -> Alert:
    return Alert(
        alert_id=alert_id_for(f"{cluster}/{host}/error_rate", start, kind),
        type=kind,
        severity="high",
        host=host,
        cluster=cluster,
        metric="error_rate",
        window_start=rfc3339_ms(start),
        window_end=rfc3339_ms(start + 60_000),
        value=1.0,
        expected=0.0,
        score=9.0,
        detector="robust_z",
    )


@pytest.mark.parametrize(
    ("rule", "start", "reason"),
    [
        (Rule("maintenance", "m", T0, T0 + 3_600_000, Matcher()), T0 + 60_000, "maintenance:m"),
        (Rule("maintenance", "m", T0, T0 + 3_600_000, Matcher()), T0 + 3_600_000, None),
        (Rule("silence", "s", T0, T0 + 600_000, Matcher(hosts=frozenset({"h2"}))), T0, None),
        (
            Rule("silence", "s", T0, T0 + 600_000, Matcher(types=frozenset({"error_burst"}))),
            T0,
            "silence:s",
        ),
        (
            Rule("maintenance", "w", T0, T0 + 600_000, Matcher(), weekly=True),
            T0 + 2 * WEEK_MS + 1,
            "maintenance:w",
        ),
        (
            Rule("maintenance", "w", T0, T0 + 600_000, Matcher(), weekly=True),
            T0 + WEEK_MS + 600_000,
            None,
        ),
    ],
)
def test_rules(rule: Rule, start: int, reason: str | None) -> None:
    assert suppression_for(alert(start), [rule]) == reason


def test_rules_come_from_a_toml_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "novacron.toml"
    cfg.write_text(
        '[[suppression.maintenance]]\nname = "patch-tuesday"\nstart = "2026-09-22T02:00:00Z"\n'
        'end = "2026-09-22T04:00:00Z"\nweekly = true\nclusters = ["cluster-1"]\n'
    )
    monkeypatch.setenv("NOVACRON_CONFIG", str(cfg))
    rule = load_settings().suppression.maintenance[0]
    assert rule.name == "patch-tuesday" and rule.weekly and rule.clusters == ["cluster-1"]
    with pytest.raises(ValidationError, match="end must be after start"):
        Settings(
            suppression={
                "silences": [
                    {"name": "x", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
                ]
            }
        )


def test_flow_marks_alerts_in_a_maintenance_window_and_leaves_the_rest() -> None:
    now = int(time.time() // 60 * 60_000)
    cfg = FleetConfig(
        hosts=6,
        clusters=2,
        duration_s=3 * 3600,
        step_s=10,
        start_ms=now - 4 * 3_600_000,
        seed=5,
        anomalies_per_host_per_hour=1.0,
    )
    window = {
        "name": "upgrade",
        "start": rfc3339_ms(cfg.start_ms),
        "end": rfc3339_ms(now),
        "clusters": ["cluster-1"],
    }
    settings = Settings(suppression={"maintenance": [window]})
    out: list[object] = []
    messages = list(FleetSimulator(cfg).messages("json-array"))
    run_main(
        build_flow(
            settings,
            MessageSource(lambda: iter(messages)),
            CallbackSink(out.extend),
            kafka_output=False,
        )
    )
    alerts = [a for a in out if isinstance(a, Alert)]
    assert {a.cluster for a in alerts} == {"cluster-0", "cluster-1"}
    for a in alerts:
        assert a.suppressed_by == ("maintenance:upgrade" if a.cluster == "cluster-1" else None)
