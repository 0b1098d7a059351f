"""Train the Isolation Forest tier: one scikit-learn forest per metric family, exported to ONNX.

Training data: feature vectors computed by the flow's own `FeatureEngine` over the fleet
simulator with no injected anomalies (`train_hours` from a fixed start, so the command is
reproducible), or the fleet's own windows replayed from the features topic (`fleet`,
`iforest-train --kafka-topic`). Evaluation: a second, later stretch with injected anomalies
(another seed), so every reported figure is out of sample: ROC AUC of the raw score for
windows overlapping an injected anomaly on that host and metric against all other windows,
and the share of normal windows the forest's own threshold (contamination) flags.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.features import FEATURE_VERSION, FeatureWindow
from novacron_ml.core.labels import AnomalyLabel
from novacron_ml.core.manifest import ModelManifest, sha256_of
from novacron_ml.core.registry import register, staging
from novacron_ml.core.schema import split_series_key
from operators.detection.iforest import IFOREST_SIGNATURE, family_of
from operators.drift import reference_of
from operators.features.scale_free import IFOREST_INPUTS, iforest_inputs
from operators.serving import make_golden
from training.features import SIM_START, simulated_windows
from training.kafka_dataset import FeatureDataset

SIM_EVAL_START = "2026-02-02T00:00:00Z"
MIN_TRAIN_WINDOWS = 100
"""A family with fewer training windows gets no new version (a forest of 100 trees on a few
dozen points would learn noise)."""


@dataclass(frozen=True)
class IForestConfig:
    n_estimators: int = 100
    contamination: float = 0.05
    max_samples: int = 256
    seed: int = 0


def anomalous_mask(windows: list[FeatureWindow], labels: list[AnomalyLabel]) -> np.ndarray:
    """Windows overlapping an injected anomaly on their host and metric."""
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for label in labels:
        for metric in label.metrics:
            by_key.setdefault((label.host, metric), []).append((label.start_ms, label.end_ms))
    out = np.zeros(len(windows), bool)
    for i, w in enumerate(windows):
        _, host, metric = split_series_key(w.series)
        for lo, hi in by_key.get((host, metric), ()):
            if w.start_ms < hi and w.end_ms > lo:
                out[i] = True
                break
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Mann-Whitney AUC (ties count half); None without both classes."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks of ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


CONVERTERS = ("compact", "skl2onnx")
"""`compact` (the default): the whole forest as one ONNX TreeEnsembleRegressor (`compact_onnx`);
`skl2onnx`: skl2onnx's converter, one tree-ensemble and label-encoder chain per tree (the same
function; ~2,700 nodes, 3-5 ms per call whatever the batch)."""


def export_onnx(forest: Any, path: Path, converter: str = "compact") -> Path:
    """A fitted IsolationForest as ONNX (opset 17, ai.onnx.ml 3; dynamic batch); the graph
    outputs `scores`, sklearn's `decision_function` (negative: anomalous)."""
    if converter == "compact":
        model = compact_onnx(forest)
    elif converter == "skl2onnx":
        from skl2onnx import to_onnx

        sample = np.zeros((1, forest.n_features_in_), np.float32)
        model = to_onnx(forest, sample, target_opset={"": 17, "ai.onnx.ml": 3})
    else:
        raise ValueError(f"unknown converter {converter!r}: one of {', '.join(CONVERTERS)}")
    path.write_bytes(model.SerializeToString())
    return path


