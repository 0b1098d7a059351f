"""ONNX Runtime sessions for a stream worker (per process, never Bytewax state).

Sessions use one intra-op thread and no spinning: the flow runs one worker per core, so ORT
must not compete for them. A session is served only after these checks, at flow build time,
each failure one line naming the manifest and the command that makes a model that fits:

1. the manifest's input columns are this code's (`feature_order`);
2. the model file's sha256 matches the manifest (`novacron_ml.core.manifest`);
3. the graph's input and output shapes fit the `Signature` the caller serves it with (a
   changed `input_len` or another model's file is refused here, not at the first batch);
4. the manifest's golden input gives its golden output (within `atol`); a manifest without one
   gets a probe input of the signature's shape, whose output must have the right shape and be
   finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.manifest import Golden, ModelManifest, sha256_of


@dataclass(frozen=True)
class Signature:
    """What the serving code feeds a model and reads from it: per-row dimensions (the batch
    dimension is implied, first) of the first input and of the output it reads."""

    input_dims: tuple[int, ...]
    output: str
    output_dims: tuple[int, ...]


def _dims(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else "batch" for d in shape) + "]"


def check_signature(session: Any, signature: Signature, where: str, retrain: str) -> None:
    """Refuse a graph whose first input or served output has other fixed dimensions."""
    graph_in = session.get_inputs()[0]
    outputs = {o.name: o for o in session.get_outputs()}
    problems = []
    want_in = [None, *signature.input_dims]
    if len(graph_in.shape) != len(want_in) or any(
        isinstance(g, int) and w is not None and g != w
        for g, w in zip(graph_in.shape, want_in, strict=False)
    ):
        problems.append(
            f"input {graph_in.name} is {_dims(graph_in.shape)}, the flow feeds {_dims(want_in)}"
        )
    if signature.output not in outputs:
        problems.append(f"no output named {signature.output} (has {sorted(outputs)})")
    else:
        out = outputs[signature.output]
        got = [d for d in out.shape[1:] if d != 1]  # (batch, 1) serves as (batch,)
        want = [d for d in signature.output_dims if d != 1]
        if len(got) != len(want) or any(
            isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)
        ):
            problems.append(
                f"output {out.name} is {_dims(out.shape)}, the flow reads "
                f"{_dims([None, *signature.output_dims])}"
            )
    if problems:
        raise ValueError(f"{where}: {'; '.join(problems)}; retrain with `{retrain}`")


def run_golden(session: Any, signature: Signature, golden: Golden | None) -> np.ndarray:
    """The served output for the golden input (or for a probe of the signature's shape)."""
    x = (
        np.asarray(golden.input, dtype=np.float32)
        if golden is not None
        else np.linspace(
            -1.0, 1.0, 2 * int(np.prod(signature.input_dims)), dtype=np.float32
        ).reshape(2, *signature.input_dims)
    )
    try:
        (out,) = session.run([signature.output], {session.get_inputs()[0].name: x})
    except Exception as exc:  # ORT's own error types: one line with the cause
        raise ValueError(
            f"the model fails on a {len(x)}-row probe input ({_first_line(exc)})"
        ) from None
    return np.asarray(out, dtype=np.float64)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_golden(
    model_path: Path, signature: Signature, x: np.ndarray, atol: float = 1e-4
) -> Golden:
    """The golden record an export writes into its manifest: `x` and what the exported file
    gives for it in ONNX Runtime (the same runtime the flow serves it with)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = np.asarray(x, dtype=np.float32)
    (out,) = session.run([signature.output], {session.get_inputs()[0].name: x})
    return Golden(input=x.tolist(), output=np.asarray(out).tolist(), atol=atol)


def check_outputs(
    session: Any, signature: Signature, golden: Golden | None, where: str, retrain: str
) -> None:
    try:
        out = run_golden(session, signature, golden)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}; retrain with `{retrain}`") from None
    rows = 2 if golden is None else len(golden.input)
    if out.size != rows * int(np.prod(signature.output_dims)) or not np.isfinite(out).all():
        raise ValueError(
            f"{where}: a probe input of {rows} rows gave output shape {list(out.shape)} "
            f"({'finite' if np.isfinite(out).all() else 'not finite'}); retrain with `{retrain}`"
        )
    if golden is not None:
        want = np.asarray(golden.output, dtype=np.float64).reshape(out.shape)
        worst = float(np.max(np.abs(out - want))) if out.size else 0.0
        if worst > golden.atol:
            raise ValueError(
                f"{where}: the golden input gives outputs up to {worst:.3g} away from the "
                f"manifest's (atol {golden.atol:g}): not the model it was exported as; "
                f"retrain with `{retrain}`"
            )


def open_session(
    manifest_path: Path,
    manifest: ModelManifest,
    inputs: tuple[str, ...],
    retrain: str,
    signature: Signature,
) -> Any:
    """An ONNX Runtime session on the manifest's model, after the checks in the module doc
    (`inputs`: this code's input columns, in order; `retrain`: the command that makes a model
    that fits; `signature`: the shapes the serving code uses); one intra-op thread and no
    spinning (the flow runs one worker per core)."""
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
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own error types: one line with the cause
        raise ValueError(
            f"{model_path}: ONNX Runtime cannot load it ({_first_line(exc)})"
        ) from None
    check_signature(session, signature, str(manifest_path), retrain)
    check_outputs(session, signature, manifest.golden, str(manifest_path), retrain)
    metrics.MODEL_INFO.labels(
        name=manifest.name, kind=manifest.kind, version=manifest.version, sha256=digest[:12]
    ).set(1)
    metrics.INFERENCE_SECONDS.labels(model=manifest.name)  # the series exists from the start
    return session
