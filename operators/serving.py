"""ONNX Runtime sessions for a stream worker (per process, never Bytewax state).

Sessions use one intra-op thread and no spinning: the flow runs one worker per core, so ORT
must not compete for them. A session is opened only after the model file's sha256 matches its
manifest (`novacron_ml.core.manifest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novacron_ml.core.manifest import ModelManifest, sha256_of


def open_session(
    manifest_path: Path, manifest: ModelManifest, inputs: tuple[str, ...], retrain: str
) -> Any:
    """An ONNX Runtime session on the manifest's model, after checking its input contract
    (`inputs`: this code's input columns, in order; `retrain`: the command that makes a model
    that fits) and its sha256; one intra-op thread and no spinning (the flow runs one worker
    per core)."""
    import onnxruntime as ort

    if manifest.feature_order != list(inputs):
        raise ValueError(
            f"{manifest_path}: inputs {manifest.feature_order} differ from this code's "
            f"{list(inputs)}; retrain with `{retrain}`"
        )
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
