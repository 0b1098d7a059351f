"""The load-residual tier: a window mean against what its host's load predicts.

A host's metrics move with its load (requests, traffic), so a change that is small next to
the daily cycle and the load's own wander can be large next to what the load predicts. Per
series the tier keeps the last `history_windows` pairs (the window mean of the host's load
proxy, the series' window mean), fits a straight line from proxy to series on them (least
squares), and scores the new window's residual against that hour's residuals: (residual -
their median) / (1.4826 x their MAD), floored like robust z at `relative_floor` x |the
series' mean level| (1 %; at 0, the resolution of its window means: robust z's `resolution`),
in the metric's bad direction.

The proxy is one series of the host (`proxy`, cpu_util), its window of the same start: a
host's series share a shard and their windows close together, so the proxy's is in the same
batch, or an earlier one (a proxy keeps its last `RECENT` windows). The proxy itself is not
fitted: its deviations are robust z's. The proxy stands for the load only while it is
normal, and its own change would show on every metric of the host, so a window scores
nothing when the proxy window is missing, its robust z is warming up or `proxy_gate` or more
from its baseline, or when most of the host's fitted series are `proxy_vote` widths off at
once (`proxy_moved`: a fault moves one metric and maybe a few that follow it). Anomalous
windows, and those of a round where the proxy moved, stay out of the history until
`adapt_after_windows` of them in a row show the relation has moved (robust z's rule).
docs/DETECTION.md, "The load-residual tier"; the measurement that motivated it:
`bench/hard_snr.py --clean` (docs/QUALITY.md).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.schema import series_labels, series_selector
from operators.detection.base import resized_ring
from operators.detection.robust_z import MAD_TO_SIGMA, resolution

log = logging.getLogger(__name__)

_ABS_FLOOR = 1e-9
MIN_VOTERS = 3
"""Fitted series of a host a round needs before `proxy_moved` can tell the proxy moved."""
RECENT = 4
"""Windows a proxy keeps for its host's other series (a batch may hold several of a series)."""
_FLAT = 1e-9
"""A proxy whose spread over the history is below this fraction of its level is flat: no
slope is fitted (the residual is the series' own deviation from its mean)."""


@dataclass(frozen=True)
class LoadConfig:
    proxy: str = "cpu_util"
    """The series standing for a host's load, as its key names it after `cluster/host/`: a
    metric, or a metric and tags it must have (`cpu_usage_user{cpu=cpu-total}` for
    Telegraf's total CPU; other tags, such as an agent's global tags, may be there too);
    every other series of the host is fitted on it."""
    history_windows: int = 60
    min_history: int = 30
    """A line fitted on fewer pairs moves with each new one: half an hour before it scores."""
    relative_floor: float = 0.01
    """The width's floor as a share of the series' mean level (robust z's setting; 0: the
    resolution of the series' window means instead)."""
    adapt_after_windows: int = 30
    proxy_gate: float = 3.0
    """The proxy's own |robust z| from which its window no longer stands for the load."""
    min_r2: float = 0.5
    """A series scores only while the line explains at least this share of its variance over
    the history (R^2, least squares): the tier is there to take the load's share out of a
    series, and where the load explains less than half of it, robust z on the series alone
    judges it already; a second test at the same bar would only be a second chance to fire
    (on real data, bursts of a metric the CPU does not drive: bench/load_real.py)."""
    proxy_vote: float = 3.0
    """|Residual z| at which a fitted series counts as off in `proxy_moved`'s vote: half the
    tier's threshold, so a proxy change that puts some series past it and others just short
    still reads as the proxy's."""
    runs: tuple[int, ...] = (2, 4)
    """Windows in a row that fire together: the tier also fires when each of a series' last
    k scored windows is at least `run_bars`' bar for k residual widths out in the bad
    direction, the bar at which k independent normal residuals in a row are as rare as one
    past the tier's threshold (at 6: 4.0 for 2 windows, 2.54 for 4). A change too small for
    one window but sustained, the case sequential tests are for, without a sum that outlives
    it: the run ends at the first window back inside the bar. The novelty tier's scales
    (1, 2 and 4 windows); () for single windows only."""

    def __post_init__(self) -> None:
        if any(k < 2 for k in self.runs):
            raise ValueError(f"load runs must be 2 windows or more: {self.runs}")