def compact_onnx(forest: Any) -> Any:
    """sklearn's IsolationForest.decision_function as one TreeEnsembleRegressor + 4 nodes.

    Each leaf's value is its depth plus c(its training sample count) (the average path length
    of an unbuilt subtree, sklearn's `_average_path_length`); the ensemble sums them over the
    trees (E[h] × n_trees), then decision = -2^(-sum / (n_trees × c(max_samples))) - offset_,
    exactly sklearn's formula. Thresholds become the largest float32 not above sklearn's
    float64 threshold, so `x <= t` agrees with sklearn for every float32 input (the flow feeds
    float32). Tree features are mapped back through `estimators_features_`.
    """
    import onnx
    from onnx import TensorProto, helper
    from sklearn.ensemble._iforest import _average_path_length

    keys = (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "target_treeids", "target_nodeids",
        "target_ids", "target_weights",
    )  # fmt: skip
    attrs: dict[str, Any] = {k: [] for k in keys}
    for t, (est, features) in enumerate(
        zip(forest.estimators_, forest.estimators_features_, strict=True)
    ):
        tree = est.tree_
        depth = np.zeros(tree.node_count, np.int64)
        for node in range(tree.node_count):  # sklearn numbers children after their parent
            for child in (tree.children_left[node], tree.children_right[node]):
                if child >= 0:
                    depth[child] = depth[node] + 1
        leaf_c = _average_path_length(tree.n_node_samples)
        for node in range(tree.node_count):
            left, right = int(tree.children_left[node]), int(tree.children_right[node])
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(node)
            if left < 0:
                attrs["nodes_featureids"].append(0)
                attrs["nodes_values"].append(0.0)
                attrs["nodes_modes"].append("LEAF")
                attrs["nodes_truenodeids"].append(0)
                attrs["nodes_falsenodeids"].append(0)
                attrs["target_treeids"].append(t)
                attrs["target_nodeids"].append(node)
                attrs["target_ids"].append(0)
                attrs["target_weights"].append(float(depth[node] + leaf_c[node]))
                continue
            threshold = float(tree.threshold[node])
            t32 = np.float32(threshold)
            if float(t32) > threshold:
                t32 = np.nextafter(t32, np.float32(-np.inf))
            attrs["nodes_featureids"].append(int(features[tree.feature[node]]))
            attrs["nodes_values"].append(float(t32))
            attrs["nodes_modes"].append("BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(left)
            attrs["nodes_falsenodeids"].append(right)
    denominator = len(forest.estimators_) * float(_average_path_length([forest.max_samples_])[0])
    nodes = [
        helper.make_node(
            "TreeEnsembleRegressor",
            ["X"],
            ["path_sum"],
            domain="ai.onnx.ml",
            **{"n_targets": 1, "aggregate_function": "SUM", "post_transform": "NONE", **attrs},
        ),
        helper.make_node("Mul", ["path_sum", "neg_inv_denominator"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["anomaly"]),  # sklearn's -score_samples
        helper.make_node("Sub", ["neg_offset", "anomaly"], ["decision"]),
        helper.make_node("Reshape", ["decision", "flat"], ["scores"]),
    ]
    constants = [
        helper.make_tensor("neg_inv_denominator", TensorProto.FLOAT, [], [-1.0 / denominator]),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
        helper.make_tensor("neg_offset", TensorProto.FLOAT, [], [-float(forest.offset_)]),
        helper.make_tensor("flat", TensorProto.INT64, [1], [-1]),
    ]
    graph = helper.make_graph(
        nodes,
        "isolation_forest",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", forest.n_features_in_])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])],
        constants,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="novacron-ml",
    )
    onnx.checker.check_model(model)
    return model


def train_and_export(
    out_dir: Path,
    command: str,
    train_hours: float = 12.0,
    eval_hours: float = 12.0,
    hosts: int = 6,
    config: IForestConfig | None = None,
    progress: Callable[[str], None] = print,
    converter: str = "compact",
    fleet: FeatureDataset | None = None,
) -> dict[str, Any]:
    """Fit, evaluate and export one forest per family (+ `generic`); return the report.
    With `fleet` (a features-topic replay) the forests learn the fleet's own windows instead
    of the simulator's; families with fewer than MIN_TRAIN_WINDOWS windows there are left
    out (their current versions keep serving), said so in the report."""
    import skl2onnx
    import sklearn
    from sklearn.ensemble import IsolationForest

    config = config or IForestConfig()
    if fleet is not None:
        progress(f"feature windows for training: {fleet.line()}")
        train_w = fleet.windows
        if len(train_w) < MIN_TRAIN_WINDOWS:
            raise ValueError(
                f"{fleet.topic}: {len(train_w)} series windows in the range (fewer than"
                f" {MIN_TRAIN_WINDOWS}); is topics.features set on the detect flow?"
            )
    else:
        progress(f"feature windows: {train_hours:g} h x {hosts} hosts for training ...")
        train_w, _ = simulated_windows(train_hours, hosts, config.seed, SIM_START, 0.0)
    progress(f"feature windows: {eval_hours:g} h x {hosts} hosts with anomalies, held out ...")
    eval_w, labels = simulated_windows(eval_hours, hosts, config.seed + 1, SIM_EVAL_START, 0.5)
    x_train = iforest_inputs(np.stack([w.features for w in train_w]))
    x_eval = iforest_inputs(np.stack([w.features for w in eval_w]))
    fam_train = np.array([family_of(w.series) for w in train_w])
    fam_eval = np.array([family_of(w.series) for w in eval_w])
    positive = anomalous_mask(eval_w, labels)
    report: dict[str, Any] = {"families": {}, "eval_windows": len(eval_w), "left_out": {}}
    with staging(out_dir) as scratch:  # the ONNX exports, until each is registered
        for family in [*sorted(set(fam_train.tolist())), "generic"]:
            tm = np.ones(len(fam_train), bool) if family == "generic" else fam_train == family
            if tm.sum() < MIN_TRAIN_WINDOWS:
                why = f"{int(tm.sum())} training windows (< {MIN_TRAIN_WINDOWS})"
                report["left_out"][family] = why
                progress(f"{family:11s} left out: {why}; its current version keeps serving")
                continue
            em = np.ones(len(fam_eval), bool) if family == "generic" else fam_eval == family
            forest = IsolationForest(
                n_estimators=config.n_estimators,
                contamination=config.contamination,
                max_samples=min(config.max_samples, int(tm.sum())),
                random_state=config.seed,
            ).fit(x_train[tm])
            raw = -forest.decision_function(x_eval[em])
            flagged = raw > 0  # decision < 0: below the contamination threshold
            pos = positive[em]
            metrics = {
                "train_windows": int(tm.sum()),
                "eval_windows": int(em.sum()),
                "eval_anomalous_windows": int(pos.sum()),
                "roc_auc": roc_auc(raw, pos),
                "flagged_share_normal": float(flagged[~pos].mean()) if (~pos).any() else None,
                "flagged_share_anomalous": float(flagged[pos].mean()) if pos.any() else None,
            }
            name = f"iforest_{family}"
            model_path = export_onnx(forest, scratch / f"{name}.onnx", converter)
            manifest = ModelManifest(
                name=name,
                kind="isolation_forest",
                version="1",
                file=model_path.name,
                sha256=sha256_of(model_path),
                created_at=datetime.now(UTC).isoformat(),
                command=command,
                feature_order=list(IFOREST_INPUTS),
                input_len=len(IFOREST_INPUTS),
                horizon=0,
                step_s=60.0,
                normalisation={
                    "method": "operators.features.scale_free.iforest_inputs: scale-free ratios, "
                    "signed log1p",
                    "feature_version": FEATURE_VERSION,
                },
                training_data={
                    **(
                        {"kafka": fleet.summary()}
                        if fleet is not None
                        else {
                            "simulator": {
                                "hours": train_hours,
                                "hosts": hosts,
                                "seed": config.seed,
                                "start": SIM_START,
                                "anomalies": 0,
                            }
                        }
                    ),
                    "family": family,
                    "windows": int(tm.sum()),
                },
                metrics={
                    "held_out": {
                        "simulator": {
                            "hours": eval_hours,
                            "hosts": hosts,
                            "seed": config.seed + 1,
                            "start": SIM_EVAL_START,
                            "anomalies_per_host_per_hour": 0.5,
                        },
                        **metrics,
                    }
                },
                architecture={
                    "n_estimators": config.n_estimators,
                    "contamination": config.contamination,
                    "max_samples": min(config.max_samples, int(tm.sum())),
                },
                framework={
                    "sklearn": sklearn.__version__,
                    "converter": converter,
                    **({"skl2onnx": skl2onnx.__version__} if converter == "skl2onnx" else {}),
                    "python": platform.python_version(),
                },
                golden=make_golden(model_path, IFOREST_SIGNATURE, x_eval[em][:4]),
                reference=reference_of(x_train[tm], IFOREST_INPUTS),
            )
            path, alias = register(out_dir, model_path, manifest)
            report["families"][family] = {**metrics, "manifest": str(path), "alias": alias}
            auc = metrics["roc_auc"]
            progress(
                f"{family:11s} train {metrics['train_windows']:6d}  "
                f"eval {metrics['eval_windows']:6d} "
                f"({metrics['eval_anomalous_windows']} anomalous)  AUC "
                f"{'n/a' if auc is None else f'{auc:.3f}'}  flagged normal "
                f"{metrics['flagged_share_normal']:.3f}"
            )
    return report
