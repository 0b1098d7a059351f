"""Detection tiers inside the per-series step: novelty, rank calibration, the combined
probability with its cooldown, and explanations in the alert."""

from __future__ import annotations

import copy
import pickle

import msgspec
import numpy as np
import pytest
from pydantic import ValidationError

from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from novacron_ml.core.schema import Alert, parse_rfc3339_ms
from novacron_ml.core.settings import DetectorSettings
from operators.detection.calibration import CalibrationConfig, RankCalibrator
from operators.detection.feedback import Feedback, Verdict
from operators.detection.novelty import NoveltyConfig, NoveltyDetector
from operators.detection.river import RiverConfig
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import (
    HELD_ALERTS,
    CombineConfig,
    WindowScore,
    apply_series_feedback,
    decide,
    detect_window,
    fire_level,
    new_series_state,
)

SERIES = "c1/h1/latency_p99_ms"


def test_rank_calibrator_is_the_share_of_recent_raw_scores_below() -> None:
    cal = RankCalibrator(CalibrationConfig(history=100, min_ranked=10))
    assert [cal.calibrate(float(v)) for v in range(10)] == [0.0] * 10  # not enough history
    assert cal.calibrate(4.5) == pytest.approx(5 / 10)
    assert cal.calibrate(100.0) == 1.0
    assert cal.calibrate(-1.0) == 0.0
    for v in range(200):  # the ring forgets: only the last 100 raw scores count
        cal.calibrate(1000.0 + v)
    assert cal.calibrate(1149.5) == pytest.approx(0.5)  # 1100..1199 remain


def test_novelty_finds_the_shape_never_seen_and_not_the_repeated_one() -> None:
    det = NoveltyDetector(NoveltyConfig(scales=(1, 2, 4), history=500, min_history=20))
    wave = [10.0, 20.0, 30.0, 20.0]
    raws = [det.observe(v) for v in wave * 60]
    assert raws[:20] == [None] * 20
    seen = [r for r in raws[40:] if r is not None]
    assert np.max(seen) == pytest.approx(0.0)  # the pattern repeats exactly, at every scale
    # a value inside the range, in a place the pattern never has it: each value was seen
    # before (scale 1 finds it), but never after 30 (scales 2 and 4 do not)
    new = det.observe(25.0)
    assert new is not None and new[0] == pytest.approx(5 / 20 / 1)
    assert new[1] > 0.05 and new[2] > 0.05
    spike = det.observe(50.0)  # a new extreme is new at every scale
    assert spike is not None and min(spike) > 0.3


def test_novelty_never_compares_a_shape_with_itself_at_any_scale() -> None:
    det = NoveltyDetector(NoveltyConfig(scales=(1, 3), history=50, min_history=5))
    for v in range(10):
        det.observe(float(v))  # a ramp: every value and shape is new
    raws = det.observe(10.0)
    assert raws is not None
    # scale 1: nearest earlier value 9 (1 away); scale 3: (8, 9, 10) vs the nearest shape that
    # does not overlap it, (5, 6, 7), 3 away; the range is 10
    assert raws == pytest.approx((1 / 10, 3 / 10))


def test_novelty_resumes_an_old_snapshot_by_starting_over() -> None:
    det = NoveltyDetector(NoveltyConfig(history=300, min_history=20))
    old_layout = (7, 1.0, 0.0, [], 7, [0.0] * 4, np.zeros((300, 4)), det.config)
    det.__setstate__(old_layout)  # the pre-multi-scale layout had a pending queue
    assert det.config.history == 300 and det.config.scales == (1, 2, 4)
    assert [det.observe(1.0) for _ in range(20)] == [None] * 20  # relearning from scratch