class LoadResidualDetector:
    """Per-series state: rings of past (proxy, value) window-mean pairs. Picklable."""

    __slots__ = (
        "_filled",
        "_pos",
        "_streak",
        "_xy",
        "config",
        "direction",
        "is_proxy",
        "proxy_key",
        "recent",
        "run",
    )

    def __init__(self, config: LoadConfig, direction: int, host: str, name: str) -> None:
        """`host`: `cluster/host`, `name`: the rest of the series key (`metric{tags}`)."""
        self.config = config
        self.direction = direction
        self.is_proxy = is_proxy(name, config.proxy)
        """The series is its host's load proxy: its recent windows are kept, it is not fitted."""
        self.proxy_key = f"{host}/{config.proxy}"
        """`cluster/host/proxy` as the setting names it: the key the host's other series look
        their proxy up by (the flow's shard also finds a proxy with more tags under it)."""
        self.recent: dict[int, float | None] | None = {} if self.is_proxy else None
        """A proxy's last `RECENT` windows by start (ms): the mean, None where the window was
        past `proxy_gate` or robust z was warming up. What the host's other series of those
        windows are fitted on."""
        self._xy = (
            None if self.is_proxy else np.zeros((2, config.history_windows), dtype=np.float32)
        )
        """Row 0 the proxy's window means, row 1 the series' own: a ring (`_pos`; None for a
        proxy, which is not fitted). float32 (half the bytes): its rounding, 6e-8 of a value,
        is far below the width's floor (`relative_floor`, 1 %, or a series' resolution)."""
        self._filled = 0
        self._pos = 0
        self._streak = 0
        self.run: tuple[float, ...] = ()
        """The residual z of the last scored windows in a row (at most the longest of
        `config.runs`, newest last; signed in the bad direction, raw for two-sided metrics):
        the run `run_score` judges. Empty after any window not scored."""

    @property
    def warm(self) -> bool:
        return self._filled >= self.config.min_history

    def extend_run(self, z: float | None, threshold: float) -> float:
        """Add a window's residual z (None: not scored, which ends the run) and return the
        run's deviation in the tier's units where it fires (`run_score`; else 0)."""
        runs = self.config.runs
        if z is None or not runs:
            if self.run:
                self.run = ()
            return 0.0
        signed = z if self.direction == 0 else self.direction * z
        self.run = (*self.run, signed)[-max(runs) :]
        if abs(signed) < lowest_bar(threshold, runs):  # every run ends short of its bar here
            return 0.0
        return run_score(self.run, runs, threshold, two_sided=self.direction == 0)

    def score(self, x: float, y: float) -> float | None:
        """The window's signed residual z, in residual widths (None warming up, NaN where the
        load explains less than `min_r2` of the series)."""
        return score_many([self], [x], [y])[0]

    def bad(self, z: float) -> float:
        """How far a residual z is in the metric's bad direction (|z| for two-sided ones)."""
        return abs(z) if self.direction == 0 else max(self.direction * z, 0.0)

    def learn(self, x: float, y: float, anomalous: bool) -> None:
        """Add a pair to the history unless anomalous (and the relation has not moved)."""
        if anomalous:
            self._streak += 1
            if self._streak < self.config.adapt_after_windows:
                return
        else:
            self._streak = 0
        pos = self._pos
        xy = self._xy
        assert xy is not None, "a proxy is not fitted"
        xy[0, pos] = x
        xy[1, pos] = y
        self._pos = (pos + 1) % self.config.history_windows
        self._filled = min(self._filled + 1, self.config.history_windows)

    def remember(self, start_ms: int, mean: float | None) -> None:
        """A proxy's window (`mean` None: not usable as the load)."""
        recent = self.recent
        assert recent is not None
        recent[start_ms] = mean
        if len(recent) > RECENT:
            del recent[min(recent)]

    def proxy_mean(self, start_ms: int) -> float | None:
        """This proxy's window mean at `start_ms`, if it is recent and usable."""
        recent = self.recent
        return recent.get(start_ms) if recent is not None else None

    def proxy_seen(self, start_ms: int) -> bool:
        """This proxy's window at `start_ms` is among its recent ones (usable or not)."""
        recent = self.recent
        return recent is not None and start_ms in recent

    def adopt(self, config: LoadConfig, direction: int) -> bool:
        """Fit from now on with `config` and `direction` (a restored series under other
        settings; a changed history length keeps the newest pairs). False, changing nothing,
        where the proxy setting changed: the pairs were fitted on another series."""
        if config.proxy != self.config.proxy:
            return False
        if config.history_windows != self.config.history_windows and self._xy is not None:
            self._xy, self._filled = resized_ring(
                self._xy, self._pos, self._filled, config.history_windows
            )
            self._pos = self._filled % config.history_windows
        self.config, self.direction = config, direction
        return True

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in _STATE)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        if len(state) == len(_STATE) - 1:  # pickled before stop 44: no run yet
            state = (*state, ())
        for name, value in zip(_STATE, state, strict=True):
            setattr(self, name, value)


