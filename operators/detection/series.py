"""Per-series detection step: a window's features in, an alert or a dead letter out.

This is the stateful logic behind the flow's `detect` step, kept free of Bytewax so it can be
tested alone. Its state (`SeriesState`) is what goes into Bytewax recovery snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

import msgspec
import numpy as np

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.features import FEATURE_INDEX, FeatureWindow
from novacron_ml.core.schema import Alert, Severity, rfc3339_ms, split_series_key
from operators.alerting.alerts import window_alert
from operators.alerting.episodes import Episode
from operators.detection.base import learn_one, score_one
from operators.detection.calibration import CalibrationConfig, RankCalibrator, rank_many
from operators.detection.explain import FeatureBaseline
from operators.detection.feedback import Feedback, Verdict, apply_feedback
from operators.detection.load import (
    LoadConfig,
    LoadResidualDetector,
    count_outcomes,
    proxy_moved,
    warn_no_proxy,
    warned_no_proxy,
)
from operators.detection.load import score_and_fit as score_load
from operators.detection.novelty import NoveltyConfig, NoveltyDetector, NoveltyTier
from operators.detection.novelty import score_many as score_novelty
from operators.detection.river import RiverConfig, RiverModel, RiverTier
from operators.detection.robust_z import (
    RobustZConfig,
    RobustZDetector,
    RobustZTier,
    Score,
    severity_for,
)
from operators.detection.robust_z import score_many as score_robust

SPREAD = RobustZConfig(relative_floor=0.05)
"""The spread tier's robust z: 60 windows of history, a scale of at least 5 % of the median
standard deviation (a near-constant spread does not fire on rounding), widened in its warm-up
like robust z's (`SPREAD_UNWIDENED` where `detector.warmup_widening` is off)."""
SPREAD_UNWIDENED = RobustZConfig(relative_floor=0.05, warmup=False)
HELD_ALERTS = 16
"""Alerted windows per series kept for operator feedback (their features and River inputs)."""


@dataclass(frozen=True)
class CombineConfig:
    """The alert decision: how the tiers' calibrated scores become one anomaly probability
    per window, and when that probability opens, continues and closes an alert episode
    (docs/DETECTION.md, "The alert decision")."""

    tiers: tuple[str, ...] = ("novelty",)
    """Tiers whose calibrated scores enter the probability (their maximum)."""
    fire_probability: float = 0.985
    """A probability at or above this opens an alert episode (and starts a cooldown)."""
    cooldown_windows: int = 100
    """Windows after a firing in which no new episode opens (one alert per anomaly)."""
    bigger_event: float = 3.0
    """During a cooldown, a window whose distance is at least this many times the one that
    started it (and whose probability reaches the firing level) passes and restarts the
    cooldown: a bigger event is never hidden behind a smaller one."""
    min_novelty: float = 0.05
    """The novelty tier scores 0 unless the window's shape is at least this fraction of the
    series' range from every earlier shape at some scale (tiny moves are never novel)."""
    min_deviation: float = 5.0
    """A window whose mean is fewer robust noise widths (|robust z|, in the metric's bad
    direction) than this from the series' median has probability 0: a new shape inside the
    noise is not an anomaly."""
    spread_threshold: float | None = 8.0
    """The spread tier: a window whose sample standard deviation is this many robust noise
    widths above the series' usual spread fires (variance changes, where the mean stays);
    None: off. Higher than the mean's threshold because a 12-sample standard deviation has a
    heavier upper tail than a mean (QUALITY.md)."""
    load_threshold: float | None = 6.0
    """The load-residual tier: a window whose mean is this many residual widths from what the
    host's load proxy predicts (`operators.detection.load`) fires; None: off. The mean's own
    evidence bar (robust z's threshold)."""
    load: LoadConfig = field(default_factory=LoadConfig)
    resolve_after_windows: int = 5
    """Windows in a row below the firing level that close an open episode."""
    hold_windows: int = 10
    """The first windows of an episode stay out of the novelty tier's shapes and ranks, so a
    recurrence of the same anomaly is still new (longer episodes are the new normal)."""
    rearm_after_windows: int = 20
    """Windows after an episode closed that end its cooldown early."""
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    river: RiverConfig | None = None
    """None (the default): no River tier."""


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
    """Each tier's calibrated score in [0, 1] for the last window (novelty's only when its
    ranks could reach the decision: `_ranks_needed`)."""
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
    open_for: int = 0
    """Windows the decision's episode has been open (0: none open)."""
    quiet: int = 0
    """Windows in a row below the firing level in the open episode."""
    closed_for: int = 0
    """Windows since the last episode closed (the cooldown ends at `rearm_after_windows`)."""
    opened: bool = False
    """The last window's alert opened an episode."""
    spread: RobustZDetector | None = None
    """The spread tier: robust z of the window's standard deviation (upward is bad)."""
    load: LoadResidualDetector | None = None
    """The load-residual tier: the window mean against the host's load proxy."""
    drift: float = 0.0
    """The CUSUM that dates a deviation's onset (`track_onset`); 0: no deviation under way."""
    drift_start_ms: int = 0
    """Window start of the first window of the deviation under way (while `drift` > 0)."""


