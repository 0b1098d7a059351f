"""Per-series detection step: a window's features in, an alert or a dead letter out.

This is the stateful logic behind the flow's `detect` step, kept free of Bytewax so it can be
tested alone. Its state (`SeriesState`) is what goes into Bytewax recovery snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import msgspec
import numpy as np

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import Alert, rfc3339_ms, split_series_key
from operators.alerting.alerts import window_alert
from operators.alerting.episodes import Episode
from operators.detection.base import learn_one, score_one
from operators.detection.calibration import CalibrationConfig, RankCalibrator
from operators.detection.explain import FeatureBaseline
from operators.detection.feedback import Feedback, Verdict, apply_feedback
from operators.detection.novelty import NoveltyConfig, NoveltyDetector, NoveltyTier
from operators.detection.river import RiverConfig, RiverModel, RiverTier
from operators.detection.robust_z import RobustZConfig, RobustZDetector, RobustZTier, severity_for

DETECTOR_NAME = "robust_z"
HELD_ALERTS = 16
"""Alerted windows per series kept for operator feedback (their features and River inputs)."""


@dataclass(frozen=True)
class CombineConfig:
    """How the tiers' calibrated scores become one anomaly probability per window."""

    tiers: tuple[str, ...] = ("novelty",)
    """Tiers whose calibrated scores enter the probability (their maximum)."""
    fire_probability: float = 0.985
    """A probability at or above this starts a cooldown."""
    cooldown_windows: int = 100
    """Windows after a firing whose probability is held at 0 (one alert per episode)."""
    bigger_event: float = 3.0
    """During a cooldown, a window whose novelty distance is at least this many times the one
    that started it (and whose probability reaches the firing level) passes and restarts the
    cooldown: a bigger event is never hidden behind a smaller one."""
    min_novelty: float = 0.05
    """The novelty tier scores 0 unless the window's shape is at least this fraction of the
    series' range from every earlier shape at some scale (tiny moves are never novel)."""
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    river: RiverConfig | None = field(default_factory=RiverConfig)
    """None: no River tier."""


@dataclass
class SeriesState:
    detector: RobustZDetector
    last_window_start_ms: int | None = None
    last_score: float = 0.0
    """Anomaly probability in [0, 1] of the last scored window (0 while warming up)."""
    novelty: NoveltyDetector | None = None
    combine: CombineConfig = field(default_factory=CombineConfig)
    cooldown: int = 0
    """Windows left in the current cooldown."""
    fired_size: float = 0.0
    """The novelty distance (largest over scales) of the window that started the cooldown."""
    tier_scores: dict[str, float] | None = None
    """Each tier's calibrated score in [0, 1] for the last window."""
    calibrators: dict[str, RankCalibrator] | None = None
    """Per tier with a raw score: the series' recent raw scores."""
    baseline: FeatureBaseline | None = None
    """The series' normal feature vector, for alert explanations."""
    river: RiverModel | None = None
    held: dict[str, HeldWindow] | None = None
    """The last `HELD_ALERTS` alerted windows by alert_id, kept out of learning until an
    operator calls one a false positive (then learned) or a true positive (then dropped)."""
    episode: Episode | None = None
    """The series' open alert episode (`operators.alerting.episodes`)."""


@dataclass
class HeldWindow:
    mean: float
    features: np.ndarray
    river_x: dict[str, float] | None


class WindowScore(msgspec.Struct, frozen=True):
    """Every scored window's anomaly score (for backtests such as NAB, not published)."""

    series: str
    start_ms: int
    end_ms: int
    anomaly_score: float


def anomaly_score(bad: float, threshold: float) -> float:
    """Map how far a robust z is in the bad direction (`Score.bad`) to [0, 1): monotone, 0.5
    at the threshold."""
    return bad / (bad + threshold)


@dataclass(frozen=True)
class Tiers:
    """The per-series step's detectors (`operators.detection.base.Detector`), built once per
    configuration: robust z decides alerts, novelty (and River when on) enter the probability
    with every raw score scored upstream in batches (the Isolation Forest's)."""

    robust_z: RobustZTier
    novelty: NoveltyTier
    river: RiverTier | None


