"""Model drift in the stream (docs/REGISTRY.md#drift): input drift against the training
distribution kept in the manifest, and prediction-error drift. Per process and model, like
the sessions (not Bytewax state: a restart starts the monitors afresh).

- **Input drift, PSI** (`InputDrift`): the last `window` rows a model scored, binned at the
  deciles of its training inputs (`ModelManifest.reference`), recomputed every 500 rows;
  per input the population
  stability index sum((p - q) * ln(p / q)) over the bins (shares smoothed by 1e-4). 0: the
  training distribution; 0.1-0.25: a moderate shift; > 0.25 a large one. The seed's
  threshold, 0.15, is the alert rule's. Computed once `min_rows` rows are in.
- **Prediction-error drift** (`ErrorDrift`): a forecaster's one-step errors scaled by each
  series' own step-to-step change (|actual - forecast| / mean |diff| of the history the
  model saw, a per-window MASE); the first `baseline` errors make the reference; the gauge is
  the recent error (EWMA) over it, minus 1 (0.15: 15 % worse than when it started), and
  River's Page-Hinkley test (mode "up") on the same errors counts alarms.
- **Inputs outside the training range** (`SupportDrift`, the tuning policies): the share of
  the last `window` states with an input below or above every training value.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.manifest import Reference

EPS = 1e-4


def reference_of(x: np.ndarray, inputs: Sequence[str], bins: int = 10) -> Reference:
    """The training rows' distribution: each input's inner quantile edges (duplicates
    merged) and the share of rows per bin."""
    x = np.asarray(x, dtype=np.float64)
    edges, props = [], []
    for j in range(x.shape[1]):
        inner = np.unique(np.quantile(x[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(inner, x[:, j], side="right"),
                             minlength=len(inner) + 1)  # fmt: skip
        edges.append(inner.tolist())
        props.append((counts / len(x)).tolist())
    return Reference(inputs=list(inputs), edges=edges, proportions=props, rows=len(x),
                     low=x.min(axis=0).tolist(), high=x.max(axis=0).tolist())  # fmt: skip


def psi(expected: np.ndarray, observed: np.ndarray) -> float:
    p = np.maximum(np.asarray(expected, np.float64), EPS)
    q = np.maximum(np.asarray(observed, np.float64), EPS)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum((q - p) * np.log(q / p)))


class InputDrift:
    """PSI per input over the last `window` rows (a ring of bin indices)."""

    def __init__(
        self, reference: Reference, window: int = 5000, min_rows: int = 1000, every: int = 500
    ) -> None:
        """`every`: rows between two computations of the PSI (binning is per batch, the PSI
        over the whole window is not: a flow scores many small batches a second)."""
        self.reference = reference
        self.every = every
        self._computed_at = -every
        self.edges = [np.asarray(e) for e in reference.edges]
        self.expected = [np.asarray(p) for p in reference.proportions]
        self.window, self.min_rows = window, min_rows
        self.bins = np.zeros((window, len(self.edges)), dtype=np.int16)
        self.n = 0
        self.values: list[float] = []

    def add(self, x: np.ndarray) -> list[float]:
        """Add rows (n, inputs); the PSI per input ([] until `min_rows` rows)."""
        x = np.asarray(x, dtype=np.float64)[-self.window :]
        idx = np.empty((len(x), len(self.edges)), dtype=np.int16)
        for j, e in enumerate(self.edges):
            idx[:, j] = np.searchsorted(e, x[:, j], side="right")
        pos = (self.n + np.arange(len(x))) % self.window
        self.bins[pos] = idx
        self.n += len(x)
        if self.n < self.min_rows:
            return []
        if self.values and self.n - self._computed_at < self.every:
            return self.values
        self._computed_at = self.n
        rows = self.bins[: min(self.n, self.window)]
        self.values = [
            psi(p, np.bincount(rows[:, j], minlength=len(p)) / len(rows))
            for j, p in enumerate(self.expected)
        ]
        return self.values


class SupportDrift:
    """Per input, the share of the last `window` rows outside the range the model was
    trained on (`Reference.low`/`high`). For a policy: its training states come from an
    exploring agent and spread over every setting, while a fleet it tunes settles on a few,
    so the PSI against them is large on a healthy fleet; what makes its Q-values guesswork is
    a state it never saw."""

    def __init__(self, reference: Reference, window: int = 5000, min_rows: int = 100) -> None:
        """`min_rows`: a share needs far fewer rows than a PSI's ten bins (100 rows: within
        ±0.04 of a 15 % share at one standard error)."""
        if reference.low is None or reference.high is None:
            raise ValueError("the reference has no training range (low/high)")
        self.low, self.high = np.asarray(reference.low), np.asarray(reference.high)
        self.window, self.min_rows = window, min_rows
        self.outside = np.zeros((window, len(self.low)), dtype=bool)
        self.n = 0

    def add(self, x: np.ndarray) -> list[float]:
        """Add rows (n, inputs); the share outside per input ([] until `min_rows` rows)."""
        x = np.asarray(x, dtype=np.float64)[-self.window :]
        pos = (self.n + np.arange(len(x))) % self.window
        self.outside[pos] = (x < self.low) | (x > self.high)
        self.n += len(x)
        if self.n < self.min_rows:
            return []
        return self.outside[: min(self.n, self.window)].mean(axis=0).tolist()


class ErrorDrift:
    """Scaled one-step errors of a forecaster: a baseline from the first errors, the recent
    level against it, Page-Hinkley alarms (River)."""

    def __init__(
        self, baseline: int = 2000, alpha: float = 0.002, delta: float = 0.05,
        threshold: float = 50.0,
    ) -> None:  # fmt: skip
        """`delta` and `threshold` are Page-Hinkley's, on errors relative to the baseline:
        shifts below 5 % are tolerated; a 15 % rise fires after ~500 errors, a 50 % one
        after ~100, and a stationary stream (relative spread ~0.6) essentially never
        (exp(-2 delta threshold / variance) ~ 1e-6 per excursion)."""
        from river.drift import PageHinkley

        self.baseline_n, self.alpha = baseline, alpha
        self._first: list[float] = []
        self.n = 0
        self.baseline: float | None = None
        self.recent: float | None = None
        self.alarms = 0
        # alpha 1: the classic test (River's default fading makes the sum wander by ~sigma /
        # sqrt(2 (1 - alpha)), ~40 here, so fluctuations alone cross a threshold of 50)
        self._ph = PageHinkley(mode="up", delta=delta, threshold=threshold, alpha=1.0)

    def add(self, errors: Sequence[float]) -> float | None:
        """Add scaled errors; the drift (recent / baseline - 1), None during the baseline."""
        for raw in errors:
            if not np.isfinite(raw):
                continue
            e = min(float(raw), 50.0)  # one wild window must not carry the level
            self.n += 1
            if self.baseline is None:
                self._first.append(e)
                if self.n >= self.baseline_n:
                    self.baseline = max(float(np.mean(self._first)), 1e-9)
                    self.recent = self.baseline
                    for b in self._first:  # the test's mean starts from the baseline's
                        self._ph.update(min(b / self.baseline, 10.0))
                    self._first = []
                continue
            assert self.recent is not None
            self.recent += self.alpha * (e - self.recent)
            self._ph.update(min(e / self.baseline, 10.0))
            if self._ph.drift_detected:
                self.alarms += 1
        return (
            None
            if self.baseline is None or self.recent is None
            else (self.recent / self.baseline - 1.0)
        )


_LOCK = threading.Lock()
_INPUT: dict[str, InputDrift] = {}
_ERROR: dict[str, ErrorDrift] = {}
_SUPPORT: dict[str, tuple[Reference, SupportDrift]] = {}


def observe_support(model: str, reference: Reference | None, x: np.ndarray) -> None:
    """A served policy's states: the share outside its training range, per input (no
    reference with a range: nothing to compare)."""
    if reference is None or reference.low is None or len(x) == 0:
        return
    with _LOCK:
        monitor = _SUPPORT.get(model)
        if monitor is None or monitor[0] is not reference:  # a new version: afresh
            monitor = _SUPPORT[model] = (reference, SupportDrift(reference))
        values = monitor[1].add(x)
    for name, value in zip(reference.inputs, values, strict=False):
        metrics.MODEL_INPUT_OUTSIDE.labels(model=model, input=name).set(value)


def observe_inputs(model: str, reference: Reference | None, x: np.ndarray) -> None:
    """A served model's scored inputs: its PSI gauges (no reference: nothing to compare)."""
    if reference is None or len(x) == 0:
        return
    with _LOCK:
        monitor = _INPUT.get(model)
        if monitor is None or monitor.reference is not reference:  # a new version: afresh
            monitor = _INPUT[model] = InputDrift(reference)
        values = monitor.add(x)
    for name, value in zip(reference.inputs, values, strict=False):
        metrics.MODEL_INPUT_DRIFT.labels(model=model, input=name).set(value)


def observe_errors(model: str, errors: Sequence[float]) -> None:
    """A served forecaster's scaled one-step errors: its drift gauge and alarm count."""
    if not errors:
        return
    with _LOCK:
        monitor = _ERROR.get(model)
        if monitor is None:
            monitor = _ERROR[model] = ErrorDrift()
            metrics.MODEL_DRIFT_ALARMS.labels(model=model)  # at zero from the first error
        before = monitor.alarms
        drift = monitor.add(errors)
        alarms = monitor.alarms - before
    if drift is not None:
        metrics.MODEL_ERROR_DRIFT.labels(model=model).set(drift)
    if alarms:
        metrics.MODEL_DRIFT_ALARMS.labels(model=model).inc(alarms)