@dataclass
class HeldWindow:
    mean: float
    features: np.ndarray
    river_x: dict[str, float] | None


class WindowScore(msgspec.Struct, frozen=True):
    """Every scored window's decision (for backtests such as NAB, not published)."""

    series: str
    start_ms: int
    end_ms: int
    anomaly_score: float
    """The probability the decision fired on (`Decision.held_probability`)."""
    alert: bool = False
    """The decision raised an alert on this window."""
    opened: bool = False
    """The alert opened an episode (the one a receiver is notified of; later alerts of the
    episode update it)."""


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
    spread = _spread_config(config, combine)
    return SeriesState(
        tiers.robust_z.new_state(series),
        # a tier outside the decision costs nothing: no state, no scoring
        novelty=tiers.novelty.new_state(series) if "novelty" in combine.tiers else None,
        combine=combine,
        baseline=FeatureBaseline(),
        river=tiers.river.new_state(series) if tiers.river is not None else None,
        spread=RobustZDetector(spread, 1) if spread is not None else None,
        load=_new_load(series, combine, tiers),
    )


def _spread_config(config: RobustZConfig, combine: CombineConfig) -> RobustZConfig | None:
    if combine.spread_threshold is None:
        return None
    return SPREAD if config.warmup else SPREAD_UNWIDENED


def _direction(series: str, tiers: Tiers) -> int:
    return tiers.robust_z.catalogue.spec_for(split_series_key(series)[2]).bad_direction


def _new_load(series: str, combine: CombineConfig, tiers: Tiers) -> LoadResidualDetector | None:
    if combine.load_threshold is None:
        return None
    host = series.split("{", 1)[0].rsplit("/", 1)[0]  # `cluster/host` as in the key
    return LoadResidualDetector(
        combine.load,
        _direction(series, tiers),
        host,
        series[len(host) + 1 :],  # `metric{tags}` as in the key
    )