def test_cooldown_holds_the_probability_but_lets_a_bigger_event_through() -> None:
    state = new_series_state(
        SERIES,
        RobustZConfig(),
        CombineConfig(fire_probability=0.9, cooldown_windows=3, rearm_after_windows=50),
    )
    seq = [
        (0.5, 0.1),
        (0.95, 0.1),
        (0.99, 0.2),
        (0.9, 0.35),
        (0.999, 0.1),
        (0.2, 0.0),
        (0.2, 0.0),
        (0.95, 0.2),
        (0.95, 0.2),
    ]
    out = [decide(state, {"novelty": p}, 10.0, size, True, 6.0).held_probability for p, size in seq]
    # fires at 0.95 (size 0.1); 0.99 is only 2x as far (held); 0.9 at 3.5x passes and
    # restarts; 0.999 at 0.1 held; the cooldown ends after 3 windows; fires again
    assert out == [0.5, 0.95, 0.0, 0.9, 0.0, 0.0, 0.0, 0.95, 0.0]
    assert decide(state, {"robust_z": 1.0}, 10.0, 1.0, True, 6.0).probability == 0.0  # not combined


def test_decision_gate_episode_and_rearm() -> None:
    combine = CombineConfig(
        fire_probability=0.9, cooldown_windows=100, resolve_after_windows=2, rearm_after_windows=3
    )
    state = new_series_state(SERIES, RobustZConfig(), combine)
    # a new shape inside the noise (2 noise widths) is no anomaly
    quiet = decide(state, {"novelty": 1.0}, 2.0, 0.5, True, 6.0)
    assert quiet.probability == 0.0 and not quiet.alerting
    steps = [(1.0, 8.0), (0.95, 8.0), (0.5, 8.0), (0.5, 8.0), (0.5, 1.0), (0.5, 1.0), (0.5, 1.0)]
    out = [decide(state, {"novelty": p}, bad, 0.5, True, 6.0) for p, bad in steps]
    # opens, continues at the firing level, closes after 2 windows below it
    assert [d.alerting for d in out] == [True, True, False, False, False, False, False]
    assert [d.fired for d in out] == [True] + [False] * 6
    assert state.open_for == 0 and state.cooldown == 0  # re-armed 3 windows after closing
    again = decide(state, {"novelty": 0.95}, 8.0, 0.5, True, 6.0)
    assert again.fired and again.alerting and again.tier == "novelty"


def test_robust_z_decides_while_the_combined_tiers_warm_up() -> None:
    state = new_series_state(SERIES, RobustZConfig(), CombineConfig())
    below = decide(state, {"novelty": 0.0}, 5.9, 0.0, False, 6.0)
    assert not below.alerting and below.probability < state.combine.fire_probability
    past = decide(state, {"novelty": 0.0}, 12.0, 0.0, False, 6.0)
    assert past.fired and past.tier == "robust_z"
    assert past.probability == pytest.approx(1 - 0.015 * 6 / 12)


def test_an_episode_stays_out_of_the_novelty_history_so_a_recurrence_still_fires() -> None:
    def run(hold: int) -> list[int]:
        state = new_series_state(
            SERIES,
            RobustZConfig(min_history=5, history_windows=60),
            CombineConfig(
                hold_windows=hold,
                river=None,
                novelty=NoveltyConfig(min_history=20),
                calibration=CalibrationConfig(min_ranked=20),
            ),
        )
        rng = np.random.default_rng(4)
        fired = []
        for i in range(400):
            anomaly = i in range(200, 205) or i in range(320, 325)  # the same fault twice
            mean = (300.0 if anomaly else 100.0) + rng.normal(0, 2)
            if isinstance(detect_window(state, window(i, mean, mean * 1.5)), Alert):
                fired.append(i)
        return fired

    held = run(10)
    assert any(200 <= i < 205 for i in held) and any(320 <= i < 325 for i in held)
    assert all(200 <= i < 205 or 320 <= i < 325 for i in held)  # nothing else
    # learning the first episode's shapes and ranks hides the recurrence
    assert not any(320 <= i < 325 for i in run(0))


def window(i: int, mean: float, p99: float) -> FeatureWindow:
    f = np.zeros(N_FEATURES)
    f[FEATURE_INDEX["count"]] = 12
    f[FEATURE_INDEX["mean"]] = mean
    f[FEATURE_INDEX["p99"]] = p99
    f[FEATURE_INDEX["max"]] = p99 * 1.1
    return FeatureWindow(SERIES, i * 60_000, (i + 1) * 60_000, f)