_STATE = (
    "config",
    "direction",
    "is_proxy",
    "proxy_key",
    "recent",
    "_xy",
    "_filled",
    "_pos",
    "_streak",
    "run",
)
"""`LoadResidualDetector`'s pickled state, in order (its `__slots__`)."""


@lru_cache(maxsize=16)
def run_bars(threshold: float, runs: tuple[int, ...]) -> tuple[float, ...]:
    """Per run length k of `runs`, the residual z that k windows in a row must each reach
    to be as rare as one window past `threshold` for independent normal residuals:
    Φ⁻¹(1 − Φ(−threshold)^(1/k)). At 6: 4.00 for 2, 3.09 for 3, 2.54 for 4."""
    from scipy.special import ndtr, ndtri  # imported once per configuration

    tail = float(ndtr(-threshold))
    return tuple(float(-ndtri(tail ** (1.0 / k))) for k in runs)


@lru_cache(maxsize=16)
def lowest_bar(threshold: float, runs: tuple[int, ...]) -> float:
    """The smallest of `run_bars`: a window less off than this ends every run short."""
    return min(run_bars(threshold, runs))


def run_score(
    run: Sequence[float], runs: tuple[int, ...], threshold: float, two_sided: bool = False
) -> float:
    """The deviation of the newest windows in a row (`run`: signed residual z, bad direction
    positive, newest last) in the tier's units, where a run fires: for each k of `runs`
    whose last k windows each reach its bar (`run_bars`) in the bad direction (the same
    direction for all k, either for a two-sided metric), the smallest of them times
    threshold / the bar, so at least `threshold`; the largest over such k, 0 where none
    fires (a run short of its bars adds nothing to the window's deviation)."""
    best = 0.0
    for k, bar in zip(runs, run_bars(threshold, runs), strict=True):
        if len(run) < k:
            continue
        last = run[-k:]
        low = min(last)
        if two_sided:
            low = max(low, -max(last))
        if low >= bar:
            best = max(best, threshold * low / bar)
    return best


def score_many(
    detectors: Sequence[LoadResidualDetector],
    xs: Sequence[float | None],
    ys: Sequence[float],
) -> list[float | None]:
    """Each series' window (`xs[i]`: its proxy's window mean, None: none usable; `ys[i]`: its
    own) as a signed residual z, in residual widths, all rows at once (their rings stacked);
    None where the series warms up or has no proxy, NaN where the load explains less than
    `min_r2` of it (`score_and_fit`). No state changes."""
    zs, fits = score_and_fit(detectors, xs, ys)
    return [z if z is None or fit else math.nan for z, fit in zip(zs, fits, strict=True)]


def score_and_fit(
    detectors: Sequence[LoadResidualDetector],
    xs: Sequence[float | None],
    ys: Sequence[float],
) -> tuple[list[float | None], list[bool]]:
    """`score_many`'s residual z of every row that has one, and whether the line explains at
    least `min_r2` of the series' variance over its history (False where there is no z)."""
    out: list[float | None] = [None] * len(detectors)
    fits = [False] * len(detectors)
    rows = [i for i, d in enumerate(detectors) if d.warm and xs[i] is not None]
    if not rows:
        return out, fits
    config = detectors[rows[0]].config
    if any(detectors[i].config is not config for i in rows) and (
        len({detectors[i].config for i in rows}) > 1
    ):  # one configuration per call
        for i in rows:
            (out[i],), (fits[i],) = score_and_fit([detectors[i]], [xs[i]], [ys[i]])
        return out, fits
    dets = [detectors[i] for i in rows]
    size = config.history_windows
    rings = [d._xy for d in dets]  # warm, so fitted: a proxy (no ring) never gets here
    xy = np.stack(rings, dtype=np.float64)  # type: ignore[arg-type]
    x, y = xy[:, 0], xy[:, 1]
    filled = np.fromiter((d._filled for d in dets), np.int64, len(dets))
    used = None if int(filled.min()) == size else np.arange(size) < filled[:, None]
    if used is not None:
        x[~used] = 0.0
        y[~used] = 0.0
    n = filled.astype(np.float64)
    mx, my = x.sum(axis=1) / n, y.sum(axis=1) / n
    dx, dy = x - mx[:, None], y - my[:, None]
    if used is not None:
        dx[~used] = 0.0
        dy[~used] = 0.0
    sxx, sxy = (dx * dx).sum(axis=1), (dx * dy).sum(axis=1)
    flat = sxx <= n * (_FLAT * np.maximum(np.abs(mx), _ABS_FLOOR)) ** 2
    slope = np.where(flat, 0.0, sxy / np.where(flat, 1.0, sxx))
    residuals = dy - slope[:, None] * dx
    if used is not None:
        residuals[~used] = np.inf  # unfilled slots sort last
    centre = _medians(residuals, filled)
    mad = _medians(np.abs(residuals - centre[:, None]), filled)
    if config.relative_floor > 0:
        floor = config.relative_floor * np.abs(my)
    else:
        floor = resolution(np.sort(y if used is None else np.where(used, y, np.inf)), my)
    width = np.maximum(np.maximum(MAD_TO_SIGMA * mad, floor), _ABS_FLOOR)
    now_x = np.fromiter((xs[i] for i in rows), np.float64, len(rows))
    now_y = np.fromiter((ys[i] for i in rows), np.float64, len(rows))
    z = (now_y - my - slope * (now_x - mx) - centre) / width
    if config.min_r2 > 0:
        syy = (dy * dy).sum(axis=1)
        r2 = np.where(flat | (syy <= 0), 0.0, sxy * sxy / np.maximum(sxx * syy, _ABS_FLOOR))
        fit = (r2 >= config.min_r2).tolist()
    else:
        fit = [True] * len(rows)
    for i, zi, ok in zip(rows, z.tolist(), fit, strict=True):
        out[i] = zi
        fits[i] = ok
    return out, fits