def adopt_settings(
    state: SeriesState, series: str, tiers: Tiers, combine: CombineConfig
) -> list[str]:
    """Bring a series restored from a snapshot to this run's settings (`tiers`' robust z
    configuration and catalogue, and `combine`), in place, and name the parts that changed
    (nothing, when the run's settings are the snapshot's). A detector keeps what it learned
    where the new settings can use it: a changed history length keeps the newest windows
    (`operators.detection.base.resized_ring`); a tier switched on starts fresh, one switched
    off is dropped; the load tier starts over under another proxy, and the novelty tier
    (with its ranks) under other scales or another history length. docs/STATE.md."""
    changed: list[str] = []
    config = tiers.robust_z.config
    direction = _direction(series, tiers)
    if state.detector.config != config or state.detector.direction != direction:
        changed.append("robust_z")
    state.detector.adopt(config, direction)
    old, state.combine = state.combine, combine
    if old != combine:
        changed.append("decision")
    spread = _spread_config(config, combine)
    if spread is not None and state.spread is not None:
        if state.spread.config != spread:
            changed.append("spread")
        state.spread.adopt(spread, 1)
    elif spread is not None or state.spread is not None:
        changed.append("spread")
        state.spread = RobustZDetector(spread, 1) if spread is not None else None
    load = state.load
    if load is not None and combine.load_threshold is not None:
        if load.config != combine.load or load.direction != direction:
            changed.append("load_residual")
        if not load.adopt(combine.load, direction):
            state.load = _new_load(series, combine, tiers)
    elif load is not None or combine.load_threshold is not None:
        changed.append("load_residual")
        state.load = _new_load(series, combine, tiers)
    novelty = state.novelty
    if "novelty" not in combine.tiers:
        state.novelty = None
    elif novelty is None or not novelty.adopt(combine.novelty):
        state.novelty = tiers.novelty.new_state(series)
        for name in _novelty_names(old.novelty.scales):  # ranks of the old distances
            (state.calibrators or {}).pop(name, None)
    if novelty is not state.novelty or (novelty is not None and old.novelty != combine.novelty):
        changed.append("novelty")
    for calibrator in (state.calibrators or {}).values():
        calibrator.adopt(combine.calibration)
    if old.river != combine.river:  # a River model's settings are built into it
        changed.append("river")
        state.river = tiers.river.new_state(series) if tiers.river is not None else None
    return changed


def fire_level(state: SeriesState) -> float:
    """The series' firing probability: `fire_probability`, its tail narrowed by the same
    factor operator false positives widened the robust z threshold by."""
    scale = state.detector.threshold_scale
    fire = state.combine.fire_probability
    return fire if scale == 1.0 else 1.0 - (1.0 - fire) / scale


def tier_probability(state: SeriesState, tiers: dict[str, float]) -> float:
    """The largest calibrated score among the combined tiers (before gate and cooldown)."""
    return max((tiers[name] for name in state.combine.tiers if name in tiers), default=0.0)


def z_probability(bad: float, threshold: float, fire: float) -> float:
    """Robust z as a probability for the decision while the combined tiers warm up:
    monotone in how far the window is in the bad direction, `fire` exactly at the z threshold
    (so it fires where robust z alone would), approaching 1 far past it."""
    if bad < threshold:
        return fire * bad / threshold
    return 1.0 - (1.0 - fire) * threshold / bad


class Decision(NamedTuple):
    """One window's alert decision (`decide`). A named tuple: one is made per window, and a
    frozen dataclass's field-by-field `__init__` cost more than the decision's arithmetic."""

    probability: float
    """The window's anomaly probability: what the alert carries and NAB sweeps."""
    held_probability: float
    """The probability after the cooldown (0 inside one unless it passed): what the decision
    fired on, written per row by `novacron-ml nab`."""
    fired: bool
    """A new firing (an episode opens, or a bigger event inside one)."""
    alerting: bool
    """The window raises an alert: a firing, or the open episode's probability still at the
    firing level."""
    tier: str
    """Which tier decided: `novelty` (or the combined tiers' best) or `robust_z` (warm-up)."""