def test_alert_carries_probability_tier_scores_and_explanation() -> None:
    state = new_series_state(
        SERIES,
        RobustZConfig(min_history=5, history_windows=200),
        CombineConfig(
            novelty=NoveltyConfig(min_history=20), cooldown_windows=0, river=RiverConfig()
        ),
    )
    rng = np.random.default_rng(1)
    for i in range(150):
        mean = 100.0 + rng.normal(0, 2)
        assert detect_window(state, window(i, mean, mean * 1.5 + rng.normal(0, 1))) is None
    alert = detect_window(state, window(150, 400.0, 2000.0))
    assert isinstance(alert, Alert)
    assert alert.tiers is not None
    assert set(alert.tiers) == {"robust_z", "novelty", "river", "spread"}
    assert alert.tiers["novelty"] == 1.0 and alert.probability == 1.0
    assert alert.explanation is not None and len(alert.explanation) == 3
    top = alert.explanation[0]
    assert top.feature in {"p99", "max", "mean"} and top.z > 10
    assert top.value == pytest.approx(2000.0 if top.feature == "p99" else top.value)
    decoded = msgspec.json.decode(msgspec.json.encode(alert), type=Alert)
    assert decoded.explanation == alert.explanation  # the alert JSON round-trips
    # the anomalous window stayed out of the baseline: the same spike is explained the same way
    again = detect_window(state, window(151, 400.0, 2000.0))
    assert isinstance(again, Alert) and again.explanation is not None
    assert again.explanation[0].z == pytest.approx(top.z)


def test_series_state_survives_a_recovery_snapshot() -> None:
    state = new_series_state(SERIES, RobustZConfig(), CombineConfig())
    for i in range(300):
        detect_window(state, window(i, 100.0 + i % 7, 150.0))
    copy = pickle.loads(pickle.dumps(state))
    a = [detect_window(state, window(300 + i, 100.0 + i % 5, 150.0)) for i in range(20)]
    b = [detect_window(copy, window(300 + i, 100.0 + i % 5, 150.0)) for i in range(20)]
    assert a == b and state.tier_scores == copy.tier_scores


def test_detect_logic_snapshots_its_shard_and_resumes_from_every_form() -> None:
    from dataflows.steps import ShardSnapshot, make_detect_builder, make_detect_step

    step = make_detect_step(RobustZConfig(min_history=5), emit_scores=True)
    build = make_detect_builder(step)
    logic = build(None)
    for i in range(300):
        logic.on_batch([window(i, 100.0 + i % 7, 150.0)])
    snap = logic.snapshot()
    # one bytes object and a few stacked rings, not a deep copy of every state
    assert isinstance(snap, ShardSnapshot) and isinstance(snap.state, bytes)
    resumed = build(pickle.loads(pickle.dumps(snap)))  # as Bytewax writes and reads it
    from_bytes = build(pickle.dumps(snap.restore()))  # a pickled shard (before stop 37)
    copied = build(copy.deepcopy(snap.restore()))
    for i in range(300, 320):
        w = window(i, 100.0 + i % 5, 400.0 if i == 310 else 150.0)
        out, discard = logic.on_batch([w])
        assert not discard
        assert out == resumed.on_batch([w])[0] == from_bytes.on_batch([w])[0]
        assert out == copied.on_batch([w])[0]
        assert out and isinstance(out[-1], WindowScore)
    again = resumed.snapshot()
    assert again is not None
    state, restored = logic.state.series[SERIES], again.restore().series[SERIES]
    assert restored.tier_scores == state.tier_scores and restored.last_score == state.last_score


def test_settings_reject_an_unknown_tier() -> None:
    with pytest.raises(ValidationError, match="unknown tier"):
        DetectorSettings(probability_tiers=["novelty", "magic"])
    with pytest.raises(ValidationError, match=r"set detector\.river=true"):
        DetectorSettings(probability_tiers=["novelty", "river"])  # River is off by default
    with pytest.raises(ValidationError, match=r"set detector\.iforest_models"):
        DetectorSettings(probability_tiers=["iforest"])


