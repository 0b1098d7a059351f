"""Capacity planner: CSV loading and its errors, metrics, backtest honesty, exhaustion dates,
the hourly aggregator, and the Kafka path (detect flow -> metrics.hourly -> plan -> topics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("prophet")
pytest.importorskip("statsforecast")

from novacron_ml.cli import main
from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from novacron_ml.core.settings import CapacitySettings
from operators.aggregate.hourly import HOUR_MS, HourlyAggregator
from training.capacity import (
    RULES,
    Forecast,
    ModelOptions,
    backtest,
    combine,
    combine_weights,
    conformal_factor,
)
from training.metrics import mape, mase, naive_scale, point_metrics
from training.planner import (
    HourlyHistory,
    divergence,
    export_metrics,
    forecast_record,
    histories_from_records,
    latest_records,
    plan_series,
    urgency_for,
)
from training.series_io import Series, SeriesError, aggregate, load_series

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _csv(tmp_path: Path, text: str, name: str = "s.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# -- loading ------------------------------------------------------------------------------------
def test_load_series_parses_timestamps_and_offsets(tmp_path: Path) -> None:
    ts = _csv(
        tmp_path, "t,v\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2\n2024-01-01 00:10:00,3\n"
    )
    s = load_series(ts, "v", "t")
    assert s.absolute_time and s.step_s == 300 and list(s.values) == [1, 2, 3]
    off = _csv(tmp_path, "t,v\n0,1\n60,2\n120,4\n", "o.csv")
    s2 = load_series(off, "v", "t")
    assert not s2.absolute_time and s2.step_s == 60 and list(s2.t_s) == [0, 60, 120]


@pytest.mark.parametrize(
    ("text", "args", "expected"),
    [
        ("t,v\n0,1\n", ("x", "t"), "no column 'x' (columns: t, v)"),
        ("t,v\n0,1\n60,abc\n", ("v", "t"), "line 3: value 'abc' is not a number in column 'v'"),
        ("t,v\n0,1\n60,\n", ("v", "t"), "line 3: missing value in column 'v'"),
        ("t,v\n2024-01-01,1\nnot a time,2\n", ("v", "t"), "line 3: unparseable timestamp"),
        ("t,v\n0,1\n60,2\n", ("v", None), "no time column given"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, args: tuple[str, str | None], expected: str
) -> None:
    p = _csv(tmp_path, text)
    with pytest.raises(SeriesError) as err:
        load_series(p, args[0], args[1])
    message = str(err.value)
    assert message.startswith(str(p)) and expected in message and "\n" not in message


def test_gaps_are_resampled_with_a_warning(tmp_path: Path) -> None:
    p = _csv(tmp_path, "t,v\n0,0\n60,1\n180,3\n240,4\n")
    s = load_series(p, "v", "t")
    assert list(s.t_s) == [0, 60, 120, 180, 240]
    assert s.values[2] == pytest.approx(2.0)
    assert any("missing step" in w for w in s.warnings)


def test_duplicate_timestamps_are_averaged_with_a_warning(tmp_path: Path) -> None:
    s = load_series(_csv(tmp_path, "t,v\n0,1\n60,2\n60,4\n120,5\n"), "v", "t")
    assert list(s.values) == [1.0, 3.0, 5.0]
    assert any("line 4: duplicate timestamp" in w for w in s.warnings)


def test_too_short_for_the_horizon(tmp_path: Path) -> None:
    p = _csv(tmp_path, "t,v\n0,1\n60,2\n120,3\n")
    with pytest.raises(SeriesError, match="3 rows is too short: needs at least 10"):
        load_series(p, "v", "t", min_length=10)


def test_aggregate_means_hourly_buckets() -> None:
    t = np.arange(0, 7200, 300, dtype=float)
    s = aggregate(Series("x", t, np.arange(24, dtype=float), 300.0, False), 3600)
    assert list(s.values) == pytest.approx([5.5, 17.5]) and s.step_s == 3600


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_by_hand() -> None:
    train = np.array([1.0, 2.0, 3.0, 5.0])
    assert naive_scale(train, 1) == pytest.approx(4 / 3)
    y, yhat = np.array([4.0, 6.0]), np.array([5.0, 5.0])
    assert mase(y, yhat, 4 / 3) == pytest.approx(0.75)
    assert mape(np.array([0.0, 1.0]), np.array([1.0, 1.0])) is None
    m = point_metrics(y, yhat, None)
    assert m["mase"] is None and m["accuracy"] == pytest.approx(100 - (25 + 100 / 6) / 2)


def test_conformal_factor_covers_and_never_narrows() -> None:
    ratios = list(np.linspace(0.1, 3.0, 99))
    c = conformal_factor(ratios, 0.95)
    assert np.mean(np.array(ratios) <= c) >= 0.95
    assert conformal_factor([0.1, 0.2], 0.95) == 1.0


# -- backtest -----------------------------------------------------------------------------------
def _seasonal_trend(days: int, seed: int = 1) -> Series:
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24) * 3600.0 + 1_700_000_000.0
    hours = np.arange(days * 24)
    y = 50 + 0.05 * hours + 10 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 1.0, len(t))
    return Series("synthetic", t, y, 3600.0, True)


def test_backtest_scores_out_of_sample_and_beats_seasonal_naive() -> None:
    s = _seasonal_trend(28)
    r = backtest(s, 24, ["seasonal_naive", "auto_ets", "mstl"], 5, ModelOptions())
    assert [w.origin for w in r.windows] == [len(s) - k * 24 for k in (5, 4, 3, 2, 1)]
    assert len(r.chosen["picks"]) == 4  # window 0 is warm-up only
    naive = r.per_model["seasonal_naive"]["mase"]
    assert naive is not None and r.chosen["mase"] is not None
    # a trend plus a daily cycle: a model of both must beat "same hour yesterday"
    assert r.chosen["mase"] < 0.8 * naive
    assert 0.8 <= r.chosen["coverage"] <= 1.0


def test_backtest_cli_writes_json_and_rejects_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = _seasonal_trend(12)
    good = tmp_path / "good.csv"
    good.write_text(
        "ts,load\n"
        + "".join(f"{t:.0f},{v}\n" for t, v in zip(s.t_s - s.t_s[0], s.values, strict=True))
    )
    out = tmp_path / "bt.json"
    rc = main(
        [
            "capacity", "backtest", "--csv", str(good), "--time-column", "ts",
            "--value-column", "load", "--horizon", "12", "--windows", "3",
            "--models", "seasonal_naive", "auto_ets", "--json", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(out.read_text())
    file_report = report["files"][f"{good}:load"]
    assert file_report["windows_scored"] == 2
    rules = {f"rule:{rule}" for rule in RULES}
    assert set(report["overall"]) == {"seasonal_naive", "auto_ets", "chosen", *rules}
    assert 0 < report["overall"]["chosen"]["mase"] < 5
    assert report["overall"]["chosen"] == report["overall"]["rule:select"]
    assert "rule:shrink (planner)" in capsys.readouterr().out
    bad = _csv(tmp_path, "ts,load\n0,1\n3600,oops\n", "bad.csv")
    capsys.readouterr()
    rc = main(
        ["capacity", "backtest", "--csv", str(bad), "--time-column", "ts",
         "--value-column", "load", "--horizon", "12", "--json", str(out), "--force"]
    )  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1  # bad input
    assert str(bad) in err and "line 3" in err and "Traceback" not in err


def test_rule_weights_by_hand() -> None:
    models = ["a", "b", "c"]
    past = np.array([[1.0, 0.5, 2.0, 0.4], [1.0, 0.7, 2.0, 0.6]])  # MASE of a, b, c, median
    assert list(combine_weights("select", models, past)) == [0, 1, 0, 0]
    assert list(combine_weights("select_ensemble", models, past)) == [0, 0, 0, 1]
    assert list(combine_weights("median", models, past)) == [0, 0, 0, 1]
    assert list(combine_weights("c", models, past)) == [0, 0, 1, 0]
    shrink = combine_weights("shrink", models, past)  # 2 windows: 2 / (2 + 5) on the best
    assert shrink[1] == pytest.approx(2 / 7) and shrink[3] == pytest.approx(5 / 7)
    inv = combine_weights("weighted", models, past)
    assert inv[:3] == pytest.approx(np.array([1, 1 / 0.6, 0.5]) / (1 + 1 / 0.6 + 0.5))
    # no past windows: the median (a selection has nothing to go on), the mean for `mean`
    assert list(combine_weights("shrink", models, past[:0])) == [0, 0, 0, 1]
    fcs = [Forecast(np.array([v]), np.array([v - 1]), np.array([v + 1])) for v in (1.0, 2.0, 9.0)]
    med = combine(fcs, combine_weights("median", models, past))
    assert (med.mean[0], med.lo[0], med.hi[0]) == (2.0, 1.0, 3.0)
    mix = combine(fcs, shrink)
    assert mix.mean[0] == pytest.approx(2 / 7 * 2.0 + 5 / 7 * 2.0)


def test_every_rule_is_scored_out_of_sample() -> None:
    """A rule's forecast for window k may use windows < k only: changing the last window's
    actuals must not change the weights (picks) used on it, only its score."""
    s = _seasonal_trend(20)
    r = backtest(s, 24, ["seasonal_naive", "auto_ets", "mstl"], 4, ModelOptions())
    s2 = Series("b", s.t_s, s.values.copy(), s.step_s, True)
    s2.values[-24:] += 40.0  # a shock in the last window only
    r2 = backtest(s2, 24, ["seasonal_naive", "auto_ets", "mstl"], 4, ModelOptions())
    for rule in RULES:
        assert r.rules[rule]["picks"] == r2.rules[rule]["picks"], rule
        assert r2.rules[rule]["mase"] > r.rules[rule]["mase"], rule
    t, y, yhat = r.rule_points["shrink"]
    assert len(t) == len(y) == len(yhat) == 3 * 24 and t[-1] == s.t_s[-1]


@pytest.mark.skipif(not (DATA / "dctraces").is_dir(), reason="shared dctraces data not present")
def test_backtest_on_dctraces_chosen_beats_seasonal_naive() -> None:
    path = DATA / "dctraces/alibaba2018/machine_usage_days_1_to_8_grouped_300_seconds.csv"
    s = aggregate(load_series(path, "net_out", None, step_s=300), 3600)
    r = backtest(s, 24, ["seasonal_naive", "auto_ets", "mstl"], 4, ModelOptions())
    assert r.chosen["mase"] < r.per_model["seasonal_naive"]["mase"]
    assert r.rules["shrink"]["mase"] < r.per_model["seasonal_naive"]["mase"]


# -- planning -----------------------------------------------------------------------------------
def test_exhaustion_date_of_a_linear_trend() -> None:
    # 28 days of history growing 1 point/day from 50 with a daily cycle of +-3; capacity 85:
    # the cycle's peak (trend + 3) reaches 85 at day 32, i.e. about 4 days after the history.
    days = 28
    hours = np.arange(days * 24)
    t = 1_767_225_600.0 + hours * 3600.0  # 2026-01-01
    rng = np.random.default_rng(3)
    y = 50 + hours / 24 + 3 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.3, len(hours))
    cfg = CapacitySettings(
        capacity={"cpu": 85.0}, models=["seasonal_naive", "auto_ets", "mstl"], cv_windows=3
    )
    plan = plan_series(HourlyHistory("c", "cpu", t, y), cfg, [])
    assert plan.model != "seasonal_naive"  # the only model blind to the trend
    assert sum(plan.weights.values()) == pytest.approx(1.0)
    assert plan.cv["selection"]["mase"] is not None and plan.cv_points is not None
    assert plan.exhaustion_mean_s is not None
    likely_days = (plan.exhaustion_mean_s - t[-1]) / 86400
    assert 2.5 <= likely_days <= 6.0
    assert plan.days_to_exhaustion is not None and plan.days_to_exhaustion <= likely_days
    assert plan.urgency == "URGENT"
    assert np.all(plan.lo <= plan.mean) and np.all(plan.mean <= plan.hi)


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_divergence_of_the_previous_plan_by_hand() -> None:
    t0 = 1_767_225_600.0  # 2026-01-01
    previous = {
        "generated_at": _iso(t0 + 2 * 3600),
        "history_end": _iso(t0 + 3600),
        "points": [  # forecasts for hours 2..9: 10 each, interval [9, 11]
            {"ts": _iso(t0 + h * 3600), "mean": 10.0, "lower": 9.0, "upper": 11.0}
            for h in range(2, 10)
        ],
    }
    # the history now runs to hour 7: hours 2..7 are scored (6 hours), 0..1 were history
    values = np.array([50.0, 50.0, 10.0, 10.0, 12.0, 8.0, 10.0, 10.0])
    history = HourlyHistory("c", "cpu", t0 + np.arange(8) * 3600.0, values)
    d = divergence(previous, history, min_hours=6)
    assert d is not None and d.hours == 6
    assert d.wape == pytest.approx(4.0 / 60.0)  # |12-10| + |8-10| over 60
    assert d.outside == pytest.approx(2 / 6)  # 12 and 8 left [9, 11]
    assert d.record()["generated_at"] == previous["generated_at"]
    assert divergence(previous, history, min_hours=7) is None  # not enough hours yet
    shifted = HourlyHistory("c", "cpu", history.t_s, values * 1.5)
    assert divergence(previous, shifted, min_hours=6).wape > 0.15  # type: ignore[union-attr]


def test_a_previous_record_not_of_our_making_is_skipped_not_fatal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from novacron_ml.cli.capacity import _divergences

    hours = np.arange(10 * 24)
    t = 1_767_225_600.0 + hours * 3600.0
    cfg = CapacitySettings(models=["seasonal_naive"], cv_windows=2)
    plan = plan_series(HourlyHistory("c", "cpu", t, 0.5 + 0 * t), cfg, [])
    bad = {"c/cpu": {"cluster": "c", "resource": "cpu", "generated_at": _iso(t[0])}}
    assert _divergences([plan], bad, 6) == {}  # no history_end: said, skipped
    assert "previous plan of c/cpu not scored" in capsys.readouterr().err


def test_the_latest_plan_per_series_wins_and_junk_is_skipped() -> None:
    records = [
        {"cluster": "a", "resource": "cpu", "generated_at": "2026-01-02T00:00:00Z", "n": 2},
        {"cluster": "a", "resource": "cpu", "generated_at": "2026-01-01T00:00:00Z", "n": 1},
        {"cluster": "b", "resource": "cpu", "generated_at": "2026-01-01T00:00:00Z", "n": 3},
        {"cluster": "c"},
        {"cluster": "d", "resource": "cpu", "generated_at": "not a time"},
    ]
    latest = latest_records(records)
    assert {k: r["n"] for k, r in latest.items()} == {"a/cpu": 2, "b/cpu": 3}


def test_the_plan_sets_the_planner_gauges_and_replaces_the_last_plan() -> None:
    from novacron_ml.core import metrics as m
    from training.planner import Divergence

    days = 14
    hours = np.arange(days * 24)
    t = 1_767_225_600.0 + hours * 3600.0
    y = 0.5 + 0.1 * np.sin(2 * np.pi * hours / 24)
    cfg = CapacitySettings(capacity={"cpu": 0.85}, models=["seasonal_naive"], cv_windows=2)
    cpu = plan_series(HourlyHistory("c1", "cpu", t, y), cfg, [])
    disk = plan_series(HourlyHistory("c1", "disk", t, y), cfg, [])
    export_metrics([cpu, disk], {"c1/cpu": Divergence("x", 24, 0.2, 0.5)}, 1, 3.0)

    def get(gauge, **labels):  # type: ignore[no-untyped-def]
        return gauge.labels(**labels)._value.get()

    assert get(m.CAPACITY_UTILISATION, cluster="c1", resource="cpu") == pytest.approx(y[-1])
    assert get(m.CAPACITY_LIMIT, cluster="c1", resource="cpu") == 0.85
    assert get(m.CAPACITY_TIME_LEFT, cluster="c1", resource="cpu") == float("inf")
    assert get(m.CAPACITY_DIVERGENCE, cluster="c1", resource="cpu") == 0.2
    week = get(m.CAPACITY_FORECAST, cluster="c1", resource="cpu", horizon="7d", bound="mean")
    assert week == pytest.approx(float(cpu.mean[7 * 24 - 1]))
    assert (
        get(m.CAPACITY_SERIES, urgency="LOW") == 1 and get(m.CAPACITY_SERIES, urgency="none") == 1
    )
    assert get(m.CAPACITY_SERIES, urgency="skipped") == 1
    names = {s.labels.get("resource") for f in m.CAPACITY_LIMIT.collect() for s in f.samples}
    assert names == {"cpu"}  # disk has no capacity: no limit, no days left
    export_metrics([disk], {}, 0, 1.0)  # the next plan: cpu gone, no divergence
    assert not [s for f in m.CAPACITY_DIVERGENCE.collect() for s in f.samples]
    assert not [s for f in m.CAPACITY_UTILISATION.collect() for s in f.samples
                if s.labels["resource"] == "cpu"]  # fmt: skip


def test_forecast_records_are_scored_against_the_history_they_forecast() -> None:
    days = 10
    hours = np.arange(days * 24)
    t = 1_767_225_600.0 + hours * 3600.0
    y = 0.5 + 0.1 * np.sin(2 * np.pi * hours / 24)
    cfg = CapacitySettings(models=["seasonal_naive"], cv_windows=2)
    cut = len(t) - 24
    earlier = plan_series(HourlyHistory("c", "cpu", t[:cut], y[:cut]), cfg, [])
    record = json.loads(json.dumps(forecast_record(earlier, _iso(t[cut]))))
    steady = divergence(record, HourlyHistory("c", "cpu", t, y))
    assert steady is not None and steady.hours == 24 and steady.wape < 0.01  # a clean cycle
    grown = y.copy()
    grown[cut:] *= 1.3
    moved = divergence(record, HourlyHistory("c", "cpu", t, grown))
    assert moved is not None and moved.wape == pytest.approx(0.3 / 1.3, rel=0.05)


def test_urgency_bands() -> None:
    cfg = CapacitySettings()
    assert [urgency_for(d, cfg) for d in (1, 7, 7.5, 14, 20, 30, 31, None)] == [
        "URGENT", "URGENT", "HIGH", "HIGH", "MEDIUM", "MEDIUM", "LOW", "LOW",
    ]  # fmt: skip


def test_histories_fill_missing_hours_and_keep_the_last_repeat() -> None:
    recs = [
        {"cluster": "a", "resource": "cpu", "hour_start_ms": h * HOUR_MS, "mean": float(h)}
        for h in (0, 1, 3)
    ] + [{"cluster": "a", "resource": "cpu", "hour_start_ms": HOUR_MS, "mean": 10.0}]
    (h,) = histories_from_records(recs)
    assert list(h.values) == [0.0, 10.0, 6.5, 3.0]


# -- hourly aggregation -------------------------------------------------------------------------
def _window(host: str, start_ms: int, mean: float, count: int, peak: float) -> FeatureWindow:
    f = np.zeros(N_FEATURES)
    f[FEATURE_INDEX["mean"]], f[FEATURE_INDEX["count"]], f[FEATURE_INDEX["max"]] = mean, count, peak
    return FeatureWindow(f"c1/{host}/cpu_util", start_ms, start_ms + 60_000, f)


def test_hourly_aggregator_means_hosts_and_closes_after_lateness() -> None:
    agg = HourlyAggregator(lateness_ms=120_000, idle_ms=3 * HOUR_MS)
    assert agg.add(_window("h1", 0, 0.2, 10, 0.3)) == []
    assert agg.add(_window("h1", 60_000, 0.4, 10, 0.5)) == []
    assert agg.add(_window("h2", 0, 0.9, 1, 0.9)) == []  # one host's samples do not outweigh
    assert agg.add(_window("h2", HOUR_MS, 0.5, 10, 0.5)) == []
    assert agg.add(_window("h1", HOUR_MS, 0.7, 10, 0.7)) == []
    assert agg.add(_window("h1", 3 * HOUR_MS, 0.5, 10, 0.5)) == []  # h2 is behind
    first, second = agg.add(_window("h2", 3 * HOUR_MS, 0.5, 10, 0.5))
    assert first.cluster == "c1" and first.resource == "cpu_util"
    assert first.hour_start_ms == 0 and first.hosts == 2 and first.samples == 21
    assert first.mean == pytest.approx((0.3 + 0.9) / 2) and first.max == 0.9
    assert second.hour_start_ms == HOUR_MS and second.mean == pytest.approx(0.6)
    assert agg.add(_window("h2", 120_000, 0.1, 10, 0.1)) == [] and agg.late_windows == 1
    (last,) = agg.flush()
    assert last.hour_start_ms == 3 * HOUR_MS and last.mean == pytest.approx(0.5)


def test_a_silent_host_stops_holding_hours_open() -> None:
    agg = HourlyAggregator(lateness_ms=0, idle_ms=2 * HOUR_MS)
    agg.add(_window("h1", 0, 1.0, 1, 1.0))
    agg.add(_window("h2", 0, 3.0, 1, 3.0))  # then h2 falls silent
    assert agg.add(_window("h1", 2 * HOUR_MS, 1.0, 1, 1.0)) == []  # h2 silent, not yet idle
    closed = agg.add(_window("h1", 2 * HOUR_MS + 60_000, 1.0, 1, 1.0))
    assert [c.hour_start_ms for c in closed] == [0] and closed[0].mean == pytest.approx(2.0)


@pytest.mark.kafka
def test_flow_publishes_hourly_and_the_planner_publishes_plans(kafka_bootstrap: str) -> None:
    from novacron_ml.core.kafka import delete_topics, ensure_topics, produce, read_topic
    from novacron_ml.core.simulator import FleetConfig, FleetSimulator

    suffix = uuid.uuid4().hex[:10]
    names = {
        k: f"test.{suffix}.{k}"
        for k in ("metrics", "alerts", "dlq", "hourly", "cap_forecasts", "cap_alerts")
    }
    ensure_topics(kafka_bootstrap, names.values())
    try:
        days = 4
        start_ms = int(time.time() // 3600 * 3600 * 1000) - days * 86_400_000
        sim = FleetSimulator(
            FleetConfig(
                hosts=2, clusters=1, step_s=300, duration_s=days * 86_400.0, start_ms=start_ms,
                anomalies_per_host_per_hour=0.0,
            )
        )  # fmt: skip
        produce(kafka_bootstrap, names["metrics"], sim.messages("json"))
        env = dict(
            os.environ,
            NOVACRON_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
            NOVACRON_TOPICS_METRICS=names["metrics"],
            NOVACRON_TOPICS_ALERTS=names["alerts"],
            NOVACRON_TOPICS_DLQ=names["dlq"],
            NOVACRON_TOPICS_HOURLY=names["hourly"],
            NOVACRON_TOPICS_CAPACITY_FORECASTS=names["cap_forecasts"],
            NOVACRON_TOPICS_CAPACITY_ALERTS=names["cap_alerts"],
            NOVACRON_INGEST_MAX_EVENT_AGE_S="0",
            NOVACRON_WINDOW_LENGTH_S="300",
            NOVACRON_FEATURES_STEP_S="300",
            NOVACRON_CAPACITY_MIN_HISTORY_DAYS="3",
            NOVACRON_CAPACITY_HORIZON_DAYS="7",
            NOVACRON_CAPACITY_CAPACITY='{"cpu_util": 0.5}',
            NOVACRON_CAPACITY_MODELS='["seasonal_naive", "auto_ets"]',
            NOVACRON_RECOVERY_ENABLED="false",
        )
        cli = [sys.executable, "-m", "novacron_ml.cli"]
        run = subprocess.run(
            [*cli, "run", "--once"], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        # an in-order replay loses nothing (a producer that reordered the partition's batches
        # once made the flow dead-letter the first hours as late: kafka_io.ORDERED_PRODUCER)
        dead = read_topic(kafka_bootstrap, names["dlq"])
        assert not dead, (len(dead), dead[0].headers, dead[0].value[:200])
        hourly = [json.loads(r.value) for r in read_topic(kafka_bootstrap, names["hourly"])]
        cpu = sorted(
            (h for h in hourly if h["resource"] == "cpu_util"), key=lambda h: h["hour_start_ms"]
        )
        assert len(cpu) == days * 24  # every hour once, the last one flushed at end of input
        assert {(h["hosts"], h["samples"]) for h in cpu} == {(2, 24)}, [
            (i, h["hosts"], h["samples"]) for i, h in enumerate(cpu) if h["samples"] != 24
        ]
        # the aggregate equals the mean over hosts of each host's hourly mean of the events
        by_hour: dict[int, dict[str, list[float]]] = {}
        for ev in sim.events():
            if ev.metric == "cpu_util":
                hour = ev.ts_ms - ev.ts_ms % HOUR_MS
                by_hour.setdefault(hour, {}).setdefault(ev.host, []).append(ev.value)
        first = cpu[0]
        expected = np.mean([np.mean(v) for v in by_hour[first["hour_start_ms"]].values()])
        assert first["mean"] == pytest.approx(expected, rel=1e-9)

        plan = subprocess.run(
            [*cli, "capacity", "plan", "--resource", "cpu_util", "--resource", "memory_util",
             "--workers", "2"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert plan.returncode == 0, plan.stderr
        forecasts = [
            json.loads(r.value) for r in read_topic(kafka_bootstrap, names["cap_forecasts"])
        ]
        alerts = [json.loads(r.value) for r in read_topic(kafka_bootstrap, names["cap_alerts"])]
        assert {f["resource"] for f in forecasts} == {"cpu_util", "memory_util"}
        assert all(len(f["points"]) == 7 * 24 for f in forecasts)
        (alert,) = alerts  # only cpu_util has a capacity here
        assert alert["resource"] == "cpu_util" and alert["capacity"] == 0.5
        # simulated CPU swings around 0.45-0.65 daily: a 0.5 capacity is crossed within a day
        assert alert["urgency"] == "URGENT" and alert["days_to_exhaustion"] < 1.5
    finally:
        delete_topics(kafka_bootstrap, names.values())


def test_a_utilisation_forecast_stays_within_zero_and_one() -> None:
    """The simulated memory utilisation sits near its 0.9 capacity: its band reached 1.4-1.8
    before the forecasts were clipped to the ratio's physical bounds."""
    hours = np.arange(10 * 24)
    t = 1_767_225_600.0 + hours * 3600.0
    rng = np.random.default_rng(5)
    y = np.clip(0.9 + 0.08 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.05, len(hours)), 0, 1)
    cfg = CapacitySettings(
        capacity={"memory_util": 0.9}, models=["seasonal_naive"], cv_windows=2,
        min_history_days=3, horizon_days=7,
    )  # fmt: skip
    plan = plan_series(HourlyHistory("c", "memory_util", t, y), cfg, [])
    assert plan.hi.max() <= 1.0 and plan.lo.min() >= 0.0
    assert np.all(plan.lo <= plan.mean) and np.all(plan.mean <= plan.hi)
    assert plan.hi.max() == 1.0  # the unclipped band went past it