def decide(
    state: SeriesState,
    tiers: dict[str, float],
    bad: float,
    size: float,
    warm: bool,
    threshold: float,
    spread: float = 0.0,
    load: float = 0.0,
) -> Decision:
    """The alert decision for one window (updates the state's cooldown and episode).

    `bad`: the window's robust z in the metric's bad direction (`Score.bad`, 0 while robust z
    warms up); `size`: the novelty distance; `warm`: the combined tiers have the history they
    need (until then robust z decides, through `z_probability`); `spread`: the window's
    standard deviation in robust noise widths above the series' usual one (the spread tier,
    which decides when it reaches `spread_threshold`, warm or not); `load`: the window mean's
    residual from what the host's load predicts, in residual widths (the load-residual tier,
    deciding the same way at `load_threshold`). The probability is the
    largest calibrated score among the combined tiers, 0 when the window is fewer than
    `min_deviation` noise widths from the median. A probability at or above `fire_level`
    fires unless a cooldown holds it (a window passes one when its distance is
    `bigger_event` times the firing's: sizes, not ranks, decide, because ranks saturate near
    1). An episode opens at a firing, continues while the probability stays at the firing
    level, and closes after `resolve_after_windows` windows below it; `rearm_after_windows`
    later its cooldown ends."""
    c = state.combine
    fire = fire_level(state)
    if warm:
        probability = tier_probability(state, tiers) if bad >= c.min_deviation else 0.0
        tier = max(c.tiers, key=lambda name: tiers.get(name, -1.0))
    else:
        probability = z_probability(bad, threshold, fire)
        size, tier = bad, "robust_z"
    if c.spread_threshold is not None and spread >= c.spread_threshold:
        by_spread = z_probability(spread, c.spread_threshold, fire)
        if by_spread > probability:
            probability, size, tier = by_spread, max(size, spread), "spread"
    if c.load_threshold is not None and load >= c.load_threshold:
        by_load = z_probability(load, c.load_threshold, fire)
        if by_load > probability:
            probability, size, tier = by_load, max(size, load), "load_residual"
    fired = False
    if state.cooldown > 0:
        state.cooldown -= 1
        fired = probability >= fire and size > 0 and size >= c.bigger_event * state.fired_size
        held = probability if fired else 0.0
    else:
        fired = probability >= fire
        held = probability
    if fired:
        state.fired_size = size
        state.cooldown = c.cooldown_windows
    alerting = fired or (state.open_for > 0 and probability >= fire)
    if alerting:
        state.open_for += 1
        state.quiet = 0
    elif state.open_for > 0:
        state.quiet += 1
        if state.quiet >= c.resolve_after_windows:
            state.open_for = state.quiet = state.closed_for = 0
        else:
            state.open_for += 1
    if state.open_for == 0:
        state.closed_for += 1
        if state.closed_for == c.rearm_after_windows:
            state.cooldown = 0
    return Decision(probability, held, fired, alerting, tier)


def held_out(state: SeriesState) -> bool:
    """This window is inside the first `hold_windows` of an open episode: kept out of the
    novelty tier's shapes and ranks."""
    return 0 < state.open_for <= state.combine.hold_windows


def track_onset(
    state: SeriesState, start_ms: int, deviation: float | None, k: float | None = None
) -> int:
    """The estimated onset of the deviation the window at `start_ms` belongs to: Page's CUSUM
    of the window's deviation (robust z in the bad direction, or a tier's own z scaled to
    robust z's threshold), with reference value half the smallest deviation the decision may
    fire on (`min_deviation` / 2) and capped at robust z's threshold so that a past excursion
    is forgotten within a few windows. The onset is the first window after the CUSUM was last
    at zero (the change point's estimate); the window itself when it is at zero. `deviation`
    None (robust z warming up) leaves the CUSUM at rest; `k`: another reference value (the
    sensitivity bench, bench/incident_causes.py)."""
    if deviation is None:
        return start_ms
    if k is None:
        k = state.combine.min_deviation / 2
    drift = min(state.drift + deviation - k, state.detector.config.z_threshold)
    if drift <= 0.0:
        state.drift = 0.0
        return start_ms
    if state.drift <= 0.0:
        state.drift_start_ms = start_ms
    state.drift = drift
    return state.drift_start_ms


def decision_severity(probability: float, bad: float, threshold: float, fire: float) -> Severity:
    """Severity from the deviation's size (`severity_for`, in z thresholds), one band higher
    when the probability is in the top tenth of the firing level's tail (new at every
    scale)."""
    band = severity_for(bad, threshold)
    if probability < 1.0 - (1.0 - fire) / 10:
        return band
    order = list(Severity)
    return order[min(order.index(band) + 1, len(order) - 1)]


def detect_window(
    state: SeriesState,
    window: FeatureWindow,
    detectors: Tiers | None = None,
    proxy_state: Callable[[str], SeriesState | None] | None = None,
) -> Alert | DeadLetter | None:
    """Score one closed window of one series; update the state in place. `detectors`: the
    detectors of the state's configuration (`tiers_for`; the flow's step passes them).
    `detect_batch` with a batch of one."""
    return detect_batch([state], [window], detectors, proxy_state)[0]


