"""Every window feature against an independent pandas/numpy reference, plus edge cases."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from novacron_ml.core.features import FEATURE_INDEX, FEATURE_NAMES, FeatureConfig, FeatureWindow
from novacron_ml.core.schema import MetricEvent
from operators.features.engine import FeatureEngine

T0 = 1_790_000_000_000 // 3_600_000 * 3_600_000  # an hour boundary


def events_for(ts: list[int], values: list[float], host: str = "h1") -> list[MetricEvent]:
    return [MetricEvent(t, host, "c1", "m", v) for t, v in zip(ts, values, strict=True)]


def run_engine(
    cfg: FeatureConfig, events: list[MetricEvent], batch: int = 97
) -> list[FeatureWindow]:
    engine = FeatureEngine(cfg)
    out: list[FeatureWindow] = []
    for i in range(0, len(events), batch):
        windows, late = engine.ingest(events[i : i + batch], now_ms=0)
        assert late == []
        out.extend(windows)
    out.extend(engine.flush())
    return out


def reference(cfg: FeatureConfig, ts: list[int], values: list[float]) -> list[dict[str, float]]:
    """Features computed the slow, obvious way: a dict grid, pandas per window."""
    step, win, n_lb = cfg.step_ms, cfg.window_ms, cfg.lookback_slots
    grid: dict[int, float] = {}
    for t, v in zip(ts, values, strict=True):
        grid[t // step] = v
    first_start = (ts[0] // win) * win
    alpha_f, alpha_s = 2 / (cfg.ewma_fast_span + 1), 2 / (cfg.ewma_slow_span + 1)
    rows: list[dict[str, float]] = []
    means: list[float] = []
    start = first_start
    ewm_f = ewm_s = math.nan
    while start <= max(ts):
        s0, s1 = start // step, (start + win) // step
        w_slots = [s for s in range(s0, s1) if s in grid]
        if not w_slots:
            start += win
            continue
        x = pd.Series([grid[s] for s in w_slots])
        n = len(x)
        for s in w_slots:
            v = grid[s]
            ewm_f = v if math.isnan(ewm_f) else alpha_f * v + (1 - alpha_f) * ewm_f
            ewm_s = v if math.isnan(ewm_s) else alpha_s * v + (1 - alpha_s) * ewm_s
        lb = np.array([grid[s] for s in range(s1 - n_lb, s1) if s in grid])
        med = np.median(lb)
        mad = np.median(np.abs(lb - med))
        scale = 1.4826 * mad if mad > 0 else 1.2533 * np.mean(np.abs(lb - med))
        last = float(x.iloc[-1])
        lb_full = np.array([grid.get(s, np.nan) for s in range(s1 - n_lb, s1)])
        fill = np.where(np.isnan(lb_full), np.nanmean(lb_full), lb_full)
        spec = np.abs(np.fft.fft(fill - fill.mean()))[1 : n_lb // 2 + 1] ** 2
        when = datetime.fromtimestamp(start / 1000, UTC)
        hour = when.hour + when.minute / 60 + when.second / 3600
        dow = when.weekday()
        mean = float(x.mean())
        prev = [means[-k] if len(means) >= k else mean for k in (1, 2, 3)]

        def bucket_mean(t_ms: int) -> float | None:
            b0 = (t_ms // cfg.bucket_ms) * cfg.bucket_ms
            vals = [grid[s] for s in range(b0 // step, (b0 + cfg.bucket_ms) // step) if s in grid]
            return float(np.mean(vals)) if vals else None

        d1, w1 = bucket_mean(start - 86_400_000), bucket_mean(start - 7 * 86_400_000)
        ok_spec = spec.sum() > 0 and len(lb) >= 2
        p = spec / spec.sum() if ok_spec else spec
        row = {
            "count": n,
            "missing_ratio": 1 - n / (win // step),
            "mean": mean,
            "std": float(x.std()) if n > 1 else 0.0,
            "min": float(x.min()),
            "max": float(x.max()),
            "p50": float(x.quantile(0.5)),
            "p95": float(x.quantile(0.95)),
            "p99": float(x.quantile(0.99)),
            "skew": 0.0 if pd.isna(x.skew()) else float(x.skew()),
            "kurtosis": 0.0 if pd.isna(x.kurt()) else float(x.kurt()),
            "last": last,
            "rate_of_change": (last - x.iloc[0]) / ((w_slots[-1] - w_slots[0]) * cfg.step_s)
            if n > 1
            else 0.0,
            "robust_z_last": (last - med) / scale if scale > 0 else 0.0,
            "ewma_fast": ewm_f,
            "ewma_slow": ewm_s,
            "ewma_gap": ewm_f - ewm_s,
            "hour_sin": math.sin(2 * math.pi * hour / 24),
            "hour_cos": math.cos(2 * math.pi * hour / 24),
            "dow_sin": math.sin(2 * math.pi * dow / 7),
            "dow_cos": math.cos(2 * math.pi * dow / 7),
            "is_weekend": float(dow >= 5),
            "dominant_period_s": n_lb * cfg.step_s / (np.argmax(spec) + 1) if ok_spec else 0.0,
            "dominant_power": spec.max() / spec.sum() if ok_spec else 0.0,
            "spectral_entropy": float(-(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(spec)))
            if ok_spec
            else 0.0,
            "prev_mean_1": prev[0],
            "prev_mean_2": prev[1],
            "prev_mean_3": prev[2],
            "diff_prev_1": mean - prev[0],
            "lag_1d": d1 if d1 is not None else mean,
            "lag_1w": w1 if w1 is not None else mean,
            "diff_1d": mean - d1 if d1 is not None else 0.0,
            "diff_1w": mean - w1 if w1 is not None else 0.0,
            "has_lag_1d": float(d1 is not None),
            "has_lag_1w": float(w1 is not None),
        }
        row["_start"] = start
        rows.append(row)
        means.append(mean)
        start += win
    return rows


def assert_match(got: list[FeatureWindow], want: list[dict[str, float]]) -> None:
    assert [w.start_ms for w in got] == [r["_start"] for r in want]
    for w, r in zip(got, want, strict=True):
        assert np.isfinite(w.features).all()
        for name in FEATURE_NAMES:
            scale = max(1.0, abs(r["mean"]))
            tol = 1e-6 * scale if name not in ("skew", "kurtosis", "robust_z_last") else 1e-4
            if name in ("dominant_period_s", "dominant_power", "spectral_entropy"):
                tol = 1e-3  # float32 storage of the look-back
            assert w[name] == pytest.approx(r[name], rel=1e-4, abs=tol), (name, w.start_ms)


SMALL = FeatureConfig(
    window_s=600, step_s=60, lookback_s=3600, bucket_s=600, lateness_s=0, lookback_every=1
)


def series(
    n: int, seed: int, *, offset: float = 100.0, missing: float = 0.0
) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng(seed)
    ts = [T0 + i * 60_000 + int(rng.integers(0, 60_000)) for i in range(n)]
    t = np.arange(n)
    values = offset + 10 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 1, n)
    keep = rng.random(n) >= missing
    return [x for x, k in zip(ts, keep, strict=True) if k], [
        float(v) for v, k in zip(values, keep, strict=True) if k
    ]


@pytest.mark.parametrize(
    ("n", "seed", "offset", "missing"),
    [
        (8 * 1440 + 30, 1, 100.0, 0.0),  # eight days: day and week lags exist
        (600, 2, 0.0, 0.3),  # 30 % missing samples
        (300, 3, 1e9, 0.0),  # very large values
        (300, 4, -50.0, 0.1),
    ],
    ids=["8-days", "gappy", "huge", "negative"],
)
def test_every_feature_matches_the_reference(
    n: int, seed: int, offset: float, missing: float
) -> None:
    ts, values = series(n, seed, offset=offset, missing=missing)
    assert_match(run_engine(SMALL, events_for(ts, values)), reference(SMALL, ts, values))


def test_week_lag_exists_after_a_week() -> None:
    ts, values = series(8 * 1440 + 30, 1)
    windows = run_engine(SMALL, events_for(ts, values))
    assert windows[0]["has_lag_1w"] == 0 and windows[-1]["has_lag_1w"] == 1
    assert windows[-1]["has_lag_1d"] == 1


@pytest.mark.parametrize(
    ("ts", "values"),
    [
        ([T0 + 5000], [3.0]),
        ([T0 + i * 60_000 for i in range(40)], [7.0] * 40),
        (
            [T0, T0 + 60_000, T0 + 5 * 3_600_000, T0 + 5 * 3_600_000 + 60_000],
            [1.0, 2.0, 50.0, 51.0],
        ),
        ([T0 + i * 60_000 for i in range(30)], [1e300, -1e300] * 15),
    ],
    ids=["single-point", "constant", "long-gap", "extreme"],
)
def test_edge_cases_never_leak_nan_or_inf(ts: list[int], values: list[float]) -> None:
    windows = run_engine(SMALL, events_for(ts, values))
    assert windows
    for w in windows:
        assert np.isfinite(w.features).all(), w
    if len(set(values)) == 1:
        for w in windows:
            assert w["std"] == 0 and w["skew"] == 0 and w["robust_z_last"] == 0
            assert w["dominant_power"] == 0 and w["spectral_entropy"] == 0


def test_long_gap_skips_empty_windows_without_emitting_them() -> None:
    ts = [T0, T0 + 60_000, T0 + 5 * 3_600_000, T0 + 5 * 3_600_000 + 60_000]
    windows = run_engine(SMALL, events_for(ts, [1.0, 2.0, 50.0, 51.0]))
    assert [w.start_ms - T0 for w in windows] == [0, 5 * 3_600_000]
    assert [w["count"] for w in windows] == [2, 2]


def test_lookback_statistics_refresh_on_aligned_windows() -> None:
    ts, values = series(900, 8)
    exact = run_engine(SMALL, events_for(ts, values))
    cached = run_engine(replace(SMALL, lookback_every=3), events_for(ts, values))
    for e, c in zip(exact, cached, strict=True):
        same = (e.start_ms // SMALL.slide_ms) % 3 == 0
        for name in ("robust_z_last", "dominant_period_s", "spectral_entropy"):
            assert (e[name] == pytest.approx(c[name])) or not same
        # between refreshes the statistics are those of the last refresh
        assert e["mean"] == c["mean"]


def test_batching_does_not_change_results() -> None:
    ts, values = series(900, 7, missing=0.1)
    evs = events_for(ts, values)
    one = run_engine(SMALL, evs, batch=1)
    big = run_engine(SMALL, evs, batch=10_000)
    assert [w.start_ms for w in one] == [w.start_ms for w in big]
    assert np.allclose(np.stack([w.features for w in one]), np.stack([w.features for w in big]))


def test_sliding_windows_overlap_and_keep_ewma_single_counted() -> None:
    cfg = FeatureConfig(
        window_s=600, slide_s=300, step_s=60, lookback_s=3600, bucket_s=600, lateness_s=0
    )
    ts = [T0 + i * 60_000 for i in range(60)]
    values = [float(i) for i in range(60)]
    windows = run_engine(cfg, events_for(ts, values))
    assert [w.start_ms - T0 for w in windows][:3] == [-300_000, 0, 300_000]
    assert windows[1]["count"] == 10 and windows[1]["mean"] == pytest.approx(4.5)
    tumbling = run_engine(SMALL, events_for(ts, values))
    assert windows[-1]["ewma_slow"] == pytest.approx(tumbling[-1]["ewma_slow"])


def test_late_events_are_returned_and_windows_never_emitted_twice() -> None:
    cfg = FeatureConfig(
        window_s=60, step_s=5, lookback_s=600, bucket_s=300, lateness_s=10, idle_ttl_s=60
    )
    engine = FeatureEngine(cfg)
    evs = [MetricEvent(T0 + i * 5000, "h1", "c1", "m", 1.0) for i in range(20)]
    windows, late = engine.ingest(evs, now_ms=1_000)
    assert [w.start_ms - T0 for w in windows] == [0]
    # late for window 0, which has been emitted
    windows, late = engine.ingest([MetricEvent(T0 + 1000, "h1", "c1", "m", 9.0)], now_ms=2_000)
    assert windows == [] and [x.event.value for x in late] == [9.0]
    # idle: system time closes window 1 and then evicts the series
    closed = engine.advance(now_ms=200_000)
    assert [w.start_ms - T0 for w in closed] == [60_000]
    assert engine.n_series == 0
    # the Bytewax 0.21 case: a late event after all windows closed must not re-open window 0
    windows, late = engine.ingest([MetricEvent(T0 + 2000, "h1", "c1", "m", 5.0)], now_ms=300_000)
    assert windows == [] and len(late) == 1 and late[0].next_window_start_ms == T0 + 120_000
    assert engine.n_series == 0  # no state kept for an all-late series
    assert engine.flush() == []
    # fresh data after the tombstone starts the series again, after its last window
    windows, late = engine.ingest(
        [MetricEvent(T0 + 130_000 + i * 5000, "h1", "c1", "m", 2.0) for i in range(20)], 400_000
    )
    assert late == [] and [w.start_ms - T0 for w in windows] == [120_000]


def test_state_is_bounded_and_picklable() -> None:
    cfg = FeatureConfig(window_s=60, step_s=5, lookback_s=3600)
    engine = FeatureEngine(cfg)
    evs = [
        MetricEvent(T0 + i * 5000, f"h{j}", "c1", "m", float(i))
        for i in range(100)
        for j in range(50)
    ]
    engine.ingest(evs, now_ms=0)
    assert engine.state_bytes_per_series() <= 16 * 1024
    clone = pickle.loads(pickle.dumps(engine.snapshot()))
    a = engine.flush()
    b = clone.flush()
    assert [w.series for w in a] == [w.series for w in b]
    assert np.array_equal(np.stack([w.features for w in a]), np.stack([w.features for w in b]))


def test_feature_order_is_stable_and_large_enough() -> None:
    assert len(FEATURE_NAMES) >= 27 and len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_INDEX["mean"] == 2


def test_next_close_is_the_moment_advance_closes_a_quiet_series_window() -> None:
    cfg = FeatureConfig(
        window_s=60, step_s=5, lookback_s=600, bucket_s=300, lateness_s=10, idle_ttl_s=3600
    )
    engine = FeatureEngine(cfg)
    assert engine.next_close_ms() is None
    # two series; the last events at T0+50 s (wall 7,000) and T0+55 s (wall 9,000)
    a = [MetricEvent(T0 + i * 5000, "h1", "c1", "m", 1.0) for i in range(11)]
    b = [MetricEvent(T0 + i * 5000, "h2", "c1", "m", 1.0) for i in range(12)]
    assert engine.ingest(a, now_ms=7_000) == ([], [])
    assert engine.ingest(b, now_ms=9_000) == ([], [])
    # h1's window [T0, T0+60 s) closes once its watermark (50 s + idle - 10 s) reaches 60 s:
    # idle 20 s after wall 7,000 -> 27,000; h2: idle 15 s after 9,000 -> 24,000 (first)
    assert engine.next_close_ms() == 24_000
    assert engine.advance(now_ms=23_999) == []
    assert [w.series for w in engine.advance(now_ms=24_000)] == ["c1/h2/m"]
    assert engine.next_close_ms() == 27_000
    assert [w.series for w in engine.advance(now_ms=27_000)] == ["c1/h1/m"]
    assert engine.next_close_ms() is None  # nothing left that holds data