def is_proxy(name: str, proxy: str) -> bool:
    """Whether a series (`name`: its key after `cluster/host/`) is the proxy the setting names:
    the same metric, and every tag the setting gives with the same value (the series may have
    more)."""
    if name == proxy:
        return True
    metric, tags = series_selector(proxy)
    if name.split("{", 1)[0] != metric:
        return False
    if not tags:
        return True
    have = series_labels(name) or {}
    return all(have.get(k) == v for k, v in tags)


OUTCOMES = (
    "scored",
    "warming",
    "weak_fit",
    "no_proxy",
    "proxy_late",
    "proxy_unusable",
    "proxy_moved",
)
"""What the tier does with a fitted series' window (`novacron_load_residual_windows_total`'s
`outcome` label; docs/DETECTION.md item 8)."""


def count_outcomes(unscored: Iterable[str], fitted: int) -> None:
    """`novacron_load_residual_windows_total{outcome}` for one batch: `fitted` windows of
    fitted series, those in `unscored` by why the tier did not score them, the rest scored."""
    by_outcome = Counter(unscored)
    by_outcome["scored"] = fitted - sum(by_outcome.values())
    for outcome, n in by_outcome.items():
        if n:
            metrics.LOAD_RESIDUAL_WINDOWS.labels(outcome=outcome).inc(n)


_WARNED = {"no_proxy": False}


def warned_no_proxy() -> bool:
    return _WARNED["no_proxy"]


def warn_no_proxy(series: str, proxy_key: str) -> None:
    """Once per process: a series past its warm-up whose host has no load proxy series."""
    _WARNED["no_proxy"] = True
    log.warning(
        "load-residual tier: no %s series for %s, so it scores none of that host's series "
        "(set detector.load_proxy, NOVACRON_DETECTOR_LOAD_PROXY, to the host's CPU as your "
        'agent names it; novacron_load_residual_windows_total{outcome="no_proxy"} counts '
        "such windows; docs/DETECTION.md). Logged once.",
        proxy_key,
        series,
    )


def proxy_moved(zs: Sequence[float], vote: float) -> bool:
    """Whether a host's proxy, not its metrics, moved: the signed residual z of the host's
    fitted series in one round (`zs`), more than half of them `vote` or more widths off, and at
    least `MIN_VOTERS` of them. A fault moves one metric of a host and maybe a few that
    follow it; the proxy's own change moves the residual of every metric fitted on it."""
    if len(zs) < MIN_VOTERS:
        return False
    return 2 * sum(abs(z) >= vote for z in zs) > len(zs)


def _medians(rows: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Each row's median over its first `filled` sorted values (the rest are +inf). One sort
    per row: for rows of 60, cheaper than `np.partition` at two order statistics."""
    index = np.arange(len(rows))
    ordered = np.sort(rows, axis=1)
    return (ordered[index, (filled - 1) // 2] + ordered[index, filled // 2]) / 2