def detect_batch(
    states: Sequence[SeriesState],
    windows: Sequence[FeatureWindow],
    detectors: Tiers | None = None,
    proxy_state: Callable[[str], SeriesState | None] | None = None,
) -> list[Alert | DeadLetter | None]:
    """Score one closed window for each of several distinct series (`states[i]` is the state
    of `windows[i].series`); update the states in place. The tiers score the whole batch at
    once (their rings stacked as rows of arrays: `score_many`, `rank_many`), then each
    window's decision runs on its own series' state, then the tiers learn. Gives exactly what
    `detect_window` gives window by window: a series' windows depend on each other, other
    series' do not, except through the load-residual tier: it fits a series on its host's
    load proxy window of the same start, in this batch or, through `proxy_state` (the
    shard's states by series key), an earlier one, so one by one gives the same only where
    each host's proxies come first. `detectors`: the tiers (`tiers_for`; the
    flow's step passes them), else those of the first state's configuration.

    A window starting at or before the last one its series scored is never scored twice: it
    is routed as a `late_window` dead letter (defence in depth; the feature operator already
    emits each window once).
    """
    results: list[Alert | DeadLetter | None] = [None] * len(windows)
    live: list[int] = []
    for i, (state, window) in enumerate(zip(states, windows, strict=True)):
        last = state.last_window_start_ms
        if last is not None and window.start_ms <= last:
            results[i] = _late_window(window, last)
        else:
            state.last_window_start_ms = window.start_ms
            live.append(i)
    if not live:
        return results
    ss = [states[i] for i in live]
    ws = [windows[i] for i in live]
    t = detectors or tiers_for(ss[0].detector.config, ss[0].combine)
    features = np.stack([w.features for w in ws])  # one row per window, FEATURE_NAMES order
    means = features[:, _MEAN].tolist()
    scores = score_robust([s.detector for s in ss], means)
    raws = _score_novelty(ss, means)
    spreads = _score_spread(ss, features)
    loads = _score_load(ss, ws, means, scores, proxy_state)
    cals = [None if r is None else _novelty_calibrators(s) for s, r in zip(ss, raws, strict=True)]
    ranks = _rank_novelty(
        [
            c if c is not None and _ranks_needed(s, score, spread, c, load) else None
            for s, c, score, spread, load in zip(ss, cals, scores, spreads, loads, strict=True)
        ],
        raws,
    )
    baselines: list[FeatureBaseline] = []  # the quiet windows' explanation baselines learn
    quiet: list[int] = []
    for row, (i, state, window, mean, score, raw, cal, rank, spread, load) in enumerate(
        zip(live, ss, ws, means, scores, raws, cals, ranks, spreads, loads, strict=True)
    ):
        results[i] = alert = _decide_window(
            state, window, mean, t, score, raw, cal, rank, spread, load
        )
        if alert is None and state.baseline is not None:
            baselines.append(state.baseline)
            quiet.append(row)
    FeatureBaseline.learn_many(baselines, features[quiet])  # anomalies stay out of it
    return results


_MEAN, _STD, _COUNT = FEATURE_INDEX["mean"], FEATURE_INDEX["std"], FEATURE_INDEX["count"]


def _late_window(window: FeatureWindow, last: int) -> DeadLetter:
    summary = {
        "series": window.series,
        "window_start": rfc3339_ms(window.start_ms),
        "count": window["count"],
        "mean": window["mean"],
    }
    return DeadLetter(
        Reason.LATE_WINDOW,
        f"window {rfc3339_ms(window.start_ms)} arrived after {rfc3339_ms(last)} was scored",
        msgspec.json.encode(summary),
        window.series.encode(),
    )


def _score_novelty(
    states: Sequence[SeriesState], means: Sequence[float]
) -> list[tuple[float, ...] | None]:
    """The novelty tier's raw scores per scale for every series that has the tier."""
    with_tier = [i for i, s in enumerate(states) if s.novelty is not None]
    out: list[tuple[float, ...] | None] = [None] * len(states)
    scored = score_novelty(
        [states[i].novelty for i in with_tier],  # type: ignore[misc]
        [means[i] for i in with_tier],
    )
    for i, raws in zip(with_tier, scored, strict=True):
        out[i] = raws
    return out