@lru_cache(maxsize=32)
def tiers_for(
    config: RobustZConfig, combine: CombineConfig, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> Tiers:
    river = RiverTier(combine.river) if combine.river is not None else None
    return Tiers(RobustZTier(config, catalogue), NoveltyTier(combine.novelty), river)


def new_series_state(
    series: str,
    config: RobustZConfig,
    combine: CombineConfig | None = None,
    detectors: Tiers | None = None,
) -> SeriesState:
    combine = combine or CombineConfig()
    tiers = detectors or tiers_for(config, combine)
    return SeriesState(
        tiers.robust_z.new_state(series),
        novelty=tiers.novelty.new_state(series),
        combine=combine,
        baseline=FeatureBaseline(),
        river=tiers.river.new_state(series) if tiers.river is not None else None,
    )


def fire_level(state: SeriesState) -> float:
    """The series' firing probability: `fire_probability`, its tail narrowed by the same
    factor operator false positives widened the robust z threshold by."""
    scale = state.detector.threshold_scale
    fire = state.combine.fire_probability
    return fire if scale == 1.0 else 1.0 - (1.0 - fire) / scale


def tier_probability(state: SeriesState, tiers: dict[str, float]) -> float:
    """The largest calibrated score among the combined tiers (before any cooldown)."""
    return max((tiers[name] for name in state.combine.tiers if name in tiers), default=0.0)


def combine_scores(state: SeriesState, tiers: dict[str, float], size: float = 0.0) -> float:
    """The window's anomaly probability: the largest calibrated score among the combined
    tiers. Every calibrated score is the empirical tail probability of the tier's raw score
    over the series' own recent raw scores (the non-parametric form of the anomaly-likelihood
    step), so the tiers share one scale. A probability ≥ `fire_level` starts a cooldown
    in which the probability is held at 0, unless the window's novelty distance `size` is at
    least `bigger_event` times the one that started it (then it passes and restarts it). The
    size, not the probability, decides: ranks saturate near 1, so after any firing almost
    every later window "beats" it by rank (a noisy series then fires on and on)."""
    c = state.combine
    probability = tier_probability(state, tiers)
    if state.cooldown > 0:
        state.cooldown -= 1
        if probability < fire_level(state) or not size or size < c.bigger_event * state.fired_size:
            return 0.0
    elif probability < fire_level(state):
        return probability
    state.fired_size = size
    state.cooldown = c.cooldown_windows
    return probability


def detect_window(
    state: SeriesState, window: FeatureWindow, detectors: Tiers | None = None
) -> Alert | DeadLetter | None:
    """Score one closed window of one series; update the state in place. `detectors`: the
    detectors of the state's configuration (`tiers_for`; the flow's step passes them).

    A window starting at or before the last one scored is never scored twice: it is routed as
    a `late_window` dead letter (defence in depth; the feature operator already emits each
    window once).
    """
    series = window.series
    last = state.last_window_start_ms
    if last is not None and window.start_ms <= last:
        summary = {
            "series": series,
            "window_start": rfc3339_ms(window.start_ms),
            "count": window["count"],
            "mean": window["mean"],
        }
        return DeadLetter(
            Reason.LATE_WINDOW,
            f"window {rfc3339_ms(window.start_ms)} arrived after {rfc3339_ms(last)} was scored",
            msgspec.json.encode(summary),
            series.encode(),
        )
    state.last_window_start_ms = window.start_ms
    mean = window["mean"]
    det = state.detector
    t = detectors or tiers_for(det.config, state.combine)
    score = score_one(t.robust_z, det, window)
    tiers = {
        "robust_z": 0.0
        if score is None
        else anomaly_score(score.bad, det.config.z_threshold)
    }
    raw_scores = dict(window.raw_scores) if window.raw_scores else {}
    size = 0.0
    if state.novelty is not None:
        raws = score_one(t.novelty, state.novelty, window)
        if raws is not None:
            tiers["novelty"], size = _novelty_score(state, raws)
    river = None
    if state.river is not None and t.river is not None:
        river = score_one(t.river, state.river, window)
        raw_scores["river"] = t.river.raw(river)
    for name, raw in raw_scores.items():
        tiers[name] = _calibrate(state, name, raw)
    state.tier_scores = tiers
    state.last_score = combine_scores(state, tiers, size)
    anomalous = score is not None and score.anomalous
    flagged = anomalous or max(tiers.values()) >= fire_level(state)
    learn_one(t.robust_z, det, window, score, anomalous)
    if state.novelty is not None:
        learn_one(t.novelty, state.novelty, window, raws, flagged)
    if river is not None and t.river is not None:
        learn_one(t.river, state.river, window, river, flagged)
    river_x = river.x if river is not None else None
    explanation = None
    if state.baseline is not None:
        if anomalous:
            explanation = state.baseline.explain(window.features)
        else:
            state.baseline.learn(window.features)  # anomalies stay out of the baseline
    if score is None or not score.anomalous:
        return None
    alert = window_alert(
        window,
        t.robust_z.catalogue.spec_for(split_series_key(series)[2]).anomaly_type,
        severity_for(score.z, state.detector.config.z_threshold),
        value=mean,
        expected=score.expected,
        score=score.z,
        detector=DETECTOR_NAME,
        probability=round(tier_probability(state, tiers), 6),
        tiers={name: round(value, 6) for name, value in tiers.items()},
        explanation=explanation or None,
    )
    _hold(state, alert.alert_id, HeldWindow(mean, np.array(window.features), river_x))
    return alert


def _calibrate(state: SeriesState, name: str, raw: float) -> float:
    """`raw` ranked by the series' calibrator `name` (created on first use), then remembered."""
    if state.calibrators is None:
        state.calibrators = {}
    calibrator = state.calibrators.get(name)
    if calibrator is None:
        calibrator = state.calibrators[name] = RankCalibrator(state.combine.calibration)
    return calibrator.calibrate(raw)


def _novelty_score(state: SeriesState, raws: tuple[float, ...]) -> tuple[float, float]:
    """The novelty tier's score (the mean of its scales' calibrated raw scores, 0 when no
    scale moved `min_novelty` of the range) and the window's novelty distance (largest raw)."""
    ranks = [
        _calibrate(state, f"novelty@{s}", raw)
        for s, raw in zip(state.combine.novelty.scales, raws, strict=True)
    ]
    size = max(raws)
    score = sum(ranks) / len(ranks) if size >= state.combine.min_novelty else 0.0
    return score, size


def _hold(state: SeriesState, alert_id: str, held: HeldWindow) -> None:
    if state.held is None:
        state.held = {}
    state.held[alert_id] = held
    while len(state.held) > HELD_ALERTS:
        del state.held[next(iter(state.held))]  # the oldest


def apply_series_feedback(state: SeriesState, feedback: Feedback) -> bool:
    """Apply an operator verdict to the series: the robust z threshold (and, through it, the
    probability's firing level) as `operators.feedback.apply_feedback` does; and when the
    alerted window is still held, a false positive teaches it to the River tier and the
    explanation baseline (and to robust z, when the verdict carries no value), while a true
    positive drops it, so it never becomes the reference. Returns whether it was held."""
    held = state.held.pop(feedback.alert_id, None) if state.held else None
    if held is not None and feedback.verdict is Verdict.FALSE_POSITIVE and feedback.value is None:
        feedback = msgspec.structs.replace(feedback, value=held.mean)
    apply_feedback(state.detector, feedback)
    if held is None or feedback.verdict is not Verdict.FALSE_POSITIVE:
        return held is not None
    if state.river is not None and held.river_x is not None:
        state.river.learn(held.river_x)
    if state.baseline is not None:
        state.baseline.learn(held.features)
    return True
