"""The model registry in `models/onnx/` (docs/REGISTRY.md): a folder per model and version,
immutable manifests, aliases switched atomically. File operations only (no ONNX Runtime):
serving with checks and hot reload is `operators.serving.ServedModel`.

    models/onnx/<name>/aliases.json            {"champion": "2", "challenger": "3",
                                                 "history": ["1", "2"]}
    models/onnx/<name>/<version>/manifest.json  the ModelManifest (sha256, golden, ...)
    models/onnx/<name>/<version>/<file>.onnx    the model it names

A version folder is written once (`register`) and never changed; the aliases file is
replaced with an atomic rename, so a reader sees the old or the new aliases, never half.
`history` is every champion in order: `rollback` goes back one.

A model reference (a setting such as `forecast.model`) is a model folder (served: its
`champion`, followed as it moves), `<folder>@<alias or version>` (followed, or pinned), or a
manifest file (pinned, as before the registry).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from novacron_ml.core.manifest import (
    REGISTRY,
    ModelManifest,
    read_manifest,
    resolve_model_path,
    sha256_of,
    write_manifest,
)

ALIASES_FILE = "aliases.json"
MANIFEST_FILE = "manifest.json"
ALIASES = ("champion", "challenger")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: the model folder and the alias followed (hot reload), or
    a pinned manifest (`folder` None: served as it is until the flow restarts)."""

    folder: Path | None
    alias: str = "champion"
    pinned: Path | None = None

    @property
    def name(self) -> str:
        if self.folder is not None:
            return self.folder.name
        assert self.pinned is not None
        return (
            self.pinned.stem
            if self.pinned.name != MANIFEST_FILE
            else self.pinned.parent.parent.name
        )

    def manifest_path(self) -> Path:
        """The manifest served now (the alias read from disk)."""
        if self.folder is None:
            assert self.pinned is not None
            return self.pinned
        return version_manifest(self.folder, resolve_version(self.folder, self.alias))

    def __str__(self) -> str:
        return str(self.pinned) if self.folder is None else f"{self.folder}@{self.alias}"


def parse_ref(ref: str | Path) -> ModelRef:
    """`models/onnx/lstm_forecaster` (its champion), `...@challenger`, `...@3` (a pinned
    version) or a manifest file; relative paths as `resolve_model_path` finds them."""
    text = str(ref)
    base, _, alias = text.partition("@")
    path = resolve_model_path(base)
    if path.is_dir():
        if not (path / ALIASES_FILE).is_file():
            raise ValueError(f"{path}: a folder without {ALIASES_FILE} is not a registry model")
        alias = alias or "champion"
        if alias not in ALIASES:  # a version: pinned
            return ModelRef(None, pinned=version_manifest(path, alias))
        return ModelRef(path, alias)
    if alias:
        raise ValueError(f"{text}: @{alias} names an alias or version of a model folder")
    if not path.is_file():
        raise ValueError(f"{path}: no such model folder or manifest")
    return ModelRef(None, pinned=path)


def version_manifest(folder: Path, version: str) -> Path:
    path = folder / version / MANIFEST_FILE
    if not path.is_file():
        raise ValueError(f"{folder.name}: no version {version} ({path} missing)")
    return path


