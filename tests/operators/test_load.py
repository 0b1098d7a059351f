"""The load-residual tier: a window mean against what its host's load proxy predicts."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from prometheus_client import REGISTRY

from dataflows.config import combine_config
from dataflows.steps import DetectShard, make_detect_step
from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from novacron_ml.core.schema import Alert, parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from operators.detection import load as load_module
from operators.detection.load import OUTCOMES, LoadConfig, LoadResidualDetector, score_many
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import (
    CombineConfig,
    SeriesState,
    detect_batch,
    new_series_state,
    tiers_for,
)
from training.features import feature_windows


def _reference(
    x: np.ndarray, y: np.ndarray, x0: float, y0: float, direction: int, floor: float = 0.01
) -> float:
    """The tier's signed z by textbook steps: np.polyfit, then median and MAD of the
    residuals; the width floored at `floor` of the level (0: the smallest step between two
    distinct values of y)."""
    slope, intercept = np.polyfit(x, y, 1)
    r = y - (intercept + slope * x)
    centre = np.median(r)
    steps = np.diff(np.unique(y))
    low = floor * abs(y.mean()) if floor > 0 else float(steps.min())
    width = max(1.4826 * np.median(np.abs(r - centre)), low, 1e-9)
    z = (y0 - (intercept + slope * x0) - centre) / width
    return z


@pytest.mark.parametrize("floor", [0.01, 0.0])
def test_the_batched_score_is_a_least_squares_line_in_its_residuals_robust_width(
    floor: float,
) -> None:
    rng = np.random.default_rng(3)
    config = LoadConfig(relative_floor=floor)
    dets, xs, ys, expected = [], [], [], []
    for k in range(40):  # rings full and filling, every direction, some without a proxy
        det = LoadResidualDetector(config, (-1, 0, 1)[k % 3], f"c/h{k}", "throughput_mbps")
        n = (30, 45, 60, 90)[k % 4]
        x = rng.uniform(0.2, 0.9, n)
        y = 3.0 + 40.0 * x + rng.normal(0, 0.5, n)
        if k % 5 == 4:  # a series that rounds to whole units: its resolution matters
            y = np.round(y)
        for a, b in zip(x, y, strict=True):
            det.learn(a, b, anomalous=False)
        x0, y0 = float(rng.uniform(0.2, 0.9)), float(rng.normal(30, 5))
        proxy = None if k % 7 == 6 else x0
        kept = min(n, config.history_windows)
        x32, y32 = (v[-kept:].astype(np.float32).astype(np.float64) for v in (x, y))  # its ring
        ref = _reference(x32, y32, x0, y0, det.direction, floor)
        dets.append(det)
        xs.append(proxy)
        ys.append(y0)
        expected.append(None if proxy is None else ref)
    got = score_many(dets, xs, ys)
    assert [g is None for g in got] == [e is None for e in expected]
    assert np.allclose([g or 0.0 for g in got], [e or 0.0 for e in expected], rtol=1e-9)
    assert max(abs(g or 0.0) for g in got) > 3  # the values are not all alike
    assert dets[0].bad(-4.0) == 4.0 and dets[1].bad(-4.0) == 4.0 and dets[2].bad(-4.0) == 0.0
    young = LoadResidualDetector(config, 0, "c/h", "throughput_mbps")
    for _ in range(config.min_history - 1):
        young.learn(0.5, 20.0, anomalous=False)
    assert young.score(0.5, 90.0) is None  # warming up: no score however far


def _host(
    minutes: int,
    drop: tuple[int, int, float] | None,
    cpu_jump: tuple[int, int] | None,
    cycle: float = 0.3,
):
    """Window rounds of one host whose CPU, throughput, memory and latency follow one load (a
    6-hour cycle of amplitude `cycle` with a slow random walk): `drop` lowers throughput by a
    fixed amount over windows [a, b); `cpu_jump` lifts CPU alone over windows [a, b)."""
    rng = np.random.default_rng(11)
    t_s = np.arange(0, minutes * 60, 5)
    walk = np.cumsum(rng.normal(0, 0.002, len(t_s)))
    load = 0.5 + cycle * np.sin(2 * np.pi * t_s / 21_600) + walk
    cpu = load + rng.normal(0, 0.005, len(t_s))
    throughput = 100 * load + rng.normal(0, 0.5, len(t_s))
    if drop is not None:
        a, b, size = drop
        throughput[(t_s >= a * 60) & (t_s < b * 60)] -= size
    if cpu_jump is not None:
        a, b = cpu_jump
        cpu[(t_s >= a * 60) & (t_s < b * 60)] += 1.0
    series = {
        "c/h/cpu_util": cpu,
        "c/h/throughput_mbps": throughput,
        "c/h/memory_util": 0.2 + 0.5 * load + rng.normal(0, 0.004, len(t_s)),
        "c/h/latency_p50_ms": 5 + 20 * load + rng.normal(0, 0.2, len(t_s)),
    }
    per_series = [feature_windows(t_s * 1000, v, series=name) for name, v in series.items()]
    return list(zip(*per_series, strict=True))  # one round per window start


def _run(
    rounds: list[tuple[FeatureWindow, ...]], combine: CombineConfig
) -> tuple[list[Alert], dict[str, SeriesState]]:
    config = RobustZConfig()
    tiers = tiers_for(config, combine)
    states = {w.series: new_series_state(w.series, config, combine, tiers) for w in rounds[0]}
    alerts = []
    for batch in rounds:
        for r in detect_batch([states[w.series] for w in batch], list(batch), tiers):
            if isinstance(r, Alert):
                alerts.append(r)
    return alerts, states


def _in(alert: Alert, a: int, b: int, start_ms: int) -> bool:
    minute = (parse_rfc3339_ms(alert.window_start) - start_ms) // 60_000
    return a <= minute < b


def test_a_drop_small_next_to_the_load_cycle_fires_the_load_tier_only() -> None:
    rounds = _host(300, drop=(200, 215, 3.0), cpu_jump=None)
    start = rounds[0][0].start_ms
    alerts, states = _run(rounds, CombineConfig())
    throughput = [a for a in alerts if a.metric == "throughput_mbps"]
    assert any(a.detector == "load_residual" and _in(a, 200, 215, start) for a in throughput)
    assert not [a for a in throughput if not _in(a, 200, 220, start)]  # and nowhere else
    by_load = [a for a in throughput if a.detector == "load_residual"]
    assert all("novelty" in a.tiers for a in by_load)  # its alerts carry every tier's score
    assert states["c/h/cpu_util"].load is not None and states["c/h/cpu_util"].load.is_proxy
    off, _ = _run(rounds, CombineConfig(load_threshold=None))
    assert not [a for a in off if a.metric == "throughput_mbps" and _in(a, 200, 215, start)]


INF = float("inf")


@pytest.mark.parametrize(
    ("config", "shows"),
    [
        (LoadConfig(), False),
        (LoadConfig(proxy_gate=INF), False),  # the vote alone tells the proxy moved
        (LoadConfig(proxy_vote=INF), False),  # the gate alone keeps the proxy's jump out
        (LoadConfig(proxy_gate=INF, proxy_vote=INF), True),  # neither: it shows everywhere
    ],
)
def test_the_proxys_own_anomaly_does_not_show_on_the_other_metrics(
    config: LoadConfig, shows: bool
) -> None:
    rounds = _host(300, drop=None, cpu_jump=(200, 215))
    start = rounds[0][0].start_ms
    alerts, _ = _run(rounds, CombineConfig(load=config))
    assert any(a.metric == "cpu_util" and _in(a, 200, 215, start) for a in alerts)
    by_load = [a for a in alerts if a.detector == "load_residual"]
    assert bool(by_load) == shows
    assert all(_in(a, 200, 215, start) for a in by_load)


def test_the_settings_turn_the_tier_off_and_pick_the_proxy() -> None:
    off = combine_config(Settings(detector={"load_threshold": 0}))
    assert off.load_threshold is None
    state = new_series_state("c/h/memory_util", RobustZConfig(), off)
    assert state.load is None
    on = combine_config(Settings(detector={"load_proxy": "network_util"}))
    det = new_series_state("c/h/memory_util", RobustZConfig(), on).load
    assert det is not None and det.proxy_key == "c/h/network_util" and not det.is_proxy
    assert new_series_state("c/h/network_util", RobustZConfig(), on).load.is_proxy  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"'cpu_usage_user\{cpu=cpu-total' is not metric"):
        Settings(detector={"load_proxy": "cpu_usage_user{cpu=cpu-total"})  # a typo never matches


def test_a_tagged_series_is_the_proxy_of_its_host_as_telegraf_reports_cpu() -> None:
    # Telegraf's cpu input reports every core and the total under one metric, by a tag
    combine = combine_config(Settings(detector={"load_proxy": "cpu_usage_user{cpu=cpu-total}"}))
    config = RobustZConfig()
    tiers = tiers_for(config, combine)
    names = {
        "c/h/cpu_usage_user{cpu=cpu-total}": "proxy",
        "c/h/cpu_usage_user{cpu=cpu0}": "fitted",
        "c/h/mem_used_percent": "fitted",
    }
    states = {n: new_series_state(n, config, combine, tiers) for n in names}
    assert [s.load.is_proxy for s in states.values()] == [True, False, False]  # type: ignore[union-attr]
    rng = np.random.default_rng(5)
    for k in range(40):
        load = 0.5 + 0.3 * np.sin(k / 10)
        windows = [
            _window(n, k, 100 * load * (1 + 0.1 * i) + rng.normal(0, 0.1))
            for i, n in enumerate(names)
        ]
        detect_batch([states[w.series] for w in windows], windows, tiers)
    fitted = [n for n, s in states.items() if s.load is not None and s.load._filled]
    assert fitted == [n for n, role in names.items() if role == "fitted"]


def _window(series: str, k: int, mean: float) -> FeatureWindow:
    features = np.zeros(N_FEATURES)
    features[FEATURE_INDEX["mean"]] = mean
    features[FEATURE_INDEX["count"]] = 12
    return FeatureWindow(series, k * 60_000, (k + 1) * 60_000, features)


def test_a_proxy_with_more_tags_than_the_setting_names_is_its_hosts_proxy() -> None:
    # an agent's global tags (`dc`) are in every key; the setting names the CPU total alone.
    # The proxy's windows come a step before the others, so the step finds it in the shard
    # under the key the setting gives it, also after the shard was pickled.
    combine = combine_config(Settings(detector={"load_proxy": "cpu_usage_user{cpu=cpu-total}"}))
    step = make_detect_step(RobustZConfig(), combine=combine)
    proxy = "c/h/cpu_usage_user{cpu=cpu-total,dc=eu}"
    fitted = ["c/h/cpu_usage_user{cpu=cpu0,dc=eu}", "c/h/mem_used_percent{dc=eu}"]
    shard = DetectShard()
    rng = np.random.default_rng(2)
    for k in range(45):
        load = 0.5 + 0.3 * np.sin(k / 10)
        step(shard, [_window(proxy, k, 100 * load + rng.normal(0, 0.1))])
        step(shard, [_window(n, k, 80 * load + rng.normal(0, 0.1)) for n in fitted])
        if k == 20:
            shard = pickle.loads(pickle.dumps(shard))
    assert shard.proxies == {"c/h/cpu_usage_user{cpu=cpu-total}": proxy}
    states = [shard.series[n].load for n in [proxy, *fitted]]
    assert [d.is_proxy for d in states] == [True, False, False]  # type: ignore[union-attr]
    assert all(d._filled >= 30 for d in states[1:])  # type: ignore[union-attr]
    assert states[0]._xy is None  # type: ignore[union-attr]  # a proxy keeps no ring
    shard.remove(proxy)
    assert not shard.proxies


def _count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("novacron_load_residual_windows_total", {"outcome": outcome})
    return value or 0.0


def test_the_tier_counts_each_fitted_window_and_warns_once_for_a_host_without_proxy(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(load_module._WARNED, "no_proxy", False)
    before = {o: _count(o) for o in OUTCOMES}
    combine = CombineConfig()
    config = RobustZConfig()
    tiers = tiers_for(config, combine)
    # host a: memory follows its CPU, disk I/O does not; host b has no cpu_util
    names = ["c/a/cpu_util", "c/a/memory_util", "c/a/disk_io", "c/b/memory_util"]
    states = {n: new_series_state(n, config, combine, tiers) for n in names}
    rng = np.random.default_rng(8)
    warned_at = None
    with caplog.at_level(logging.WARNING, logger="operators.detection.load"):
        for k in range(50):
            load = 0.5 + 0.3 * np.sin(k / 10)
            means = [100 * load, 100 * load, 50.0, 100 * load]
            windows = [
                _window(n, k, m + rng.normal(0, 0.1)) for n, m in zip(names, means, strict=True)
            ]
            batches = [windows]
            if k == 45:  # the proxy's window comes after the others, in the next batch
                batches = [windows[1:], windows[:1]]
            for batch in batches:  # the shard's states found by key, as the flow's step does
                detect_batch([states[w.series] for w in batch], batch, tiers, states.get)
            warned_at = warned_at if warned_at is not None or not caplog.records else k
    got = {o: _count(o) - before[o] for o in OUTCOMES}
    gate = config.min_history  # the proxy's robust z warms up: its windows do not count
    warm = LoadConfig().min_history
    after = 50 - gate - warm - 1  # windows of host a's fitted series past every warm-up
    assert got == {
        "no_proxy": 50,
        "proxy_unusable": 2 * gate,
        "warming": 2 * warm,
        "proxy_late": 2,
        "scored": after,  # memory
        "weak_fit": after,  # disk I/O: the load explains none of it
        "proxy_moved": 0,
    }
    warnings = [r for r in caplog.records if "no c/b/cpu_util series" in r.getMessage()]
    assert len(warnings) == 1 and "c/b/memory_util" in warnings[0].getMessage()
    assert warned_at == config.min_history  # not before the series could have found one


def test_a_series_the_load_explains_too_little_of_is_not_scored_at_min_r2() -> None:
    rng = np.random.default_rng(4)
    config = LoadConfig()  # min_r2 0.5: the load explains at least half of the variance
    follows = LoadResidualDetector(config, 0, "c/h", "throughput_mbps")
    apart = LoadResidualDetector(config, 0, "c/h", "disk_io")  # its own noise, not the load's
    for _ in range(60):
        x = float(rng.uniform(0.2, 0.9))
        follows.learn(x, 100 * x + float(rng.normal(0, 2)), anomalous=False)
        apart.learn(x, 50 + float(rng.normal(0, 2)), anomalous=False)
    z_follows, z_apart = score_many([follows, apart], [0.5, 0.5], [20.0, 20.0])
    assert z_follows is not None and z_follows < -6  # 30 below the line: far off it
    assert z_apart is not None and np.isnan(z_apart)  # 30 below its mean too, but not judged
    everything = LoadConfig(min_r2=0.0)  # every series is scored
    apart.config = everything
    follows.config = everything
    assert not np.isnan(score_many([follows, apart], [0.5, 0.5], [20.0, 20.0])[1] or 0.0)


def test_a_run_bar_makes_k_windows_in_a_row_as_rare_as_one_past_the_threshold() -> None:
    from math import erfc, sqrt

    def tail(z: float) -> float:  # P(Z > z) for a standard normal
        return erfc(z / sqrt(2)) / 2

    bars = load_module.run_bars(6.0, (2, 3, 4))
    assert [round(b, 2) for b in bars] == [4.0, 3.09, 2.54]
    for k, bar in zip((2, 3, 4), bars, strict=True):
        assert tail(bar) ** k == pytest.approx(tail(6.0), rel=1e-6)
    score = load_module.run_score
    assert score([3.0, 3.0, 3.0, 3.0], (2, 4), 6.0) == pytest.approx(6.0 * 3.0 / bars[2])
    assert score([3.0, 3.0, 3.0, 1.0], (2, 4), 6.0) == 0.0  # the run ended at the last window
    assert score([20.0, 0.5, 0.5, 0.5], (2, 4), 6.0) == 0.0  # a spike does not carry over
    assert score([4.5, 4.5], (2, 4), 6.0) > 6.0 and score([4.5], (2, 4), 6.0) == 0.0
    assert score([2.6, 2.6, 2.6, 2.5], (2, 4), 6.0) == 0.0  # one window short of its bar
    assert score([3.0, -3.0, 3.0, 3.0], (4,), 6.0, two_sided=True) == 0.0  # not one side
    assert score([-3.0, -3.0, -3.0, -3.0], (4,), 6.0, two_sided=True) > 6.0
    with pytest.raises(ValueError, match="2 windows or more"):
        LoadConfig(runs=(1, 4))


def test_a_sustained_drop_too_small_for_one_window_fires_by_its_run() -> None:
    """Throughput 2.4 below what the load predicts for 30 minutes: about 5 residual widths a
    window (the width floored at 1 % of the level, 0.5), so no single window fires; windows
    in a row past their bars do, from the second window on. (A line fitted while the load
    falls steeply bends toward the newest windows, whose proxy values are the extremes, and
    can absorb such a drop before its run fires: the same drop 50 minutes earlier in this
    cycle is not found. docs/DETECTION.md item 8.)"""
    rounds = _host(300, drop=(200, 230, 2.4), cpu_jump=None)
    start = rounds[0][0].start_ms
    alerts, states = _run(rounds, CombineConfig())
    by_load = [a for a in alerts if a.detector == "load_residual"]
    assert len(by_load) >= 10 and all(a.metric == "throughput_mbps" for a in by_load)
    assert all(_in(a, 201, 235, start) for a in by_load)  # a run: not on its first window
    assert not [a for a in alerts if a.metric == "throughput_mbps" and not _in(a, 200, 235, start)]
    single, _ = _run(rounds, CombineConfig(load=LoadConfig(runs=())))
    assert not [a for a in single if a.detector == "load_residual"]
    det = states["c/h/throughput_mbps"].load
    assert det is not None and len(det.run) <= 4
    old = det.__getstate__()[:-1]  # a detector pickled before the runs resumes with none
    back = LoadResidualDetector.__new__(LoadResidualDetector)
    back.__setstate__(old)
    assert back.run == ()
