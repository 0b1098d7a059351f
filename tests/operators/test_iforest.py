"""The Isolation Forest tier: scale-free inputs, the ONNX export matching scikit-learn, the
committed per-family models on held-out simulated anomalies, and scores reaching the alert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow
from novacron_ml.core.manifest import (
    REGISTRY,
    ModelManifest,
    read_manifest,
    sha256_of,
    write_manifest,
)
from novacron_ml.core.registry import champion_manifest
from operators.detection.iforest import FAMILIES, IsolationForestTier, family_of, load_iforest
from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs

UNIT_FEATURES = (
    "mean", "std", "min", "max", "p50", "p95", "p99", "last", "rate_of_change", "ewma_fast",
    "ewma_slow", "ewma_gap", "prev_mean_1", "prev_mean_2", "prev_mean_3", "diff_prev_1",
    "lag_1d", "lag_1w", "diff_1d", "diff_1w",
)  # fmt: skip


def random_features(rng: np.random.Generator, n: int) -> np.ndarray:
    f = rng.normal(0, 1, (n, N_FEATURES))
    for name in UNIT_FEATURES:
        f[:, FEATURE_INDEX[name]] = rng.normal(100, 10, n)
    f[:, FEATURE_INDEX["std"]] = np.abs(f[:, FEATURE_INDEX["std"]])
    f[:, FEATURE_INDEX["has_lag_1d"]] = 1.0
    return f


def test_inputs_are_scale_free_and_finite() -> None:
    f = random_features(np.random.default_rng(0), 50)
    scaled = f.copy()
    for name in UNIT_FEATURES:
        scaled[:, FEATURE_INDEX[name]] *= 1000.0  # the same series in other units
    a, b = iforest_inputs(f), iforest_inputs(scaled)
    assert a.shape == (50, len(IFOREST_INPUTS)) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    f[0, :] = 0.0  # a flat zero window: no division blow-up
    f[1, FEATURE_INDEX["kurtosis"]] = np.inf
    assert np.isfinite(iforest_inputs(f)).all()


def test_every_type_has_a_family() -> None:
    assert family_of("c/h/latency_p99_ms") == "latency"
    assert family_of("c/h/cpu_util") == "resources"
    assert family_of("c/h/consensus_time_ms") == "protocol"
    assert family_of("c/h/some_gauge") == "generic"
    assert set(FAMILIES.values()) == {
        "latency", "throughput", "errors", "resources", "protocol", "generic"
    }  # fmt: skip


@pytest.mark.parametrize("converter", ["compact", "skl2onnx"])
def test_onnx_export_scores_like_scikit_learn(tmp_path: Path, converter: str) -> None:
    sklearn = pytest.importorskip("sklearn.ensemble")
    import onnx

    from training.iforest import export_onnx

    rng = np.random.default_rng(1)
    x = iforest_inputs(random_features(rng, 400))
    forest = sklearn.IsolationForest(n_estimators=30, random_state=0).fit(x)
    model = export_onnx(forest, tmp_path / "iforest_generic.onnx", converter)
    n_nodes = len(onnx.load(str(model)).graph.node)
    assert n_nodes == 5 if converter == "compact" else n_nodes > 30  # one ensemble vs per tree
    base = read_manifest(champion_manifest("iforest_generic"))
    manifest = ModelManifest(
        **{
            **{f: getattr(base, f) for f in base.__struct_fields__},
            "file": model.name,
            "sha256": sha256_of(model),
            "golden": None,  # a new model: the committed one's golden record does not apply
        }
    )
    write_manifest(tmp_path / "iforest_generic.json", manifest)
    feats = random_features(rng, 64)
    for name, value in (("max", 1e6), ("p99", 1e6), ("std", 1e5), ("ewma_gap", 1e5)):
        feats[:5, FEATURE_INDEX[name]] = value  # a few outliers: higher raw = more anomalous
    windows = [FeatureWindow(f"c/h{i}/some_gauge", 0, 60_000, row) for i, row in enumerate(feats)]
    scored = IsolationForestTier(str(tmp_path)).score(windows)
    raw = np.array([w.raw_scores["iforest"] for w in scored if w.raw_scores])
    expected = -forest.decision_function(iforest_inputs(feats))
    np.testing.assert_allclose(raw, expected, atol=1e-4 if converter == "skl2onnx" else 1e-6)
    assert raw[:5].min() > np.median(raw[5:])
    assert [w.series for w in scored] == [w.series for w in windows]  # order kept
    # inputs on the float32 values next to split thresholds: every comparison as sklearn's
    tree, features = forest.estimators_[0].tree_, forest.estimators_features_[0]
    splits = np.flatnonzero(tree.children_left >= 0)
    edge = np.repeat(x[:1], 2 * len(splits), axis=0)
    for i, node in enumerate(splits):
        t32 = np.float32(tree.threshold[node])
        edge[2 * i, features[tree.feature[node]]] = t32
        edge[2 * i + 1, features[tree.feature[node]]] = np.nextafter(t32, np.float32(np.inf))
    session = load_iforest(str((tmp_path / "iforest_generic.json").resolve()))
    np.testing.assert_allclose(session.raw_scores(edge), -forest.decision_function(edge), atol=1e-4)


def test_committed_models_are_intact_and_catch_held_out_anomalies() -> None:
    from training.iforest import anomalous_mask, roc_auc, simulated_windows

    for family in sorted(set(FAMILIES.values())):
        path = champion_manifest(f"iforest_{family}")
        manifest = read_manifest(path)
        assert manifest.kind == "isolation_forest"
        assert manifest.feature_order == list(IFOREST_INPUTS)
        assert sha256_of(path.parent / manifest.file) == manifest.sha256
    # a stretch none of the models saw: another seed, another month, many anomalies
    windows, labels = simulated_windows(6, 4, 11, "2026-03-02T00:00:00Z", 1.0)
    assert labels
    scored = IsolationForestTier(str(REGISTRY)).score(windows)
    raw = np.array([w.raw_scores["iforest"] for w in scored if w.raw_scores])
    assert len(raw) == len(windows)
    auc = roc_auc(raw, anomalous_mask(windows, labels))
    assert auc is not None and auc > 0.7


def test_relative_model_paths_prefer_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from novacron_ml.core.manifest import PROJECT_ROOT, resolve_model_path

    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("models/onnx") == PROJECT_ROOT / "models/onnx"  # not here: repo
    (tmp_path / "models" / "onnx").mkdir(parents=True)
    assert resolve_model_path("models/onnx") == Path("models/onnx")  # an image's /app copy
    assert resolve_model_path(tmp_path) == tmp_path
