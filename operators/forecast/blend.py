"""The served forecast: the model's, blended with the level of its own input history by the
minimum-variance weight of their recent one-step errors (docs/FORECAST.md#blend).

Two forecasts of the same window — the model's and the mean of the `input_len` windows it
read — have errors e_m and e_l. The combination w·model + (1 − w)·level with the smallest
error variance has (Bates & Granger 1969; the covariance form, since both errors share the
target's noise)

    w = (var_l − cov) / (var_m + var_l − 2·cov), clipped to [0, 1],

estimated per series from exponentially weighted moments of the one-step errors. Where the
model reads structure (a daily cycle, a trend) its errors are far smaller and w stays 1: the
model's forecast, unchanged. Where a series is noise around a level (an error rate), a
network fed 48 noisy windows forecasts a noisy average of them and the level wins. Until a
series has `min_errors` one-step errors, w = 1. The weight applies to every step of the
horizon (it is estimated on step 1, the only step whose error arrives every window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALPHA = 0.01
"""Weight of the newest error in the moments (~100 windows of memory); chosen on the
training simulation (docs/QUALITY.md#forecast-ceiling, with the out-of-sample check)."""
MIN_ERRORS = 30


@dataclass
class Blend:
    """One series' blend: the error moments and the last forecasts awaiting their target.
    Picklable (Bytewax snapshots)."""

    n: int = 0
    var_model: float = 0.0
    var_level: float = 0.0
    cov: float = 0.0
    pending_model: float | None = None
    pending_level: float | None = None

    def weight(self, min_errors: int = MIN_ERRORS) -> float:
        """The model's share of the served forecast."""
        den = self.var_model + self.var_level - 2.0 * self.cov
        if self.n < min_errors or den <= 0.0:
            return 1.0
        return min(1.0, max(0.0, (self.var_level - self.cov) / den))

    def observe(self, actual: float, alpha: float = ALPHA) -> None:
        """The window the last forecast's step 1 was for has arrived (call only for windows
        that may teach: not for suspected anomalies)."""
        if self.pending_model is None or self.pending_level is None:
            return
        dm, dl = actual - self.pending_model, actual - self.pending_level
        a = max(alpha, 1.0 / (self.n + 1))
        self.var_model += a * (dm * dm - self.var_model)
        self.var_level += a * (dl * dl - self.var_level)
        self.cov += a * (dm * dl - self.cov)
        self.n += 1

    def forget_pending(self) -> None:
        """A gap or a restarted history: the pending forecast's target will not come."""
        self.pending_model = self.pending_level = None

    def forecast(self, model: np.ndarray, history: np.ndarray) -> np.ndarray:
        """The served forecast for the model's `model` (horizon,) from `history`, the
        windows it read; remembers both forecasts' step 1 for `observe`."""
        level = float(np.mean(history))
        self.pending_model, self.pending_level = float(model[0]), level
        w = self.weight()
        return model if w >= 1.0 else w * model + (1.0 - w) * level