def _ranks_needed(
    state: SeriesState,
    score: Score | None,
    spread: float | None,
    cals: list[RankCalibrator],
    load: float | None = None,
) -> bool:
    """Whether the window's novelty ranks can reach its decision or its alert: always while
    a calibrator warms up (robust z decides then, and its alerts carry the tiers' scores);
    once warm, only when the window is `min_deviation` noise widths out in the bad direction
    (below that the probability is 0 whatever the ranks) or the spread or load-residual tier
    fires (its alert carries them). Ranking every window cost a sixth of the detect step;
    the other windows' ranks were computed and never used."""
    c = state.combine
    return (
        (score is not None and score.bad >= c.min_deviation)
        or (spread is not None and c.spread_threshold is not None and spread >= c.spread_threshold)
        or (load is not None and c.load_threshold is not None and load >= c.load_threshold)
        or not all(cal.ready for cal in cals)
    )


def _rank_novelty(
    cals: Sequence[list[RankCalibrator] | None], raws: Sequence[tuple[float, ...] | None]
) -> list[list[float] | None]:
    """The novelty ranks, one per scale, of each series with calibrators in `cals` (its
    calibrators per scale, `_novelty_calibrators`, or None: not ranked); they rank, not
    remember."""
    calibrators: list[RankCalibrator] = []
    flat: list[float] = []
    for scale_cals, scale_raws in zip(cals, raws, strict=True):
        if scale_raws is not None and scale_cals is not None:
            calibrators.extend(scale_cals)
            flat.extend(scale_raws)
    ranked = rank_many(calibrators, flat)
    out: list[list[float] | None] = []
    at = 0
    for scale_cals, scale_raws in zip(cals, raws, strict=True):
        if scale_raws is None or scale_cals is None:
            out.append(None)
        else:
            out.append(ranked[at : at + len(scale_raws)])
            at += len(scale_raws)
    return out


def _score_spread(states: Sequence[SeriesState], features: np.ndarray) -> list[float | None]:
    """The spread tier: each window's standard deviation in robust noise widths above its
    series' usual one (None while warming up, without the tier or with fewer than two
    samples); then it learns the window. `features`: the windows' feature rows."""
    counts = features[:, _COUNT].tolist()
    with_tier = [i for i, s in enumerate(states) if s.spread is not None and counts[i] >= 2]
    all_stds = features[:, _STD].tolist()
    stds = [all_stds[i] for i in with_tier]
    dets = [states[i].spread for i in with_tier]
    out: list[float | None] = [None] * len(states)
    for i, det, std, by_spread in zip(
        with_tier,
        dets,
        stds,
        score_robust(dets, stds),  # type: ignore[arg-type]
        strict=True,
    ):
        assert det is not None
        if by_spread is not None:
            out[i] = by_spread.bad
        det.learn(std, by_spread is not None and by_spread.anomalous)
    return out


