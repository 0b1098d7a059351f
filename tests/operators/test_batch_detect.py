"""The detect step scores the windows that close together across series in one batch
(issue 18): the same alerts, scores and states as scoring them one by one."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from dataflows.steps import (
    DetectLogic,
    DetectShard,
    ShardSnapshot,
    in_rounds,
    make_detect_builder,
    make_detect_step,
)
from novacron_ml.core.features import N_FEATURES, FeatureConfig, FeatureWindow, SeriesEvicted
from novacron_ml.core.schema import Alert
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.detection import series as series_module
from operators.detection.calibration import CalibrationConfig, RankCalibrator
from operators.detection.explain import FeatureBaseline
from operators.detection.feedback import Feedback, Verdict
from operators.detection.load import LoadConfig, LoadResidualDetector
from operators.detection.novelty import NoveltyConfig, NoveltyDetector, score_many
from operators.detection.robust_z import RobustZConfig, RobustZDetector
from operators.detection.series import (
    CombineConfig,
    WindowScore,
    detect_batch,
    detect_window,
    new_series_state,
    tiers_for,
)
from operators.features.engine import FeatureEngine
from tests.core.test_columnar import same_value


@pytest.fixture(scope="module")
def fleet_windows() -> list[FeatureWindow]:
    """Every window of 3 hosts x 10 metrics over 5 simulated hours with anomalies, in the
    order the feature engine closes them (the series' windows interleaved)."""
    sim = FleetSimulator(
        FleetConfig(hosts=3, clusters=1, duration_s=5 * 3600.0, anomalies_per_host_per_hour=1.5)
    )
    engine = FeatureEngine(FeatureConfig())
    events = list(sim.events())
    windows, late = engine.ingest(events, events[-1].ts_ms)
    assert not late
    return windows + engine.flush()


def _proxies_first(series: str) -> tuple[bool, str]:
    return series.rsplit("/", 1)[1] != LoadConfig().proxy, series


def _key(result: object) -> bytes:
    return pickle.dumps(result)


def test_a_batch_across_series_gives_what_one_by_one_gives(
    fleet_windows: list[FeatureWindow],
) -> None:
    config, combine = RobustZConfig(), CombineConfig()
    tiers = tiers_for(config, combine)
    # one by one, a series' load proxy window counts when scored before it: proxies first
    series = sorted({w.series for w in fleet_windows}, key=_proxies_first)
    alone = {s: new_series_state(s, config, combine, tiers) for s in series}
    together = {s: new_series_state(s, config, combine, tiers) for s in series}
    by_series: dict[str, list[FeatureWindow]] = {s: [] for s in series}
    for w in fleet_windows:
        by_series[w.series].append(w)
    n = min(len(ws) for ws in by_series.values())
    assert n > 250  # past every tier's warm-up (novelty: 100 shapes + 50 ranks)
    single, batched = [], []
    for i in range(n):
        step = [by_series[s][i] for s in series]  # each host's load proxies first, below
        if i % 97 == 5:  # a repeated window: a late_window dead letter in both
            step[3] = by_series[series[3]][i - 1]
        # one by one, a series finds its host's load proxy window in the states (the shard)
        single.append([detect_window(alone[w.series], w, tiers, alone.get) for w in step])
        batched.append(detect_batch([together[w.series] for w in step], step, tiers))
    alerts = [r for rs in batched for r in rs if isinstance(r, Alert)]
    assert len(alerts) >= 10 and {a.detector for a in alerts} >= {"novelty", "robust_z"}
    fitted = [s for s in series if together[s].load and together[s].load._filled]
    assert len(fitted) == len(series) - 3  # all but the proxies found theirs: the tier ran
    assert _key(batched) == _key(single)
    assert all(_key(alone[s]) == _key(together[s]) for s in series)


def test_the_step_over_a_shard_batch_equals_item_by_item(
    fleet_windows: list[FeatureWindow],
) -> None:
    """Windows, verdicts and evictions of many series in batches of mixed sizes (several
    windows of one series in a batch too) give the records item-by-item processing gives."""
    step = make_detect_step(RobustZConfig(), emit_scores=True)
    # window by window, a load proxy's window counts for the series scored after it: the
    # windows of each start with the host's proxy first (in a batch the order does not matter)
    items: list[FeatureWindow | Feedback | SeriesEvicted] = sorted(
        fleet_windows, key=lambda w: (w.start_ms, _proxies_first(w.series)[0])
    )
    rng = random.Random(7)
    first = next(w for w in fleet_windows if w.series.endswith("cpu_util"))
    items.insert(40, Feedback("x", Verdict.FALSE_POSITIVE, series=first.series, value=0.5))
    evicted = fleet_windows[-1].series
    items.insert(len(items) - 200, SeriesEvicted(evicted))
    one_by_one, shard = [], DetectShard()
    for item in items:
        one_by_one += step(shard, [item])
    batched, shard2, at = [], DetectShard(), 0
    while at < len(items):
        size = rng.choice((1, 7, 30, 64, 500))
        batched += step(shard2, items[at : at + size])
        at += size

    # the same records per series, in the same order (series interleave differently)
    def per_series(out: list[object]) -> dict[str, list[bytes]]:
        grouped: dict[str, list[bytes]] = {}
        for r in out:
            name = r.series if isinstance(r, WindowScore) else getattr(r, "key", b"").decode()
            if isinstance(r, Alert):
                name = f"{r.cluster}/{r.host}/{r.metric}"
            grouped.setdefault(name, []).append(_key(r))
        return grouped

    assert len(batched) == len(one_by_one)
    assert per_series(batched) == per_series(one_by_one)
    assert any(isinstance(r, Alert) for r in batched)
    assert evicted in shard.series and evicted in shard2.series  # it came back after eviction
    assert {s: _key(st) for s, st in shard.series.items()} == {
        s: _key(st) for s, st in shard2.series.items()
    }


def test_rounds_keep_each_series_in_order_and_hold_one_item_per_series() -> None:
    windows = [FeatureWindow(s, i, i + 1, None) for i, s in enumerate("aabcab")]  # type: ignore[arg-type]
    rounds = in_rounds(windows)
    assert [[w.series for w in r] for r in rounds] == [["a", "b", "c"], ["a", "b"], ["a"]]
    assert [[w.start_ms for w in r] for r in rounds] == [[0, 2, 3], [1, 5], [4]]


class WholeShapes:
    """The novelty tier's ring of whole shapes as it was before issue 18 (the reference)."""

    def __init__(self, longest: int, history: int) -> None:
        self.longest, self.history = longest, history
        self.shapes = np.zeros((longest, history))
        self.recent: list[float] = []
        self.pos = self.filled = 0

    def _next(self, value: float) -> list[float]:
        return [value] * self.longest if not self.recent else [*self.recent[1:], value]

    def learn(self, value: float) -> None:
        self.recent = self._next(value)
        self.shapes[:, self.pos] = self.recent
        self.pos = (self.pos + 1) % self.history
        self.filled = min(self.filled + 1, self.history)

    def skip(self, value: float) -> None:
        self.recent = self._next(value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_ring_of_means_rebuilds_every_shape_of_the_ring_of_whole_shapes(seed: int) -> None:
    """Through skips (held-out windows), repeated values, a first value of 0 and several
    wraps of a small ring, the shapes rebuilt from the means are the whole shapes, and the
    raw scores are the same."""
    rng = np.random.default_rng(seed)
    config = NoveltyConfig(history=50, min_history=10)
    det, ref = NoveltyDetector(config), WholeShapes(config.longest, config.history)
    levels = [0.0, 1.0, 1.0, 2.5]
    for i in range(400):
        value = float(rng.choice(levels) if rng.random() < 0.3 else rng.normal(5, 2))
        if i == 0:
            value = 0.0
        if rng.random() < 0.04:
            det.skip(value), ref.skip(value)
            continue
        if det._filled >= config.min_history:
            assert np.array_equal(det.past_shapes(), ref.shapes[:, : ref.filled])
        det.learn(value), ref.learn(value)
    assert np.array_equal(det.past_shapes(), ref.shapes[:, : ref.filled])
    assert len(det._except) < config.history // 2  # the ring of means carries most shapes
    # a snapshot in the whole-shapes layout resumes as the same shapes
    old = (ref.filled, det._hi, det._lo, ref.pos, list(ref.recent), ref.shapes.copy(), config)
    resumed = NoveltyDetector()
    resumed.__setstate__(old)
    assert np.array_equal(resumed.past_shapes(), det.past_shapes())
    assert resumed.score(3.0) == det.score(3.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_novelty_scores_equal_one_by_one_through_wraps_and_skips(seed: int) -> None:
    """`score_many` searches the rings of means directly (shifted sums, shapes kept whole
    written over their slots); its raw scores must be the floats `score` gives series by
    series, for series at every fill level, through wraps of a small ring and held-out
    windows, in chunks of several series."""
    rng = np.random.default_rng(seed)
    config = NoveltyConfig(history=40, min_history=8)
    dets = [NoveltyDetector(config) for _ in range(150)]  # > 2 chunks of 64
    levels = [0.0, 1.0, 1.0, 2.5]
    compared = 0
    for step in range(160):
        values = [
            float(rng.choice(levels) if rng.random() < 0.3 else rng.normal(5, 2 + i % 3))
            for i in range(len(dets))
        ]
        batched = score_many(dets, values)
        alone = [d.score(v) for d, v in zip(dets, values, strict=True)]
        assert batched == alone, step
        compared += sum(s is not None for s in alone)
        for i, (d, v) in enumerate(zip(dets, values, strict=True)):
            if i % 5 == step % 5 and step < i:  # series start at different times
                continue
            if rng.random() < 0.05:
                d.skip(v)
            else:
                d.learn(v)
    assert compared > 10_000
    assert any(d._filled == config.history and d._except for d in dets)


def test_baselines_learned_together_are_the_baselines_learned_one_by_one() -> None:
    """`FeatureBaseline.learn_many` (the quiet windows of a detect batch) gives the floats
    `learn` gives series by series: new series (first window copied), young ones (1/n
    weights) and old ones (alpha), with different alphas in one batch."""
    rng = np.random.default_rng(3)
    together = [FeatureBaseline(alpha=0.02 if i % 3 else 0.1) for i in range(40)]
    alone = [FeatureBaseline(alpha=0.02 if i % 3 else 0.1) for i in range(40)]

    def floats(baselines: list[FeatureBaseline]) -> list[tuple[object, ...]]:
        return [(b.alpha, b.n, b.mean.tobytes(), b.var.tobytes()) for b in baselines]

    for step in range(120):
        rows = [i for i in range(40) if i <= step and rng.random() < 0.8]
        features = np.array([rng.normal(i, 1 + i % 4, N_FEATURES) for i in rows])
        FeatureBaseline.learn_many([together[i] for i in rows], features)
        for i, x in zip(rows, features, strict=True):
            alone[i].learn(x.copy())
        if step % 10 == 0:  # each series young (n < 1 / alpha), then old
            assert floats(alone) == floats(together), step
    assert min(b.n for b in together) > 50
    assert floats(alone) == floats(together)


def test_novelty_ranks_left_out_change_no_decision_and_no_alert(
    fleet_windows: list[FeatureWindow], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The detect step ranks a window's novelty only where the ranks can reach the decision
    or an alert (`_ranks_needed`); ranking every window must give the same alerts (with
    their tiers' scores), the same per-window decisions and the same states but for the
    last window's tier scores."""
    step = make_detect_step(RobustZConfig(), emit_scores=True)
    lean_shard, full_shard = DetectShard(), DetectShard()
    lean = step(lean_shard, fleet_windows)
    with monkeypatch.context() as patch:
        patch.setattr(series_module, "_ranks_needed", lambda *args: True)
        full = step(full_shard, fleet_windows)
    alerts = [r for r in lean if isinstance(r, Alert)]
    assert len(alerts) >= 10 and sum("novelty" in a.tiers for a in alerts) >= 5
    assert [_key(r) for r in lean] == [_key(r) for r in full]
    left_out = 0
    for name, state in lean_shard.series.items():
        other = full_shard.series[name]
        left_out += "novelty" not in (state.tier_scores or {})
        state.tier_scores = other.tier_scores = None
        assert _key(state) == _key(other)
    assert left_out > len(lean_shard.series) // 2  # most windows need no ranks


def test_novelty_is_ranked_on_every_window_while_its_calibrators_warm_up(
    fleet_windows: list[FeatureWindow],
) -> None:
    """Until every novelty scale's calibrator is ready, robust z decides and its alerts carry
    the tiers' scores, so every window's novelty is ranked then, gate or not; once they are
    ready, most windows' are not (`_ranks_needed`)."""
    config, combine = RobustZConfig(), CombineConfig()
    tiers = tiers_for(config, combine)
    name = fleet_windows[0].series
    state = new_series_state(name, config, combine, tiers)
    warming = ready_unranked = 0
    for window in (w for w in fleet_windows if w.series == name):
        cals = state.calibrators or {}
        was_ready = bool(cals) and all(c.ready for c in cals.values())
        detect_window(state, window, tiers)
        scores = state.tier_scores or {}
        if state.novelty is None or not cals:
            continue
        if not was_ready:
            warming += 1
            assert "novelty" in scores, window.start_ms
        else:
            ready_unranked += "novelty" not in scores
    assert warming >= 20 and ready_unranked >= 20


def test_a_shard_restored_from_its_snapshot_decides_what_the_running_shard_decides(
    fleet_windows: list[FeatureWindow],
) -> None:
    """The shard's snapshot taken every few hundred items and resumed (pickled as columns,
    `DetectShard.__getstate__`, or as the recovery snapshot, `ShardSnapshot`): the same
    records and the same states as the shard that never stopped, with episodes open, alerts
    held and verdicts pending at some snapshots."""
    step = make_detect_step(RobustZConfig(), emit_scores=True)
    # window by window, a load proxy's window counts for the series scored after it: the
    # windows of each start with the host's proxy first (in a batch the order does not matter)
    items: list[FeatureWindow | Feedback | SeriesEvicted] = sorted(
        fleet_windows, key=lambda w: (w.start_ms, _proxies_first(w.series)[0])
    )
    items.insert(30, Feedback("y", Verdict.TRUE_POSITIVE, series="c0/nowhere/cpu_util"))
    running, resumed = DetectShard(), DetectShard()
    out_running: list[object] = []
    out_resumed: list[object] = []
    seen = {"episode": 0, "held": 0, "pending": 0}
    for at in range(0, len(items), 331):
        batch = items[at : at + 331]
        out_running += step(running, batch)
        out_resumed += step(resumed, batch)
        states = resumed.series.values()
        seen["episode"] += any(s.episode is not None for s in states)
        seen["held"] += any(s.held for s in states)
        seen["pending"] += bool(resumed.pending)
        if at % 2:  # the shard pickled itself
            resumed = pickle.loads(pickle.dumps(resumed, protocol=pickle.HIGHEST_PROTOCOL))
        else:  # as a recovery snapshot: taken, pickled by Bytewax, resumed by the builder
            snapshot = DetectLogic(step, resumed, 3600.0).snapshot()
            assert isinstance(snapshot, ShardSnapshot)
            resumed = make_detect_builder(step)(pickle.loads(pickle.dumps(snapshot))).state
    assert min(seen.values()) > 0, seen

    assert out_resumed == out_running  # by value: object sharing, and so pickled bytes, differ
    assert sum(isinstance(r, Alert) for r in out_running) >= 10
    assert list(resumed.series) == list(running.series)
    assert all(same_value(resumed.series[s], running.series[s]) for s in running.series)
    assert resumed.pending.keys() == running.pending.keys()


def test_a_detect_shard_pickled_state_by_state_still_resumes(
    fleet_windows: list[FeatureWindow],
) -> None:
    """A snapshot written before the columns (stop 36 and earlier: the dataclass's fields,
    pickled state by state) loads into the same shard."""
    step = make_detect_step(RobustZConfig())
    shard = DetectShard()
    step(shard, fleet_windows[:600])
    old = DetectShard.__new__(DetectShard)
    old.__setstate__({"series": pickle.loads(_key(shard.series)), "pending": {}})
    assert list(old.series) == list(shard.series)
    assert step(old, fleet_windows[600:900]) == step(shard, fleet_windows[600:900])


def test_a_recovery_snapshot_keeps_the_shard_as_it_was_when_taken(
    fleet_windows: list[FeatureWindow],
) -> None:
    """What the shard does after its snapshot was taken (and before Bytewax writes it)
    never reaches the snapshot."""
    step = make_detect_step(RobustZConfig())
    shard = DetectShard()
    step(shard, fleet_windows[:3000])
    then = pickle.dumps(shard.series)
    snapshot = DetectLogic(step, shard, 3600.0).snapshot()
    assert isinstance(snapshot, ShardSnapshot)
    assert step(shard, fleet_windows[3000:3600])  # every series learns on
    for state in shard.series.values():  # and containers change in place
        assert state.novelty is not None and state.calibrators is not None
        state.novelty._except[-1] = (0.0,)
        state.calibrators["novelty@1"]._raw[:] = 0.0
        state.held = state.held or {}
        state.held.clear()
    restored = snapshot.restore().series
    assert not same_value(restored, shard.series)
    assert same_value(restored, pickle.loads(then))


def _restored(shard: DetectShard, step: object, settings: object = None) -> DetectShard:
    """The shard as a recovery snapshot resumes it: taken, pickled, built by the builder."""
    snapshot = DetectLogic(step, shard, 3600.0).snapshot()
    builder = make_detect_builder(step, settings=settings)
    return builder(pickle.loads(pickle.dumps(snapshot))).state


def test_a_restored_shard_takes_the_settings_of_the_run_that_resumes_it(
    fleet_windows: list[FeatureWindow],
) -> None:
    """A setting changed across a restart reaches the series the snapshot restores, not only
    the series created after it: resumed under settings that can fire nothing, the shard
    fires nothing, where the snapshot's own settings still fire (before stop 44 a restored
    series kept the settings it was created with until it went idle)."""
    shard = DetectShard()
    make_detect_step(RobustZConfig())(shard, fleet_windows[:3000])
    mute_z = RobustZConfig(z_threshold=1e6, history_windows=30)
    mute = CombineConfig(min_deviation=1e6, spread_threshold=None, load_threshold=None)
    step = make_detect_step(mute_z, combine=mute)
    rest = fleet_windows[3000:]

    def firing(shard: DetectShard) -> int:
        return sum(isinstance(r, Alert) and r.status == "firing" for r in step(shard, rest))

    assert firing(_restored(shard, step)) >= 5  # the snapshot's settings, as before
    resumed = _restored(shard, step, (tiers_for(mute_z, mute), mute))
    for state in resumed.series.values():
        assert state.detector.config is mute_z and state.combine is mute
        assert state.spread is None and state.load is None
        assert state.detector._filled == 30  # the newest windows kept
    assert firing(resumed) == 0


def test_a_restored_shard_under_its_own_settings_is_left_as_it_was(
    fleet_windows: list[FeatureWindow],
) -> None:
    step = make_detect_step(RobustZConfig())
    shard = DetectShard()
    step(shard, fleet_windows[:2000])
    settings = (tiers_for(RobustZConfig(), CombineConfig()), CombineConfig())
    resumed = _restored(shard, step, settings)
    assert not resumed.adopt(*settings)
    assert all(same_value(resumed.series[s], shard.series[s]) for s in shard.series)
    assert step(resumed, fleet_windows[2000:2600]) == step(shard, fleet_windows[2000:2600])


def test_a_changed_history_length_keeps_the_newest_windows() -> None:
    """Shortened or lengthened across a restart, a ring holds what a fresh one would after
    learning the newest values in order: robust z, a rank calibrator and the load tier."""
    rng = np.random.default_rng(3)
    values = rng.normal(10.0, 1.0, 75)  # a ring of 60 wrapped around
    proxy = rng.normal(0.5, 0.1, 75)
    for size in (30, 120):
        det = RobustZDetector(RobustZConfig())
        for v in values:
            det.learn(float(v), False)
        det.adopt(RobustZConfig(history_windows=size), 1)
        fresh = RobustZDetector(RobustZConfig(history_windows=size), 1)
        for v in values[-min(size, 60) :]:
            fresh.learn(float(v), False)
        assert det.score(14.0) == fresh.score(14.0)
        assert same_value(det, fresh)

        cal = RankCalibrator(CalibrationConfig(history=60, min_ranked=10))
        fresh_cal = RankCalibrator(CalibrationConfig(history=size, min_ranked=10))
        for v in values:
            cal.remember(float(v))
        for v in values[-min(size, 60) :]:
            fresh_cal.remember(float(v))
        cal.adopt(fresh_cal.config)
        assert same_value(cal, fresh_cal)

        load = LoadResidualDetector(LoadConfig(), 1, "c0/h0", "throughput_mbps")
        fresh_load = LoadResidualDetector(
            LoadConfig(history_windows=size), 1, "c0/h0", "throughput_mbps"
        )
        for x, y in zip(proxy, values, strict=True):
            load.learn(float(x), float(y), False)
        for x, y in zip(proxy[-min(size, 60) :], values[-min(size, 60) :], strict=True):
            fresh_load.learn(float(x), float(y), False)
        assert load.adopt(fresh_load.config, 1)
        assert same_value(load, fresh_load)
    assert not load.adopt(LoadConfig(proxy="net_util"), 1)  # fitted on another series


def test_novelty_starts_over_only_where_its_shapes_no_longer_fit(
    fleet_windows: list[FeatureWindow],
) -> None:
    step = make_detect_step(RobustZConfig())
    shard = DetectShard()
    step(shard, fleet_windows[:6000])
    key = next(iter(shard.series))
    before = shard.series[key].novelty
    assert before is not None and "novelty@1" in (shard.series[key].calibrators or {})
    tiers = tiers_for(RobustZConfig(), CombineConfig())
    lower = CombineConfig(novelty=NoveltyConfig(min_history=50))  # the shapes still fit
    assert shard.adopt(tiers, lower)["novelty"] == len(shard.series)
    assert shard.series[key].novelty is before
    longer = CombineConfig(novelty=NoveltyConfig(history=2000))  # a ring of another length
    shard.adopt(tiers, longer)
    state = shard.series[key]
    assert state.novelty is not before and state.novelty is not None
    assert state.novelty._filled == 0
    assert not any(name.startswith("novelty@") for name in state.calibrators or {})
