"""The served forecast's blend (operators/forecast/blend.py): the minimum-variance weight by
hand, noise around a level goes to the level, structure stays with the model, and the flow's
forecaster publishes the blend with its weight."""

from __future__ import annotations

import numpy as np
import pytest

from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from operators.forecast.blend import MIN_ERRORS, Blend
from operators.forecast.forecaster import ForecastConfig, SeriesForecast, SeriesForecaster


def test_the_weight_is_the_minimum_variance_combination_by_hand() -> None:
    b = Blend(n=MIN_ERRORS, var_model=1.0, var_level=4.0, cov=0.5)
    # w = (4 - 0.5) / (1 + 4 - 1) = 0.875
    assert b.weight() == pytest.approx(0.875)
    assert Blend(n=MIN_ERRORS, var_model=4.0, var_level=1.0, cov=0.0).weight() == 0.2
    assert Blend(n=MIN_ERRORS, var_model=1.0, var_level=9.0, cov=2.0).weight() == 1.0  # clipped
    assert Blend(n=MIN_ERRORS - 1, var_model=4.0, var_level=1.0).weight() == 1.0  # warming up
    served = Blend(n=MIN_ERRORS, var_model=4.0, var_level=1.0).forecast(
        np.array([10.0, 12.0]), np.array([1.0, 3.0])
    )
    assert served == pytest.approx([0.2 * 10 + 0.8 * 2, 0.2 * 12 + 0.8 * 2])


def _run(y: np.ndarray, model_pred) -> Blend:  # type: ignore[no-untyped-def]
    b, L = Blend(), 48
    for i in range(L, len(y)):
        if i > L:
            b.observe(float(y[i - 1]))
        b.forecast(model_pred(y[i - L : i]), y[i - L : i])
    return b


def test_noise_goes_to_the_level_and_structure_stays_with_the_model() -> None:
    rng = np.random.default_rng(4)
    noise = 0.002 + rng.normal(0, 0.0002, 3000)
    # a "network" that leans on its last few windows: a noisy average of noisy windows
    recent = _run(noise, lambda h: np.repeat(h[-4:].mean(), 12))
    assert recent.weight() < 0.3
    t = np.arange(3000)
    cycle = 0.5 + 0.2 * np.sin(2 * np.pi * t / 200) + rng.normal(0, 0.002, 3000)
    # a model that knows the cycle: its errors are the noise; the level's are the cycle
    knows = _run(cycle, lambda h: np.repeat(h[-1] + (h[-1] - h[-2]), 12))
    assert knows.weight() > 0.99


def test_the_forecaster_publishes_the_blend_and_its_weight() -> None:
    class Recent:
        input_len, horizon = 8, 2

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.repeat(x[:, -1:, 0], 2, axis=1)  # persistence: noisy for noise

    def window(i: int, value: float) -> FeatureWindow:
        f = np.zeros(N_FEATURES)
        f[FEATURE_INDEX["mean"]], f[FEATURE_INDEX["count"]] = value, 12
        return FeatureWindow("c/h/error_rate", i * 60_000, (i + 1) * 60_000, f)

    rng = np.random.default_rng(1)
    values = 0.002 + rng.normal(0, 0.0002, 400)
    out: dict[bool, list[SeriesForecast]] = {}
    for blend in (True, False):
        fc = SeriesForecaster(ForecastConfig(step_ms=60_000, blend=blend), 8)
        out[blend] = [
            o
            for i, v in enumerate(values)
            for o in fc.add([window(i, float(v))], Recent())
            if isinstance(o, SeriesForecast)
        ]
    blended, raw = out[True], out[False]
    assert {f.model_weight for f in raw} == {1.0}
    assert blended[-1].model_weight < 0.5  # persistence loses to the level on noise

    # one-step errors of what was published, after the warm-up: the blend's are smaller
    def mse(fs: list[SeriesForecast]) -> float:
        return float(np.mean([(values[i + 8] - f.forecast[0]) ** 2 for i, f in enumerate(fs)
                              if 100 <= i < len(values) - 8]))  # fmt: skip

    assert mse(blended) < 0.8 * mse(raw)