def test_accuracy_by_resource_with_holiday_hours_and_the_report(tmp_path: Path) -> None:
    """The seed's accuracy table comes from each plan's out-of-sample CV points: CPU and
    memory rows and an overall one; the CV windows of 20 days ending 2026-12-01 hold
    Thanksgiving (2026-11-26, US), whose hours are scored separately."""
    from training.capacity_report import accuracy_summary, resource_kind, write_report

    names = ("cpu_util", "memory_util", "net_in", "disk_io_percent", "http_requests", "temp")
    kinds = ["CPU", "memory", "network", "storage", "request rate", "other"]
    assert [resource_kind(r) for r in names] == kinds
    hours = np.arange(20 * 24)
    t = 1_764_547_200.0 - (len(hours) - hours) * 3600.0  # ends 2026-12-01 00:00 UTC
    cfg = CapacitySettings(models=["seasonal_naive", "auto_ets", "mstl"], cv_windows=3)
    plans = []
    for i, resource in enumerate(("cpu_util", "memory_util")):
        rng = np.random.default_rng(i)
        y = 0.5 + 0.1 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.01 * (i + 1), len(hours))
        plans.append(plan_series(HourlyHistory("c", resource, t, y), cfg, []))
    rows = {r["resource"]: r for r in accuracy_summary(plans, "US")}
    assert set(rows) == {"CPU", "memory", "overall"}
    _cv_t, cv_y, cv_hat = plans[0].cv_points  # type: ignore[misc]
    by_hand = 100 - 100 * np.mean(np.abs((cv_y - cv_hat) / cv_y))
    assert rows["CPU"]["accuracy"] == pytest.approx(by_hand)
    assert rows["CPU"]["holiday_hours"] == 24 and rows["overall"]["holiday_hours"] == 48
    assert rows["CPU"]["holiday_accuracy"] is not None
    assert rows["overall"]["accuracy"] == pytest.approx(
        (rows["CPU"]["accuracy"] + rows["memory"]["accuracy"]) / 2  # type: ignore[operator]
    )
    assert rows["memory"]["accuracy"] < rows["CPU"]["accuracy"]  # type: ignore[operator]
    assert accuracy_summary(plans, None)[0]["holiday_accuracy"] is None
    page = write_report(plans, tmp_path / "r", [], "US").read_text()
    assert "holiday accuracy" in page and f"{rows['CPU']['accuracy']:.2f}" in page


