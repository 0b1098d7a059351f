"""ONNX Runtime sessions for a stream worker (per process, never Bytewax state), and hot
reload of registry models (`ServedModel`, docs/REGISTRY.md#reload).

Sessions use one intra-op thread and no spinning: the flow runs one worker per core, so ORT
must not compete for them. A session is served only after these checks, at flow build time
and again before a promoted version is swapped in, each failure one line naming the manifest
and the command that makes a model that fits:

1. the manifest's input columns are this code's (`feature_order`);
2. the model file's sha256 matches the manifest (`novacron_ml.core.manifest`);
3. the graph's input and output shapes fit the `Signature` the caller serves it with (a
   changed `input_len` or another model's file is refused here, not at the first batch);
4. the manifest's golden input gives its golden output (within `atol`); a manifest without one
   gets a probe input of the signature's shape, whose output must have the right shape and be
   finite.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from novacron_ml.core import metrics
from novacron_ml.core.manifest import Golden, ModelManifest, sha256_of
from novacron_ml.core.registry import MANIFEST_FILE, ModelRef, parse_ref, resolve_version


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


class Served(Protocol):
    manifest: ModelManifest


M = TypeVar("M", bound=Served)
LOG = logging.getLogger("novacron.models")


class ServedModel(Generic[M]):
    """One model reference served by this process, with hot reload (docs/REGISTRY.md#reload).

    `current()` is called between batches; at most every `poll_s` (wall clock) it reads the
    followed alias. When the alias names another version, that version is opened with every
    check above (sha256, shapes, golden parity: the golden run also warms the session) and
    `compatible` (the serving code's own conditions, e.g. the same input length), and only
    then swapped in; the version it replaces stays loaded, so moving the alias back
    (`novacron-ml models rollback`) swaps instantly. A version that fails is rejected once
    (one log line, `novacron_model_reloads_total{outcome="rejected"}`) while the current one
    keeps serving; versions are immutable, so it is not tried again. A pinned reference
    (a manifest file, or `<folder>@<version>`) never reloads."""

    def __init__(
        self,
        ref: ModelRef,
        load: Callable[[Path], M],
        poll_s: float = 10.0,
        compatible: Callable[[M, M], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ref, self.load, self.poll_s, self.clock = ref, load, poll_s, clock
        self.compatible = compatible
        self.model: M = load(ref.manifest_path())  # at build time a failure stops the flow
        self.version = self.model.manifest.version
        self.loaded: dict[str, M] = {self.version: self.model}
        self.rejected: dict[str, str] = {}
        """Versions refused, and why."""
        self.swaps = 0
        self._next_poll = clock() + poll_s
        self._lock = threading.Lock()
        self._alias_error = ""
        metrics.MODEL_RELOADS.labels(model=ref.name, outcome="swapped")
        metrics.MODEL_RELOADS.labels(model=ref.name, outcome="rejected")

    def current(self) -> M:
        if self.ref.folder is not None and self.clock() >= self._next_poll:
            self.refresh()
        return self.model

    @property
    def label(self) -> str:
        return f"{self.model.manifest.name}@{self.version}"

    def refresh(self) -> bool:
        """Read the alias now; whether the served model changed."""
        if self.ref.folder is None or not self._lock.acquire(blocking=False):
            return False  # pinned, or another worker of this process is at it
        try:
            self._next_poll = self.clock() + self.poll_s
            return self._refresh(self.ref.folder)
        finally:
            self._lock.release()

    def _refresh(self, folder: Path) -> bool:
        try:
            version = resolve_version(folder, self.ref.alias)
        except ValueError as exc:
            if str(exc) != self._alias_error:  # said once, not every poll
                LOG.error("model %s: %s; %s keeps serving", folder.name, exc, self.label)
            self._alias_error = str(exc)
            return False
        self._alias_error = ""
        if version == self.version or version in self.rejected:
            return False
        if version not in self.loaded:
            try:
                candidate = self.load(folder / version / MANIFEST_FILE)
                why = self.compatible(self.model, candidate) if self.compatible else None
                if why:
                    raise ValueError(f"{folder / version}: {why}")
            except (ValueError, OSError) as exc:
                self.rejected[version] = str(exc)
                metrics.MODEL_RELOADS.labels(model=self.ref.name, outcome="rejected").inc()
                LOG.error(
                    "model %s: version %s rejected, %s keeps serving: %s",
                    folder.name, version, self.label, exc,
                )  # fmt: skip
                return False
            self.loaded[version] = candidate
        self._swap(version)
        return True

    def _swap(self, version: str) -> None:
        old, old_version = self.model, self.version
        self.model, self.version = self.loaded[version], version
        # the one it replaced stays loaded (instant rollback); older ones are let go
        self.loaded = {version: self.model, old_version: old}
        m = old.manifest
        with contextlib.suppress(KeyError):  # not exported if it was never served here
            metrics.MODEL_INFO.remove(m.name, m.kind, m.version, m.sha256[:12])
        n = self.model.manifest
        metrics.MODEL_INFO.labels(
            name=n.name, kind=n.kind, version=n.version, sha256=n.sha256[:12]
        ).set(1)
        metrics.MODEL_RELOADS.labels(model=self.ref.name, outcome="swapped").inc()
        self.swaps += 1
        LOG.warning("model %s: now serving version %s (was %s)", n.name, version, old_version)


_SERVED: dict[tuple[str, str], ServedModel[Any]] = {}
_SERVED_LOCK = threading.Lock()


def served(
    kind: str,
    ref: str | Path,
    load: Callable[[Path], M],
    poll_s: float | None = None,
    compatible: Callable[[M, M], str | None] | None = None,
) -> ServedModel[M]:
    """The process's one `ServedModel` for (`kind`, `ref`): every worker and shard of a
    process serves the same session and sees a swap at the same time. `poll_s` applies when
    it is created (None: `models.poll_s` as `set_poll_s` last set it)."""
    key = (kind, str(ref))
    found = _SERVED.get(key)
    if found is not None:
        return found
    with _SERVED_LOCK:
        if key not in _SERVED:
            poll = _POLL["s"] if poll_s is None else poll_s
            _SERVED[key] = ServedModel(parse_ref(ref), load, poll, compatible)
        return _SERVED[key]


_SHADOW_RETRY: dict[str, float] = {}
_SHADOW_SAID: set[str] = set()


def shadow_of(
    kind: str,
    ref: str,
    load: Callable[[Path], M],
    champion: M,
    compatible: Callable[[M, M], str | None] | None = None,
    poll_s: float = 10.0,
) -> M | None:
    """The challenger of a registry folder `ref`, for shadow scoring beside `champion`, or
    None: no challenger (looked for again every `poll_s`), one that is the champion itself
    (promoted), one that fails the serving checks or does not fit what the champion is fed
    (`compatible`; said once in the log)."""
    key = f"{ref}@challenger"
    now = time.monotonic()
    if _SHADOW_RETRY.get(key, 0.0) > now:
        return None
    try:
        shadow = served(f"{kind}-shadow", key, load, compatible=compatible)
    except ValueError as exc:  # no challenger yet, or one that fails the serving checks
        _SHADOW_RETRY[key] = now + poll_s
        if "no challenger" not in str(exc) and str(exc) not in _SHADOW_SAID:
            _SHADOW_SAID.add(str(exc))
            logging.getLogger("novacron.models").error("shadow of %s not scored: %s", ref, exc)
        return None
    model = shadow.current()
    a, b = getattr(model, "manifest", None), getattr(champion, "manifest", None)
    if a is not None and b is not None and a.version == b.version:
        return None  # promoted: the champion now, nothing to shadow
    why = compatible(champion, model) if compatible is not None else None
    if why:
        if key not in _SHADOW_SAID:
            _SHADOW_SAID.add(key)
            logging.getLogger("novacron.models").warning("shadow of %s not scored: %s", key, why)
        return None
    return model


_POLL = {"s": 10.0}
"""How often a served model's alias is read (the `models.poll_s` setting sets it per process
when a flow is built)."""


def set_poll_s(seconds: float) -> None:
    _POLL["s"] = seconds
    for model in _SERVED.values():
        model.poll_s = seconds
        model._next_poll = min(model._next_poll, model.clock() + seconds)
