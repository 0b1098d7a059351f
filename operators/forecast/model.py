"""The served forecaster: its input contract and its ONNX session (runtime side: no torch).

`FORECASTER_INPUTS` and `forecaster_inputs` are the one definition of what the LSTM sees per
step; `training/lstm.py` builds its training windows with the same function.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.manifest import read_manifest
from operators.serving import Signature, open_session, served, shadow_of

DAY_S = 86_400.0

FORECASTER_INPUTS: tuple[str, ...] = ("value", "time_of_day_sin", "time_of_day_cos")
"""Per-step input channels of the forecaster, in order (the manifest's feature_order)."""


def time_features(t_s: np.ndarray) -> np.ndarray:
    """(..., 2) sin/cos of the UTC time of day: the forecaster's calendar channels."""
    phase = 2 * math.pi * (np.asarray(t_s, dtype=np.float64) % DAY_S) / DAY_S
    return np.stack([np.sin(phase), np.cos(phase)], axis=-1)


def forecaster_inputs(values: np.ndarray, t_s: np.ndarray) -> np.ndarray:
    """(B, L) values and their (B, L) times -> (B, L, 3) float32 model input."""
    x = np.empty((*values.shape, len(FORECASTER_INPUTS)), dtype=np.float32)
    x[..., 0] = values
    x[..., 1:] = time_features(t_s)
    return x


def forecaster_signature(input_len: int, horizon: int) -> Signature:
    """(B, input_len, channels) -> (B, horizon) `forecast`: what `OnnxForecaster` feeds and
    reads, with the manifest's lengths."""
    return Signature((input_len, len(FORECASTER_INPUTS)), "forecast", (horizon,))


def golden_input(input_len: int) -> np.ndarray:
    """Two input windows an export records with its outputs (the manifest's `golden`): a daily
    cycle around 0.5 at 60 s steps and a rising ramp of latencies in ms."""
    t = 1_764_460_800 + 60.0 * np.arange(input_len)
    values = np.stack(
        [0.5 + 0.2 * np.sin(2 * math.pi * t / DAY_S), np.linspace(20.0, 35.0, input_len)]
    )
    return forecaster_inputs(values, np.stack([t, t]))


class OnnxForecaster:
    """An ONNX forecaster: (B, input_len, 3) raw values + time channels -> (B, horizon)."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = manifest_path
        self.manifest = read_manifest(manifest_path)
        self.signature = forecaster_signature(self.manifest.input_len, self.manifest.horizon)
        self.session = open_session(
            manifest_path,
            self.manifest,
            FORECASTER_INPUTS,
            "novacron-ml forecast-train",
            self.signature,
        )
        self.input_name = self.session.get_inputs()[0].name
        self._timer = metrics.INFERENCE_SECONDS.labels(model=self.manifest.name)
        self.input_len = self.manifest.input_len
        self.horizon = self.manifest.horizon

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[1:] != (self.input_len, len(FORECASTER_INPUTS)):
            raise ValueError(
                f"expected input (batch, {self.input_len}, {len(FORECASTER_INPUTS)}), got {x.shape}"
            )
        if len(x) == 0:
            return np.empty((0, self.horizon), dtype=np.float32)
        with self._timer.time():
            out = self.session.run(
                [self.signature.output], {self.input_name: x.astype(np.float32, copy=False)}
            )
        return np.asarray(out[0])


def same_shape(old: OnnxForecaster, new: OnnxForecaster) -> str | None:
    """A forecaster swapped in must fit the histories the flow keeps for the served one."""
    a, b = old.manifest, new.manifest
    if (a.input_len, a.horizon, a.step_s) != (b.input_len, b.horizon, b.step_s):
        return (
            f"input_len/horizon/step_s {b.input_len}/{b.horizon}/{b.step_s:g} differ from the "
            f"served {a.input_len}/{a.horizon}/{a.step_s:g} (the flow's histories would not "
            "fit: restart the flow to change them)"
        )
    return None


def load_forecaster(ref: str) -> OnnxForecaster:
    """The forecaster this process serves for `ref` (a registry model folder, followed as its
    champion moves, or a pinned manifest), one session per process; called between
    batches, it picks up a promoted version (`operators.serving.ServedModel`)."""
    return served("forecaster", ref, OnnxForecaster, compatible=same_shape).current()


def load_shadow(ref: str, poll_s: float = 10.0) -> OnnxForecaster | None:
    """The challenger of a registry folder `ref`, for shadow scoring, or None: no challenger
    (looked for again every `poll_s`), one that is the champion itself, or one whose input
    length or step does not fit the histories the flow keeps (said once in the log)."""
    champion = load_forecaster(ref)
    return shadow_of("forecaster", ref, OnnxForecaster, champion, same_shape, poll_s)
