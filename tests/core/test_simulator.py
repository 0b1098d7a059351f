"""The fleet simulator: determinism, anomaly coverage, realistic structure."""

from __future__ import annotations

import numpy as np

from novacron_ml.core.labels import read_labels, write_labels
from novacron_ml.core.simulator import METRIC_NAMES, SIMULATED_TYPES, FleetConfig, FleetSimulator

CFG = FleetConfig(
    hosts=5, clusters=2, duration_s=8 * 3600, step_s=30, start_ms=1_790_000_000_000, seed=4
)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = list(FleetSimulator(CFG).messages("json"))
    b = list(FleetSimulator(CFG).messages("json"))
    c = list(FleetSimulator(FleetConfig(**{**CFG.__dict__, "seed": 5})).messages("json"))
    assert a == b
    assert a != c
    assert len(a) == FleetSimulator(CFG).n_events == 5 * 10 * (8 * 3600 // 30)


def test_all_seven_types_are_injected_after_warmup_and_labelled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sim = FleetSimulator(
        FleetConfig(**{**CFG.__dict__, "hosts": 10, "anomalies_per_host_per_hour": 1.0})
    )
    assert {lb.type for lb in sim.labels} == {t.value for t in SIMULATED_TYPES}
    for lb in sim.labels:
        assert lb.start_ms >= sim.start_ms + CFG.warmup_s * 1000
        assert CFG.min_anomaly_s * 1000 <= lb.end_ms - lb.start_ms <= CFG.max_anomaly_s * 1000
    path = tmp_path / "labels.jsonl"
    write_labels(sim.labels, str(path))
    assert read_labels(str(path)) == sim.labels


def test_anomalies_move_their_metrics() -> None:
    sim = FleetSimulator(
        FleetConfig(**{**CFG.__dict__, "hosts": 10, "anomalies_per_host_per_hour": 1.0})
    )
    times, values = zip(*sim.ticks(), strict=True)
    t = np.concatenate(times)
    v = np.concatenate(values)
    hosts = [h for _, h in sim.hosts]
    for lb in sim.labels:
        h = hosts.index(lb.host)
        inside = (t >= lb.start_ms) & (t < lb.end_ms)
        before = (t >= lb.start_ms - 1_800_000) & (t < lb.start_ms)
        for metric in lb.metrics:
            m = METRIC_NAMES.index(metric)
            shift = abs(v[inside, h, m].mean() - v[before, h, m].mean())
            assert shift > 5 * v[before, h, m].std(), (lb, metric)


def test_metrics_are_correlated_through_load_and_have_a_daily_cycle() -> None:
    sim = FleetSimulator(
        FleetConfig(
            hosts=2,
            clusters=1,
            duration_s=2 * 86400,
            step_s=60,
            start_ms=1_790_000_000_000,
            anomalies_per_host_per_hour=0,
        )
    )
    t, v = (np.concatenate(x) for x in zip(*sim.ticks(), strict=True))
    cpu = v[:, 0, METRIC_NAMES.index("cpu_util")]
    lat = v[:, 0, METRIC_NAMES.index("latency_p50_ms")]
    tput = v[:, 0, METRIC_NAMES.index("throughput_mbps")]
    assert np.corrcoef(cpu, tput)[0, 1] > 0.8
    assert np.corrcoef(cpu, lat)[0, 1] > 0.3
    hour = (t // 3_600_000) % 24
    hourly = np.array([cpu[hour == h].mean() for h in range(24)])
    assert hourly.max() - hourly.min() > 0.1  # a visible daily cycle
    assert ((v >= 0) | ~np.isfinite(v)).all() and np.isfinite(v).all()


def test_the_hard_scenario_is_small_shaped_and_led_by_a_root_metric() -> None:
    hard = FleetConfig(
        **{**CFG.__dict__, "hosts": 10, "anomalies_per_host_per_hour": 1.0, "difficulty": "hard"}
    )
    sim = FleetSimulator(hard)
    assert {lb.shape for lb in sim.labels} == {"shift", "ramp", "variance", "cycle"}
    assert all(lb.root == lb.metrics[0] for lb in sim.labels)
    assert FleetSimulator(CFG).labels[0].shape is None  # the default scenario is unchanged
    clean = FleetSimulator(FleetConfig(**{**hard.__dict__, "anomalies_per_host_per_hour": 0.0}))
    t = np.concatenate([c[0] for c in sim.ticks()])
    v = np.concatenate([c[1] for c in sim.ticks()])
    v0 = np.concatenate([c[1] for c in clean.ticks()])
    hosts = [h for _, h in sim.hosts]
    for lb in sim.labels:
        h = hosts.index(lb.host)
        lag = (lb.end_ms - lb.start_ms) // 4
        for k, metric in enumerate(lb.metrics):
            m = METRIC_NAMES.index(metric)
            onset = lb.start_ms + (lag if k else 0)
            delta = v[:, h, m] - v0[:, h, m]
            # nothing moves before its onset (a follower after the root), something after
            assert not delta[(t >= lb.start_ms - 600_000) & (t < onset)].any(), (lb, metric)
            moved = delta[(t >= onset) & (t < lb.end_ms)]
            assert np.abs(moved).max() > 0, (lb, metric)
            if lb.shape == "shift":  # 1.5-3 noise widths: small against the series' spread
                width = np.std(np.diff(v0[:, h, m])) / np.sqrt(2)
                assert np.median(np.abs(moved)) < 3.5 * width, (lb, metric)
