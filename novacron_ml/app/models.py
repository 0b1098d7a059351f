"""`novacron-ml models ...`: the registry seen by an operator (docs/REGISTRY.md). Listing,
showing and comparing read manifests only; promoting opens the version the way a flow
would (sha256, shapes, golden parity) and moves the alias only when it passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from novacron_ml.core import registry
from novacron_ml.core.manifest import ModelManifest


def open_version(manifest_path: Path, manifest: ModelManifest) -> Any:
    """Open a version with the serving code of its kind: every check a flow makes."""
    if manifest.kind == "lstm_forecaster":
        from operators.forecast.model import OnnxForecaster

        return OnnxForecaster(manifest_path)
    if manifest.kind == "isolation_forest":
        from operators.detection.iforest import OnnxIsolationForest

        return OnnxIsolationForest(manifest_path)
    if manifest.kind == "dqn_policy":
        from operators.tuning.policy import OnnxPolicy

        return OnnxPolicy(manifest_path)
    raise ValueError(f"{manifest_path}: unknown model kind {manifest.kind!r}")


def headline(manifest: ModelManifest) -> str:
    """The manifest's main quality figure, as its kind reports it."""
    m = manifest.metrics
    if manifest.kind == "lstm_forecaster" and isinstance(m.get("test"), dict):
        t = m["test"]
        return f"MASE {t.get('mase', float('nan')):.3f}, within 5 % {t.get('within_5pct', 0):.3f}"
    if manifest.kind == "isolation_forest" and isinstance(m.get("held_out"), dict):
        auc = m["held_out"].get("roc_auc")
        return "held-out AUC n/a" if auc is None else f"held-out AUC {auc:.3f}"
    best = m.get("final_fraction_of_best")
    if isinstance(best, int | float):
        return f"of grid-best {best:.3f}"
    if isinstance(best, dict) and isinstance(best.get("dqn"), int | float):
        return f"of best {best['dqn']:.3f}"
    if isinstance(m.get("leave_one_series_out"), dict):  # per held-out series
        scores = [v["dqn"] for v in m["leave_one_series_out"].values() if "dqn" in v]
        if scores:
            return f"of best {sum(scores) / len(scores):.3f} (leave one series out)"
    return "-"


def list_rows(root: Path) -> list[list[str]]:
    rows = []
    for folder in registry.models(root):
        aliases = registry.read_aliases(folder)
        champion = aliases.get("champion")
        manifest = registry.manifest_of(folder) if isinstance(champion, str) else None
        rows.append(
            [
                folder.name,
                manifest.kind if manifest else "-",
                ", ".join(registry.versions(folder)),
                str(champion or "-"),
                str(aliases.get("challenger") or "-"),
                manifest.created_at[:19] if manifest else "-",
                headline(manifest) if manifest else "-",
            ]
        )
    return rows


LIST_HEADER = ["model", "kind", "versions", "champion", "challenger", "created", "quality"]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (lists kept whole)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def diff_rows(a: ModelManifest, b: ModelManifest) -> list[list[str]]:
    """Every manifest field that differs between two versions (the golden record only as
    whether it changed: it is large)."""
    import msgspec

    da = flatten(msgspec.to_builtins(a))
    db = flatten(msgspec.to_builtins(b))
    rows = []
    for key in sorted(set(da) | set(db)):
        if key.startswith("golden"):
            continue
        va, vb = da.get(key, "-"), db.get(key, "-")
        if va != vb:
            rows.append([key, _short(va), _short(vb)])
    if a.golden != b.golden:
        rows.append(["golden", "(differs)", "(differs)"])
    return rows


def _short(value: Any, width: int = 48) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def promote_checked(folder: Path, version: str | None) -> tuple[str | None, str]:
    """Open the version as a flow would; move the champion to it only if that passed."""
    aliases = registry.read_aliases(folder)
    target = version or aliases.get("challenger")
    if not isinstance(target, str):
        raise ValueError(f"{folder.name}: no challenger to promote; name a version")
    path = registry.version_manifest(folder, target)
    open_version(path, registry.manifest_of(folder, target))  # raises: the alias stays
    return registry.promote(folder, target)
