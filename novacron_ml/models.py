"""The model registry in `models/onnx/`: manifests, integrity checks and ONNX Runtime sessions.

Runtime side only (numpy + onnxruntime; never torch). Each model is `<name>.onnx` with a
`<name>.json` manifest beside it (`ModelManifest`); `load_forecaster()` checks the file's
sha256 against the manifest before serving it. Sessions use one intra-op thread and no
spinning: the flow runs one worker per core, so ORT must not compete for them.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REGISTRY = PROJECT_ROOT / "models" / "onnx"
DEFAULT_FORECASTER = REGISTRY / "lstm_forecaster.json"
DAY_S = 86_400.0

FORECASTER_INPUTS: tuple[str, ...] = ("value", "time_of_day_sin", "time_of_day_cos")
"""Per-step input channels of the forecaster, in order (the manifest's feature_order)."""


class ModelManifest(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    """'lstm_forecaster'."""
    version: str
    file: str
    """ONNX file name, relative to the manifest."""
    sha256: str
    created_at: str
    command: str
    """The command that produced the model."""
    feature_order: list[str]
    input_len: int
    horizon: int
    step_s: float
    normalisation: dict[str, Any]
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    architecture: dict[str, Any]
    framework: dict[str, str]


def resolve_model_path(path: str | Path) -> Path:
    """A configured model path: absolute as given; a relative one is looked up in the working
    directory first (an image's /app), then in the project root (a source checkout)."""
    p = Path(path)
    if p.is_absolute():
        return p
    return p if p.exists() else PROJECT_ROOT / p


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> ModelManifest:
    try:
        return msgspec.json.decode(path.read_bytes(), type=ModelManifest)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{path}: not a readable model manifest ({exc})") from None


def write_manifest(path: Path, manifest: ModelManifest) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n")


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


def open_session(manifest_path: Path, manifest: ModelManifest) -> Any:
    """An ONNX Runtime session on the manifest's model, after checking its sha256; one
    intra-op thread and no spinning (the flow runs one worker per core)."""
    import onnxruntime as ort

    model_path = manifest_path.parent / manifest.file
    if not model_path.is_file():
        raise ValueError(f"{manifest_path}: model file {model_path} is missing")
    digest = sha256_of(model_path)
    if digest != manifest.sha256:
        raise ValueError(
            f"{model_path}: sha256 {digest[:12]}... does not match the manifest's "
            f"{manifest.sha256[:12]}... (the file changed after export)"
        )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class OnnxForecaster:
    """An ONNX forecaster: (B, input_len, 3) raw values + time channels -> (B, horizon)."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = manifest_path
        self.manifest = read_manifest(manifest_path)
        self.session = open_session(manifest_path, self.manifest)
        self.input_name = self.session.get_inputs()[0].name
        self.input_len = self.manifest.input_len
        self.horizon = self.manifest.horizon

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[1:] != (self.input_len, len(FORECASTER_INPUTS)):
            raise ValueError(
                f"expected input (batch, {self.input_len}, {len(FORECASTER_INPUTS)}), got {x.shape}"
            )
        if len(x) == 0:
            return np.empty((0, self.horizon), dtype=np.float32)
        out = self.session.run(None, {self.input_name: x.astype(np.float32, copy=False)})
        return np.asarray(out[0])


@lru_cache(maxsize=8)
def load_forecaster(manifest_path: str) -> OnnxForecaster:
    """One session per process and model (the flow's workers share it)."""
    return OnnxForecaster(Path(manifest_path))