def _score_load(
    states: Sequence[SeriesState],
    windows: Sequence[FeatureWindow],
    means: Sequence[float],
    scores: Sequence[Score | None],
    proxy_state: Callable[[str], SeriesState | None] | None = None,
) -> list[float | None]:
    """The load-residual tier: each window mean's residual from its host's load proxy, in
    residual widths in the bad direction (None without the tier, the proxy's window, or
    history); then it learns the windows that had their proxy's. The batch's proxies
    remember their window first (its mean; not usable past `proxy_gate` of its robust z or
    while that warms up), so the order within a batch does not matter; then each series uses
    its proxy's window of the same start, from this batch or an earlier one, its proxy found
    through `proxy_state` (the shard's states by `proxy_key`) or else among the batch's
    (`operators.detection.load`). Window by window the same holds only where a host's proxies
    come before its other series. Each fitted window is counted by outcome
    (`novacron_load_residual_windows_total`).
    """
    loads = [s.load for s in states]
    with_tier = [i for i, det in enumerate(loads) if det is not None]
    out: list[float | None] = [None] * len(states)
    if not with_tier:
        return out
    dets: list[LoadResidualDetector] = [loads[i] for i in with_tier]  # type: ignore[misc]
    gate = dets[0].config.proxy_gate
    here: dict[str, LoadResidualDetector] = {}
    for i, det in zip(with_tier, dets, strict=True):  # the batch's proxies first
        if det.is_proxy:
            score = scores[i]
            ok = score is not None and abs(score.z) < gate
            det.remember(windows[i].start_ms, means[i] if ok else None)
            here.setdefault(det.proxy_key, det)
    xs: list[float | None] = []
    outcome: dict[int, str] = {}  # a fitted window the tier could not score: why
    for i, det in zip(with_tier, dets, strict=True):
        if det.is_proxy:
            xs.append(None)  # the proxy is not fitted
            continue
        key = det.proxy_key
        proxy = None
        if proxy_state is not None:  # the shard's: one proxy a host, where several match
            state = proxy_state(key)
            proxy = state.load if state is not None else None
        if proxy is None:
            proxy = here.get(key)
        start = windows[i].start_ms
        x = proxy.proxy_mean(start) if proxy is not None else None
        xs.append(x)
        if x is None:
            outcome[i] = (
                "no_proxy"
                if proxy is None
                else "proxy_unusable"
                if proxy.proxy_seen(start)
                else "proxy_late"
            )
    ys = [means[i] for i in with_tier]
    zs, fits = score_load(dets, xs, ys)
    by_host: dict[str, list[float]] = {}
    for det, z in zip(dets, zs, strict=True):
        if z is not None:  # every fitted series votes, those the load explains little too
            by_host.setdefault(det.proxy_key, []).append(z)
    vote = dets[0].config.proxy_vote
    moved = {key for key, host_zs in by_host.items() if proxy_moved(host_zs, vote)}
    threshold = states[with_tier[0]].combine.load_threshold or float("inf")
    for i, det, x, y, z, fit in zip(with_tier, dets, xs, ys, zs, fits, strict=True):
        if x is None:
            det.extend_run(None, threshold)  # not scored: a run of windows ends
            continue
        if z is not None and det.proxy_key in moved:
            outcome[i] = "proxy_moved"
            det.extend_run(None, threshold)
            det.learn(x, y, anomalous=True)  # the proxy's change, not this series'
            continue
        bad = None if z is None else det.bad(z)
        if z is None:
            outcome[i] = "warming"
        elif fit:
            # one window past the threshold, or each of the last few in a row past its bar
            bad = max(bad or 0.0, det.extend_run(z, threshold))
            out[i] = bad
        else:  # the load explains too little of it: robust z judges it alone
            outcome[i] = "weak_fit"
        if not fit:
            det.extend_run(None, threshold)
        det.learn(x, y, bad is not None and bad >= threshold)  # far off the line: kept out
    fitted = sum(not d.is_proxy for d in dets)
    count_outcomes(outcome.values(), fitted)
    if "no_proxy" in outcome.values() and not warned_no_proxy():
        for i, why in outcome.items():
            if why == "no_proxy" and states[i].detector.warm:  # not just a proxy to come
                warn_no_proxy(windows[i].series, loads[i].proxy_key)  # type: ignore[union-attr]
                break
    return out