def test_a_tier_outside_the_decision_has_no_state_and_robust_z_alone_still_decides() -> None:
    config = RobustZConfig(min_history=5, history_windows=60)
    only_z = new_series_state(SERIES, config, CombineConfig(tiers=("robust_z",), river=None))
    default = new_series_state(SERIES, config, CombineConfig(river=None))
    assert only_z.novelty is None and default.novelty is not None
    assert len(pickle.dumps(only_z)) < len(pickle.dumps(default)) - 10_000  # no shape ring
    alerts = []
    # a quiet series, then a jump so far past the gate that robust z's own score (not ranked:
    # bad / (bad + threshold)) reaches the firing level
    for i in range(300):
        out = detect_window(only_z, window(i, 100.0 + (i % 7) + (1e5 if i == 250 else 0), 1.0))
        if isinstance(out, Alert):
            alerts.append(out)
    assert [parse_rfc3339_ms(a.window_start) // 60_000 for a in alerts] == [250]
    assert alerts[0].detector == "robust_z" and "novelty" not in (alerts[0].tiers or {})


def test_river_tier_scores_the_outlier_and_keeps_it_out_of_learning() -> None:
    state = new_series_state(
        SERIES,
        RobustZConfig(min_history=5, history_windows=200),
        CombineConfig(river=RiverConfig()),
    )
    assert state.river is not None
    rng = np.random.default_rng(2)
    for i in range(400):
        mean = 100.0 + rng.normal(0, 2)
        detect_window(state, window(i, mean, mean * 1.5 + rng.normal(0, 1)))
    before = pickle.dumps(state.river)
    alert = detect_window(state, window(400, 400.0, 2000.0))
    assert isinstance(alert, Alert) and alert.tiers is not None
    assert alert.tiers["river"] >= 0.9  # above most of the series' recent River scores
    assert pickle.dumps(state.river) == before  # not learned: AnomalyFilter semantics
    for i in range(401, 411):  # once the shape is normal again, windows are learned
        detect_window(state, window(i, 100.0, 150.0))
    assert pickle.dumps(state.river) != before
    off = new_series_state(SERIES, RobustZConfig(), CombineConfig())
    assert off.river is None  # off by default


def test_operator_feedback_reaches_the_river_tier_baseline_and_firing_level() -> None:
    state = new_series_state(
        SERIES,
        RobustZConfig(min_history=5, history_windows=200),
        CombineConfig(river=RiverConfig()),
    )
    rng = np.random.default_rng(3)
    for i in range(400):
        mean = 100.0 + rng.normal(0, 2)
        detect_window(state, window(i, mean, mean * 1.5 + rng.normal(0, 1)))
    river, baseline, fire = (
        pickle.dumps(state.river),
        pickle.dumps(state.baseline),
        fire_level(state),
    )
    first = detect_window(state, window(400, 400.0, 2000.0))
    assert isinstance(first, Alert) and state.held is not None and first.alert_id in state.held
    # a true positive: the window is dropped, never learned; the threshold stays as configured
    tp = Feedback(first.alert_id, Verdict.TRUE_POSITIVE, SERIES)
    assert apply_series_feedback(state, tp) and first.alert_id not in state.held
    assert pickle.dumps(state.river) == river and pickle.dumps(state.baseline) == baseline
    assert fire_level(state) == fire
    # a false positive: River and the explanation baseline learn the held window, robust z
    # learns its mean (the verdict carries no value), and the series fires less readily
    second = detect_window(state, window(401, 400.0, 2000.0))
    assert isinstance(second, Alert)
    assert pickle.dumps(state.river) == river  # still held out until the verdict
    fp = Feedback(second.alert_id, Verdict.FALSE_POSITIVE, SERIES)
    assert apply_series_feedback(state, fp)
    assert pickle.dumps(state.river) != river and pickle.dumps(state.baseline) != baseline
    assert state.detector.threshold_scale == pytest.approx(1.25)
    assert fire_level(state) == pytest.approx(1 - (1 - fire) / 1.25)
    # a verdict on a window no longer held still moves the threshold, and says so
    assert not apply_series_feedback(state, fp)
    assert state.detector.threshold_scale == pytest.approx(1.25**2)
    for i in range(402, 402 + 2 * HELD_ALERTS):  # only the last HELD_ALERTS alerts are kept
        detect_window(state, window(i, 400.0 * (1.1 + i - 402), 2000.0 * (1 + i - 402)))
    assert len(state.held) <= HELD_ALERTS


def test_the_spread_tier_fires_on_a_variance_change_the_mean_does_not_show() -> None:
    def run(spread: float | None) -> list[Alert]:
        state = new_series_state(
            SERIES,
            RobustZConfig(min_history=5, history_windows=60),
            CombineConfig(spread_threshold=spread, river=None),
        )
        rng = np.random.default_rng(5)
        alerts = []
        for i in range(300):
            f = np.zeros(N_FEATURES)
            f[FEATURE_INDEX["count"]] = 12
            f[FEATURE_INDEX["mean"]] = 100.0 + rng.normal(0, 0.3)  # the mean never moves
            noisy = 250 <= i < 256
            f[FEATURE_INDEX["std"]] = (4.0 if noisy else 1.0) * (1 + rng.normal(0, 0.1))
            out = detect_window(state, FeatureWindow(SERIES, i * 60_000, (i + 1) * 60_000, f))
            if isinstance(out, Alert):
                alerts.append(out)
        return alerts

    alerts = run(8.0)
    assert alerts and all(
        250 * 60_000 <= parse_rfc3339_ms(a.window_start) < 256 * 60_000 for a in alerts
    )
    assert alerts[0].detector == "spread" and alerts[0].tiers and alerts[0].tiers["spread"] > 0.5
    assert run(None) == []  # the mean-based tiers cannot see it


def test_verdicts_for_a_series_without_state_wait_small_and_expire_to_the_dlq() -> None:
    from bytewax.operators import StatefulBatchLogic

    from dataflows.steps import make_detect_builder, make_detect_step
    from novacron_ml.core.deadletter import Reason
    from operators.detection.feedback import MAX_PENDING

    build = make_detect_builder(make_detect_step(RobustZConfig(min_history=5)), 600.0)
    fp = Feedback(alert_id="a1", verdict=Verdict.FALSE_POSITIVE, series=SERIES, value=None)
    # Replayed before the series' first window: kept (bytes, not a series' state), applied then.
    logic = build(None)
    out, discard = logic.on_batch([fp])
    assert out == [] and discard is StatefulBatchLogic.RETAIN
    assert set(logic.state.pending) == {SERIES} and not logic.state.series
    assert len(pickle.dumps(logic.snapshot())) < 1024
    due = logic.notify_at()
    since = logic.state.pending[SERIES].since_s
    assert due is not None and due.timestamp() - since == pytest.approx(600, abs=1e-3)
    assert logic.on_notify() == ([], StatefulBatchLogic.RETAIN)  # not due yet: still waits
    logic.on_batch([window(0, 100.0, 150.0)])
    assert not logic.state.pending
    assert logic.state.series[SERIES].detector.threshold_scale == pytest.approx(1.25)  # applied
    assert logic.notify_at() is None
    # A series that never comes: its verdicts leave as dead letters, at the TTL or at the end.
    for end in ("on_notify", "on_eof"):
        logic = build(None)
        logic.on_batch([fp])
        if end == "on_notify":
            logic.state.pending[SERIES].since_s -= 600  # the TTL has passed
        letters, discard = getattr(logic, end)()
        assert discard is StatefulBatchLogic.DISCARD
        assert [d.reason for d in letters] == [Reason.UNKNOWN_SERIES]
        assert msgspec.json.decode(letters[0].payload, type=Feedback) == fp
    # At most MAX_PENDING wait; the next is a dead letter at once.
    logic = build(None)
    for _ in range(MAX_PENDING):
        assert logic.on_batch([fp])[0] == []
    (letter,), _ = logic.on_batch([fp])
    assert letter.reason is Reason.UNKNOWN_SERIES and "already wait" in letter.detail