def test_compare_reports_relative_and_leave_one_out(tmp_path: Path) -> None:
    from training.capacity import compare_reports

    def o(sn: float, a: float, b: float) -> dict[str, dict[str, float]]:
        return {"seasonal_naive": {"mase": sn}, "rule:a": {"mase": a}, "rule:b": {"mase": b}}

    # a is better on x and y, b much better on z: held out z, the others choose a
    reports = {"x": o(1.0, 0.5, 0.6), "y": o(2.0, 1.0, 1.4), "z": o(1.0, 0.9, 0.1)}
    out = compare_reports(reports)
    assert out["relative"]["rule:a"] == pytest.approx({"x": 0.5, "y": 0.5, "z": 0.9})
    assert out["worst"]["rule:b"] == pytest.approx(0.7)
    loo = {h["held_out"]: (h["chosen"], h["relative"]) for h in out["leave_one_out"]}
    assert loo["z"] == ("rule:a", pytest.approx(0.9))
    assert loo["x"][0] == "rule:b"  # on y and z, b's mean 0.4 beats a's 0.7
    paths = []
    for name, overall in reports.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"overall": overall}))
    assert main(["capacity", "compare", *map(str, paths)]) == 0
    bad = _csv(tmp_path, "not json", "bad.json")
    assert main(["capacity", "compare", str(bad)]) == 2


def test_fast_path_fits_prophet_only_where_a_maintenance_window_applies() -> None:
    from training.planner import candidates

    cfg = CapacitySettings(fast=True)
    assert candidates(cfg, ModelOptions()) == ["seasonal_naive", "mstl"]
    with_window = ModelOptions(maintenance=lambda t: np.zeros(len(t)))
    assert candidates(cfg, with_window) == ["prophet", "seasonal_naive", "mstl"]
    assert candidates(CapacitySettings(), ModelOptions()) == list(CapacitySettings().models)
    # the fast path is a different, cheaper MSTL: daily season only, a fixed damped trend
    s = _seasonal_trend(21)
    full = backtest(s, 24, ["mstl"], 3, ModelOptions())
    fast = backtest(s, 24, ["seasonal_naive", "mstl"], 3, ModelOptions(fast=True))
    assert not np.allclose(full.windows[-1].forecasts["mstl"].mean,
                           fast.windows[-1].forecasts["mstl"].mean)  # fmt: skip
    # and still sees the trend that "same hour yesterday" misses
    assert fast.per_model["mstl"]["mase"] < fast.per_model["seasonal_naive"]["mase"]
