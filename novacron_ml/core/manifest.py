"""The model manifest format and the registry in `models/onnx/` (one definition for every model).

Each model version is a folder `<name>/<version>/` holding its ONNX file and `manifest.json`
(`ModelManifest`; the layout and aliases: `novacron_ml.core.registry`): the flows check the
file's sha256 against it before serving (`operators.serving.open_session`), `training/`
writes it when it exports a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import msgspec

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = PROJECT_ROOT / "models" / "onnx"
DEFAULT_FORECASTER = REGISTRY / "lstm_forecaster"
"""The forecaster's registry folder (served: its champion)."""


class Golden(msgspec.Struct, kw_only=True):
    """A few inputs and the outputs the exported model gave for them: the flow runs the input
    when it opens the model and refuses it if the outputs differ by more than `atol`
    (`operators.serving.open_session`)."""

    input: list[Any]
    """A (batch, ...) array as nested lists, the model's input dtype float32."""
    output: list[Any]
    """The served output for it, as nested lists."""
    atol: float = 1e-4


class Reference(msgspec.Struct, kw_only=True):
    """The training distribution of a model's inputs, for input drift (PSI,
    `operators.drift`): per input, the inner edges of its deciles and the share of the
    training rows in each of the bins they make, and the range of the training values."""

    inputs: list[str]
    edges: list[list[float]]
    proportions: list[list[float]]
    rows: int
    low: list[float] | None = None
    """Per input, the smallest training value (with `high`: the support the model saw;
    `operators.drift.SupportDrift`). Absent in references written before it."""
    high: list[float] | None = None


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
    golden: Golden | None = None
    """Written at export; without it the flow checks shapes and finiteness on a probe input."""
    reference: Reference | None = None
    """The training inputs' distribution (written at export since the drift monitors;
    without it a model has no input-drift gauge)."""


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
