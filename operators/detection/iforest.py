"""Isolation Forest tier: per metric family, trained offline, scored with ONNX Runtime.

`training/iforest.py` fits one scikit-learn IsolationForest per metric family on feature
vectors the flow's own engine computed, exports it as one ONNX TreeEnsembleRegressor to
`models/onnx/iforest_<family>/` (a registry model folder) with a manifest
(`novacron_ml.core.manifest.ModelManifest`, kind `isolation_forest`). The flow scores every
closed window of a feature-shard batch in one ORT call per family
(`IsolationForestTier.score`, micro-batches) and attaches the raw score (the negated
decision function: higher is more anomalous) to the window as
`raw_scores["iforest"]`; the per-series step calibrates it like every other tier.

The model never sees units: `iforest_inputs` turns the feature vector into scale-free inputs
(ratios to the series' level and spread, shape statistics), so one model per family serves
every host. Runtime side: numpy + onnxruntime only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import msgspec
import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.manifest import ModelManifest, read_manifest
from novacron_ml.core.registry import ALIASES_FILE
from novacron_ml.core.schema import AnomalyType, rfc3339_ms, split_series_key
from operators import drift
from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs
from operators.serving import Signature, open_session, served, shadow_of

IFOREST_SIGNATURE = Signature(input_dims=(len(IFOREST_INPUTS),), output="scores", output_dims=())
"""(n, inputs) -> (n,) raw scores: what `OnnxIsolationForest` feeds and reads."""

FAMILIES: dict[AnomalyType, str] = {
    AnomalyType.LATENCY_SPIKE: "latency",
    AnomalyType.CONSENSUS_DELAY: "protocol",
    AnomalyType.COMPRESSION_FAILURE: "protocol",
    AnomalyType.PREDICTION_ERROR: "protocol",
    AnomalyType.THROUGHPUT_DROP: "throughput",
    AnomalyType.ERROR_BURST: "errors",
    AnomalyType.RESOURCE_EXHAUSTION: "resources",
    AnomalyType.UNCLASSIFIED: "generic",
}
"""Metric family of each anomaly type; `generic` (trained on every family) serves the rest."""


def family_of(series: str, catalogue: Catalogue = DEFAULT_CATALOGUE) -> str:
    _, _, metric = split_series_key(series)
    return FAMILIES.get(catalogue.spec_for(metric).anomaly_type, "generic")


class OnnxIsolationForest:
    """One family's exported forest: (n, len(IFOREST_INPUTS)) -> raw anomaly scores (n,)."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest: ModelManifest = read_manifest(manifest_path)
        self.session = open_session(
            manifest_path,
            self.manifest,
            IFOREST_INPUTS,
            "novacron-ml iforest-train",
            IFOREST_SIGNATURE,
        )
        self.input_name = self.session.get_inputs()[0].name
        self._timer = metrics.INFERENCE_SECONDS.labels(model=self.manifest.name)

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Negated decision function (sklearn's convention flipped): higher = more anomalous."""
        if len(x) == 0:
            return np.zeros(0)
        with self._timer.time():
            (out,) = self.session.run([IFOREST_SIGNATURE.output], {self.input_name: x})
        return -np.asarray(out, np.float64).reshape(-1)


def load_iforest(ref: str) -> OnnxIsolationForest:
    """The forest this process serves for `ref` (a registry model folder, followed as its
    champion moves, or a manifest file), one session per process; called per batch, it
    picks up a promoted version (`operators.serving.ServedModel`)."""
    return served("iforest", ref, OnnxIsolationForest).current()


class ShadowScore(msgspec.Struct, frozen=True, kw_only=True):
    """JSON on `topics.scores_shadow`, keyed by series: a forest challenger's raw score of a
    window beside the champion's raw score of the same window (shadow scoring: never an
    alert; `models compare iforest_<family> --live` scores both on operator verdicts)."""

    series: str
    window_end: str
    model: str
    """The challenger, `name@version`."""
    score: float
    champion: str
    champion_score: float


@lru_cache(maxsize=64)
def _manifest_for(directory: str, family: str) -> str | None:
    """The family's model, else `generic`: a registry folder `iforest_<family>/` (served as
    its champion) or a manifest `iforest_<family>.json` (a directory of exports); looked up
    once per process (models are checked when the flow is built), not on every batch."""
    for name in (family, "generic"):
        folder = Path(directory) / f"iforest_{name}"
        if (folder / ALIASES_FILE).is_file():
            return str(folder.resolve())
        path = Path(directory) / f"iforest_{name}.json"
        if path.is_file():
            return str(path.resolve())
    return None


@dataclasses.dataclass(frozen=True)
class IsolationForestTier:
    """The forests as a `Detector`: stateless per series (the models are per process), one
    ORT call per family present in a batch. The registry directory holding
    `iforest_<family>.json`; picklable (paths only)."""

    name: ClassVar[str] = "iforest"
    directory: str
    catalogue: Catalogue = DEFAULT_CATALOGUE
    """Which family's forest scores a metric (by its anomaly type)."""
    shadow: bool = False
    """Also score each window with its family's registry challenger (`shadow_scores`)."""

    def manifest_for(self, family: str) -> str | None:
        """The model reference serving `family`."""
        return _manifest_for(self.directory, family)

    def new_state(self, series: str) -> None:
        return None

    def score_batch(
        self, states: Sequence[None], windows: Sequence[FeatureWindow]
    ) -> list[float | None]:
        """Each window's raw score; None where no model serves its family."""
        out: list[float | None] = [None] * len(windows)
        groups: dict[str, list[int]] = {}
        paths: dict[str, str | None] = {}
        for i, w in enumerate(windows):
            family = family_of(w.series, self.catalogue)
            if family not in paths:
                paths[family] = self.manifest_for(family)
            path = paths[family]
            if path is not None:
                groups.setdefault(path, []).append(i)
        for path, idx in groups.items():
            model = load_iforest(path)
            x = iforest_inputs(np.stack([windows[i].features for i in idx]))
            for i, raw in zip(idx, model.raw_scores(x).tolist(), strict=True):
                out[i] = raw
            drift.observe_inputs(model.manifest.name, model.manifest.reference, x)
        return out

    def learn_batch(
        self,
        states: Sequence[None],
        windows: Sequence[FeatureWindow],
        scores: Sequence[float | None],
        flagged: Sequence[bool],
    ) -> None:
        """Trained offline (`novacron-ml iforest-train`): nothing to learn per window."""

    def raw(self, score: float | None) -> float | None:
        return score

    def shadow_scores(self, windows: Sequence[FeatureWindow]) -> list[ShadowScore]:
        """The registry challenger of each family's forest on the windows its champion scored
        (`score` ran first: their `raw_scores["iforest"]`), one ORT call per family; nothing
        for a family without a challenger, or served from a pinned manifest."""
        groups: dict[str, list[int]] = {}
        for i, w in enumerate(windows):
            if w.raw_scores and "iforest" in w.raw_scores:
                path = self.manifest_for(family_of(w.series, self.catalogue))
                if path is not None and not path.endswith(".json"):
                    groups.setdefault(path, []).append(i)
        out: list[ShadowScore] = []
        for path, idx in groups.items():
            champion = load_iforest(path)
            challenger = shadow_of("iforest", path, OnnxIsolationForest, champion)
            if challenger is None:
                continue
            x = iforest_inputs(np.stack([windows[i].features for i in idx]))
            a, b = champion.manifest, challenger.manifest
            for i, raw in zip(idx, challenger.raw_scores(x).tolist(), strict=True):
                w = windows[i]
                out.append(ShadowScore(
                    series=w.series, window_end=rfc3339_ms(w.end_ms),
                    model=f"{b.name}@{b.version}", score=raw,
                    champion=f"{a.name}@{a.version}",
                    champion_score=(w.raw_scores or {})["iforest"],
                ))  # fmt: skip
        return out

    def score(self, windows: list[FeatureWindow]) -> list[FeatureWindow]:
        """The same windows with `raw_scores["iforest"]`: the feature step scores a shard's
        closed windows here, one batch, and the per-series step calibrates the raw score."""
        if not windows:
            return windows
        out = list(windows)
        for i, raw in enumerate(self.score_batch([None] * len(windows), windows)):
            if raw is not None:
                w = windows[i]
                scores = dict(w.raw_scores or {})
                scores["iforest"] = raw
                out[i] = dataclasses.replace(w, raw_scores=scores)
        return out