def read_aliases(folder: Path) -> dict[str, object]:
    try:
        data = json.loads((folder / ALIASES_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{folder / ALIASES_FILE}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{folder / ALIASES_FILE}: not a JSON object")
    return data


def resolve_version(folder: Path, alias: str) -> str:
    version = read_aliases(folder).get(alias)
    if not isinstance(version, str):
        raise ValueError(f"{folder.name}: no {alias} (aliases: {folder / ALIASES_FILE})")
    return version


def write_aliases(folder: Path, aliases: dict[str, object]) -> None:
    """Replace the aliases file atomically (write a temporary file, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=".aliases.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(aliases, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from flows running as another user
        os.replace(tmp, folder / ALIASES_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions(folder: Path) -> list[str]:
    """The model's versions, oldest first (numeric names in number order)."""
    names = [p.name for p in folder.iterdir() if (p / MANIFEST_FILE).is_file()]
    return sorted(names, key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))


def models(registry: Path = REGISTRY) -> list[Path]:
    return sorted(p for p in registry.iterdir() if (p / ALIASES_FILE).is_file())


def register(
    registry: Path, onnx_file: Path, manifest: ModelManifest, *, champion: bool | None = None
) -> tuple[Path, str]:
    """Add a new version of `manifest.name` (the next number) from an exported ONNX file and
    its manifest (sha256 recomputed, version set); it becomes the champion when the model
    has none (or `champion` says so), else the challenger. Returns (manifest path, alias)."""
    folder = registry / manifest.name
    folder.mkdir(parents=True, exist_ok=True)
    existing = [int(v) for v in versions(folder) if v.isdigit()]
    version = str(max(existing, default=0) + 1)
    target = folder / version
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=folder))
    try:
        shutil.copyfile(onnx_file, staging / onnx_file.name)
        final = msgspec.structs.replace(
            manifest, version=version, file=onnx_file.name, sha256=sha256_of(onnx_file)
        )
        write_manifest(staging / MANIFEST_FILE, final)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from other users' flows
        os.rename(staging, target)  # a version appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    aliases = read_aliases(folder) if (folder / ALIASES_FILE).is_file() else {}
    make_champion = champion if champion is not None else "champion" not in aliases
    alias = "champion" if make_champion else "challenger"
    aliases[alias] = version
    if make_champion:
        aliases["history"] = [*_history(aliases), version]
    write_aliases(folder, aliases)
    return target / MANIFEST_FILE, alias


def _history(aliases: dict[str, object]) -> list[str]:
    history = aliases.get("history", [])
    return [str(v) for v in history] if isinstance(history, list) else []


def promote(folder: Path, version: str | None = None) -> tuple[str | None, str]:
    """Make `version` (default: the challenger) the champion; (old champion, new)."""
    aliases = read_aliases(folder)
    version = version or _str(aliases.get("challenger"))
    if version is None:
        raise ValueError(f"{folder.name}: no challenger to promote; name a version")
    version_manifest(folder, version)
    old = _str(aliases.get("champion"))
    aliases["champion"] = version
    aliases["history"] = [*_history(aliases), version]
    if aliases.get("challenger") == version:
        aliases.pop("challenger")
    write_aliases(folder, aliases)
    return old, version


def rollback(folder: Path) -> tuple[str, str]:
    """Move the champion back to the one before it (history); (from, to)."""
    aliases = read_aliases(folder)
    history = _history(aliases)
    current = _str(aliases.get("champion"))
    earlier = [v for v in history[:-1] if v != current]
    if current is None or not earlier:
        raise ValueError(f"{folder.name}: no earlier champion to roll back to")
    aliases["champion"] = earlier[-1]
    aliases["history"] = [*history, earlier[-1]]
    write_aliases(folder, aliases)
    return current, earlier[-1]


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def manifest_of(folder: Path, version_or_alias: str = "champion") -> ModelManifest:
    version = (
        resolve_version(folder, version_or_alias)
        if version_or_alias in ALIASES
        else version_or_alias
    )
    return read_manifest(version_manifest(folder, version))


def champion_manifest(name: str, registry: Path = REGISTRY) -> Path:
    """The champion's manifest path of a model in the registry (tests, benches, tools)."""
    folder = registry / name
    return version_manifest(folder, resolve_version(folder, "champion"))


@contextlib.contextmanager
def staging(registry: Path) -> Iterator[Path]:
    """A scratch folder inside the registry for an export (same file system, removed after):
    write the ONNX file there, then `register` it."""
    registry.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".staging.", dir=registry))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
