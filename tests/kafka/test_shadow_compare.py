"""`models compare --live` on the real broker: the champion's and the shadow-scored
challenger's published forecasts against the window means replayed from the metrics topic,
by the sign test over series; a challenger 10 % off is refused, and the same pair the other
way round is promoted-worthy."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from novacron_ml.cli import main
from novacron_ml.core.kafka import delete_topics, ensure_topics, produce
from novacron_ml.core.schema import MetricEvent, rfc3339_ms
from operators.forecast.forecaster import SeriesForecast
from tests.operators.test_registry import add_version

pytestmark = pytest.mark.kafka
pytest.importorskip("pandas")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 60_000
HORIZON = 4
SERIES = [(f"host-{h}", m) for h in range(2) for m in ("cpu_util", "latency_ms", "net_mbps")]


def value(host: str, metric: str, ts_ms: int) -> float:
    base = {"cpu_util": 0.5, "latency_ms": 40.0, "net_mbps": 300.0}[metric]
    phase = int(host[-1]) + len(metric)
    return base * (1 + 0.2 * math.sin(2 * math.pi * ts_ms / 3_600_000 + phase))


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:10]
    names = {k: f"test.{suffix}.{k}" for k in ("metrics", "forecasts", "shadow")}
    ensure_topics(kafka_bootstrap, names.values())
    yield names
    delete_topics(kafka_bootstrap, names.values())


def test_live_comparison_refuses_a_worse_shadow_and_takes_a_better_one(
    kafka_bootstrap: str, topics: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from training.compare import compare_live

    enc = msgspec.json.Encoder()
    events = [
        MetricEvent(ts, host, "c", metric, value(host, metric, ts))
        for ts in range(T0, T0 + 2 * 3_600_000, 10_000)
        for host, metric in SERIES
    ]
    produce(kafka_bootstrap, topics["metrics"],
            [(e.series.encode(), enc.encode(e.to_wire()), e.ts_ms) for e in events])  # fmt: skip
    means = {}  # the true window means, as the replay computes them
    for e in events:
        means.setdefault((e.series, e.ts_ms // STEP_MS * STEP_MS), []).append(e.value)
    exact, off = [], []
    for end in range(T0 + 3_600_000, T0 + 2 * 3_600_000 - HORIZON * STEP_MS, STEP_MS):
        for host, metric in SERIES:
            key = f"c/{host}/{metric}"
            future = [sum(v) / len(v) for v in
                      (means[(key, end + i * STEP_MS)] for i in range(HORIZON))]  # fmt: skip
            for out, scale, model in ((exact, 1.0, "lstm_forecaster@1"),
                                      (off, 1.1, "lstm_forecaster@2")):  # fmt: skip
                f = SeriesForecast(series=key, window_end=rfc3339_ms(end), step_s=60.0,
                                   forecast=[scale * v for v in future], model=model)  # fmt: skip
                out.append((key.encode(), enc.encode(f), end))
    produce(kafka_bootstrap, topics["forecasts"], exact)
    produce(kafka_bootstrap, topics["shadow"], off)
    window = (T0 + 3_600_000, T0 + 2 * 3_600_000)

    worse = compare_live(kafka_bootstrap, topics["metrics"], topics["forecasts"],
                         topics["shadow"], *window)  # fmt: skip
    assert not worse.better and worse.statistic["losses"] == len(SERIES)
    assert worse.champion_score < 1e-9 < worse.challenger_score  # exact vs 10 % off
    assert (worse.champion, worse.challenger) == ("1", "2")
    better = compare_live(kafka_bootstrap, topics["metrics"], topics["shadow"],
                          topics["forecasts"], *window)  # the other way round  # fmt: skip
    assert better.better and better.statistic["wins"] == len(SERIES)
    assert better.statistic["p"] == pytest.approx(0.5 ** len(SERIES))

    # the command: the registry's challenger (2) is the one the shadow topic scored
    add_version(tmp_path, "lstm_forecaster")
    add_version(tmp_path, "lstm_forecaster")
    monkeypatch.setenv("NOVACRON_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("NOVACRON_TOPICS_METRICS", topics["metrics"])
    monkeypatch.setenv("NOVACRON_TOPICS_FORECASTS", topics["forecasts"])
    monkeypatch.setenv("NOVACRON_TOPICS_FORECASTS_SHADOW", topics["shadow"])
    args = ["models", "--registry", str(tmp_path), "compare", "lstm_forecaster", "--live",
            "--from", str(window[0]), "--to", str(window[1]), "--promote"]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "not better" in out and "2 stays the challenger" in out


def test_live_forest_comparison_on_operator_verdicts(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A challenger forest that ranks the alerts operators confirmed above the ones they
    rejected beats a champion that cannot tell them apart; the same pair the other way round
    does not pass; too few verdicts is one line."""
    from novacron_ml.core.schema import Alert
    from operators.detection.iforest import ShadowScore
    from training.compare import compare_forests_live

    suffix = uuid.uuid4().hex[:10]
    names = {k: f"test.{suffix}.{k}" for k in ("alerts", "feedback", "scores", "flipped")}
    ensure_topics(kafka_bootstrap, names.values())
    enc = msgspec.json.Encoder()
    try:
        alerts, feedback, scores, flipped = [], [], [], []
        for i in range(16):
            end = T0 + (i + 1) * STEP_MS
            series, confirmed = f"c/host-{i % 2}/latency_p99_ms", i % 2 == 0
            alert = Alert(alert_id=f"a{i}", type="latency_spike", severity="warning",
                          host=f"host-{i % 2}", cluster="c", metric="latency_p99_ms",
                          window_start=rfc3339_ms(end - STEP_MS), window_end=rfc3339_ms(end),
                          value=1.0, expected=0.5, score=5.0, detector="robust_z")  # fmt: skip
            alerts.append((alert.alert_id.encode(), enc.encode(alert)))
            verdict = "true_positive" if confirmed else "false_positive"
            feedback.append((b"k", enc.encode({"alert_id": alert.alert_id, "verdict": verdict,
                                                "series": series})))  # fmt: skip
            blind = 0.1 * ((i * 7) % 5)  # the champion: unrelated to the verdicts
            sharp = (0.5 if confirmed else -0.5) + 0.01 * i  # the challenger: separates them
            for out, a, b in ((scores, blind, sharp), (flipped, sharp, blind)):
                record = ShadowScore(series=series, window_end=rfc3339_ms(end),
                                     model="iforest_latency@2", score=b,
                                     champion="iforest_latency@1", champion_score=a)  # fmt: skip
                out.append((series.encode(), enc.encode(record)))
        for topic, records in (("alerts", alerts), ("feedback", feedback), ("scores", scores),
                               ("flipped", flipped)):  # fmt: skip
            produce(kafka_bootstrap, names[topic], records)
        window = (T0, T0 + 3_600_000)
        args = (names["alerts"], names["feedback"], *window)
        better = compare_forests_live(kafka_bootstrap, "iforest_latency", names["scores"], *args)
        assert better.better and better.challenger_score == 1.0
        assert better.held_out["confirmed"] == better.held_out["rejected"] == 8
        worse = compare_forests_live(kafka_bootstrap, "iforest_latency", names["flipped"], *args)
        assert not worse.better and worse.champion_score == 1.0
        with pytest.raises(ValueError, match="at least 5 of each"):
            compare_forests_live(
                kafka_bootstrap,
                "iforest_latency",
                names["scores"],
                names["alerts"],
                names["feedback"],
                T0,
                T0 + 5 * STEP_MS,
            )

        # the command, on a registry whose challenger (2) is the one scored: promoted
        add_version(tmp_path, "iforest_latency")
        add_version(tmp_path, "iforest_latency")
        for key, topic in (("ALERTS", "alerts"), ("FEEDBACK", "feedback"),
                           ("SCORES_SHADOW", "scores")):  # fmt: skip
            monkeypatch.setenv(f"NOVACRON_TOPICS_{key}", names[topic])
        monkeypatch.setenv("NOVACRON_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        argv = ["models", "--registry", str(tmp_path), "compare", "iforest_latency", "--live",
                "--from", str(window[0]), "--to", str(window[1]), "--promote"]  # fmt: skip
        assert main(argv) == 0
        assert "champion 1 -> 2" in capsys.readouterr().out
    finally:
        delete_topics(kafka_bootstrap, names.values())