def _decide_window(
    state: SeriesState,
    window: FeatureWindow,
    mean: float,
    t: Tiers,
    score: Score | None,
    raws: tuple[float, ...] | None,
    cals: list[RankCalibrator] | None,
    ranks: list[float] | None,
    by_spread: float | None,
    by_load: float | None = None,
) -> Alert | None:
    """One series' window (`mean`: its mean) after the batch was scored: its decision, then
    its tiers learn."""
    series = window.series
    det = state.detector
    threshold = det.threshold
    bad = 0.0 if score is None else score.bad
    tiers = {"robust_z": anomaly_score(bad, det.config.z_threshold) if score else 0.0}
    raw_scores = dict(window.raw_scores) if window.raw_scores else {}
    size = 0.0
    warm = False
    if raws is not None and cals is not None:
        size, warm = max(raws), all(c.ready for c in cals)
        if ranks is not None:  # else they cannot reach the decision (`_ranks_needed`)
            tiers["novelty"] = _novelty_score(state, size, ranks)
    if "novelty" not in state.combine.tiers:
        warm = score is not None  # the other tiers rank from their first windows
        size = bad  # without novelty's distance, the deviation sizes an event
    river = None
    if state.river is not None and t.river is not None:
        river = score_one(t.river, state.river, window)
        raw_scores["river"] = t.river.raw(river)
    for name, raw in raw_scores.items():
        tiers[name] = _calibrate(state, name, raw)
    spread = 0.0
    if by_spread is not None:
        spread = by_spread
        assert state.combine.spread_threshold is not None
        tiers["spread"] = anomaly_score(spread, state.combine.spread_threshold)
    load = 0.0
    if by_load is not None:
        load = by_load
        assert state.combine.load_threshold is not None
        tiers["load_residual"] = anomaly_score(load, state.combine.load_threshold)
    state.tier_scores = tiers
    zt = det.config.z_threshold
    deviation = max(  # in robust z's units: the severity's size and the onset's evidence
        bad,
        spread * zt / (state.combine.spread_threshold or 1.0),
        load * zt / (state.combine.load_threshold or 1.0),
    )
    evidence = score is not None or by_spread is not None or by_load is not None
    onset_ms = track_onset(state, window.start_ms, deviation if evidence else None)
    decision = decide(state, tiers, bad, size, warm, threshold, spread, load)
    state.last_score = decision.held_probability
    state.opened = decision.alerting and state.open_for == 1
    flagged = decision.alerting or (score is not None and score.anomalous)
    det.learn(mean, score is not None and score.anomalous)  # RobustZTier.learn_batch's rule
    if state.novelty is not None:
        if held_out(state):
            state.novelty.skip(mean)
        else:
            state.novelty.learn(mean)  # NoveltyTier.learn_batch: every window
            if raws is not None and cals is not None:
                for calibrator, raw in zip(cals, raws, strict=True):
                    calibrator.remember(raw)
    if river is not None and t.river is not None:
        learn_one(t.river, state.river, window, river, flagged)
    river_x = river.x if river is not None else None
    if not decision.alerting:
        return None  # detect_batch teaches the window to the explanation baseline
    explanation = None
    if state.baseline is not None:
        explanation = state.baseline.explain(window.features)
    fire = fire_level(state)
    alert = window_alert(
        window,
        t.robust_z.catalogue.spec_for(split_series_key(series)[2]).anomaly_type,
        decision_severity(decision.probability, deviation, zt, fire),
        value=mean,
        expected=score.expected if score is not None else mean,
        score=score.z if score is not None else 0.0,
        detector=decision.tier,
        probability=round(decision.probability, 6),
        tiers={name: round(value, 6) for name, value in tiers.items()},
        explanation=explanation or None,
        onset_ms=onset_ms,
    )
    _hold(state, alert.alert_id, HeldWindow(mean, np.array(window.features), river_x))
    return alert


def _calibrate(state: SeriesState, name: str, raw: float) -> float:
    """`raw` ranked by the series' calibrator `name` (created on first use), then remembered."""
    return _calibrator(state, name).calibrate(raw)


def _calibrator(state: SeriesState, name: str) -> RankCalibrator:
    """The series' calibrator `name`, created on first use."""
    if state.calibrators is None:
        state.calibrators = {}
    calibrator = state.calibrators.get(name)
    if calibrator is None:
        calibrator = state.calibrators[name] = RankCalibrator(state.combine.calibration)
    return calibrator


def _novelty_score(state: SeriesState, size: float, ranks: Sequence[float]) -> float:
    """The novelty tier's score: the mean of its scales' ranks (`_rank_novelty`), 0 when no
    scale moved `min_novelty` of the range (`size`: the largest raw distance)."""
    return sum(ranks) / len(ranks) if size >= state.combine.min_novelty else 0.0


@lru_cache(maxsize=64)
def _novelty_names(scales: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"novelty@{s}" for s in scales)


def _novelty_calibrators(state: SeriesState) -> list[RankCalibrator]:
    """The series' calibrator per novelty scale (`novelty@1`, ...), created on first use."""
    return [_calibrator(state, name) for name in _novelty_names(state.combine.novelty.scales)]


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
