"""Scale-free inputs from a window's feature vector: what the learned tiers see.

Ratios to the series' level and spread plus shape statistics, so one model serves every host
whatever its units. The Isolation Forest (ONNX, `operators.detection.iforest`) and the River
tier (`operators.detection.river`) both score these columns; `training/iforest.py` trains on
them. The column order is the forest manifests' `feature_order`.
"""

from __future__ import annotations

import numpy as np

from novacron_ml.core.features import FEATURE_INDEX

IFOREST_INPUTS: tuple[str, ...] = (
    "robust_z_last",
    "skew",
    "kurtosis",
    "cv",
    "range_rel",
    "tail_rel",
    "ewma_gap_rel",
    "diff_prev_rel",
    "diff_1d_rel",
    "diff_1w_rel",
    "spectral_entropy",
    "missing_ratio",
)
"""The model's input columns, in order (the manifest's feature_order)."""

_F = FEATURE_INDEX


def _slog(x: np.ndarray) -> np.ndarray:
    """Signed log1p: keeps order and sign, tames heavy tails."""
    return np.sign(x) * np.log1p(np.abs(x))


def iforest_inputs(features: np.ndarray) -> np.ndarray:
    """(n, N_FEATURES) feature vectors -> (n, len(IFOREST_INPUTS)) float32 model input."""
    f = np.atleast_2d(np.asarray(features, np.float64))
    level = np.maximum(np.abs(f[:, _F["ewma_slow"]]), np.abs(f[:, _F["p50"]]))
    level = np.maximum(level, 1e-9)
    std = f[:, _F["std"]]
    spread = np.maximum(std, 1e-6 * level)
    has_1d = f[:, _F["has_lag_1d"]] > 0
    has_1w = f[:, _F["has_lag_1w"]] > 0
    cols = [
        np.clip(f[:, _F["robust_z_last"]], -1e3, 1e3),
        f[:, _F["skew"]],
        np.clip(f[:, _F["kurtosis"]], -1e3, 1e3),
        std / level,
        (f[:, _F["max"]] - f[:, _F["min"]]) / level,
        (f[:, _F["p99"]] - f[:, _F["p50"]]) / spread,
        f[:, _F["ewma_gap"]] / level,
        f[:, _F["diff_prev_1"]] / level,
        np.where(has_1d, f[:, _F["diff_1d"]] / level, 0.0),
        np.where(has_1w, f[:, _F["diff_1w"]] / level, 0.0),
        f[:, _F["spectral_entropy"]],
        f[:, _F["missing_ratio"]],
    ]
    x = _slog(np.column_stack(cols))
    return np.nan_to_num(x, nan=0.0, posinf=50.0, neginf=-50.0).astype(np.float32)
