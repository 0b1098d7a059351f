"""The model registry (models/onnx as folders of immutable versions with aliases) and hot
reload (`operators.serving.ServedModel`): a promoted version is checked and swapped in, a
rollback swaps back at once, and every kind of bad version is rejected while the current one
keeps serving."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest

from novacron_ml.app.models import diff_rows, list_rows, promote_checked
from novacron_ml.cli import main
from novacron_ml.core import metrics, registry
from novacron_ml.core.manifest import ModelManifest, read_manifest, write_manifest
from novacron_ml.core.metrics import counter_value
from operators.forecast.model import OnnxForecaster, same_shape
from operators.serving import ServedModel
from operators.tuning.policy import OnnxPolicy


def add_version(root: Path, name: str, onnx: bytes | None = None, **fields: object) -> str:
    """Register the committed champion of `name` again (or other ONNX bytes) as a new
    version of `name` in `root`; returns the version."""
    source = registry.champion_manifest(name)
    manifest = read_manifest(source)
    scratch = root / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    onnx_file = scratch / manifest.file
    onnx_file.write_bytes(
        onnx if onnx is not None else (source.parent / manifest.file).read_bytes()
    )
    path, _ = registry.register(root, onnx_file, msgspec.structs.replace(manifest, **fields))
    shutil.rmtree(scratch)
    return path.parent.name


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def served_policy(root: Path, clock: Clock) -> tuple[ServedModel[OnnxPolicy], list[Path]]:
    loads: list[Path] = []

    def load(path: Path) -> OnnxPolicy:
        loads.append(path)
        return OnnxPolicy(path, "compression")

    ref = registry.parse_ref(root / "dqn_compression")
    return ServedModel(ref, load, poll_s=10.0, clock=clock), loads


def test_versions_aliases_promote_rollback(tmp_path: Path) -> None:
    assert add_version(tmp_path, "dqn_compression") == "1"
    folder = tmp_path / "dqn_compression"
    assert registry.read_aliases(folder) == {"champion": "1", "history": ["1"]}
    assert add_version(tmp_path, "dqn_compression") == "2"  # a retrained model: challenger
    assert registry.read_aliases(folder)["challenger"] == "2"
    assert registry.parse_ref(folder).manifest_path() == folder / "1" / "manifest.json"
    assert registry.parse_ref(f"{folder}@challenger").manifest_path().parent.name == "2"
    pinned = registry.parse_ref(f"{folder}@2")
    assert pinned.folder is None and pinned.pinned == folder / "2" / "manifest.json"
    assert registry.promote(folder) == ("1", "2")
    aliases = registry.read_aliases(folder)
    assert aliases["champion"] == "2" and "challenger" not in aliases
    assert aliases["history"] == ["1", "2"]
    assert registry.rollback(folder) == ("2", "1")
    assert registry.read_aliases(folder)["champion"] == "1"
    assert not list(folder.glob(".aliases.*"))  # replaced by rename, nothing left behind
    # readable by flows that run as another user than the training job (compose, Kubernetes)
    assert (folder / "aliases.json").stat().st_mode & 0o777 == 0o644
    assert (folder / "2").stat().st_mode & 0o777 == 0o755
    assert read_manifest(folder / "2" / "manifest.json").version == "2"
    with pytest.raises(ValueError, match="no version 7"):
        registry.promote(folder, "7")
    with pytest.raises(ValueError, match="no such model folder or manifest"):
        registry.parse_ref(tmp_path / "nothing")
    rows = list_rows(tmp_path)
    assert rows[0][:5] == ["dqn_compression", "dqn_policy", "1, 2", "1", "-"]
    a, b = registry.manifest_of(folder, "1"), registry.manifest_of(folder, "2")
    assert [r[0] for r in diff_rows(a, b)] == ["version"]  # same file, same training


def test_a_promoted_version_is_swapped_in_and_a_rollback_is_instant(tmp_path: Path) -> None:
    add_version(tmp_path, "dqn_compression")
    clock = Clock()
    served, loads = served_policy(tmp_path, clock)
    first = served.current()
    assert served.label == "dqn_compression@1" and len(loads) == 1
    add_version(tmp_path, "dqn_compression", created_at="2026-12-06T03:00:00+00:00")
    folder = tmp_path / "dqn_compression"
    registry.promote(folder)
    assert served.current() is first  # not before the next poll
    clock.t = 10.0
    second = served.current()
    assert second is not first and served.label == "dqn_compression@2" and len(loads) == 2
    states = np.random.default_rng(0).uniform(0, 1, (3, len(first.state_names)))
    np.testing.assert_allclose(second.q_values(states), first.q_values(states))
    info = {
        s.labels["version"]
        for m in metrics.MODEL_INFO.collect()
        for s in m.samples
        if s.labels["name"] == "dqn_compression" and s.value == 1
    }
    assert "2" in info and "1" not in info  # the served version, not the replaced one
    registry.rollback(folder)
    clock.t = 20.0
    assert served.current() is first and len(loads) == 2  # still loaded: no reload


def bad_versions(tmp_path: Path) -> dict[str, str]:
    """Each kind of bad model, registered as a version of dqn_compression (v1 is good)."""
    add_version(tmp_path, "dqn_compression")
    good = registry.champion_manifest("dqn_compression").parent / "dqn_compression.onnx"
    raw = good.read_bytes()
    bad = {
        "corrupt": add_version(tmp_path, "dqn_compression", onnx=b"not an onnx model" * 64),
        "truncated": add_version(tmp_path, "dqn_compression", onnx=raw[: len(raw) // 2]),
    }
    forest = registry.champion_manifest("iforest_generic")
    bad["wrong shape"] = add_version(  # another model's file, its checksum in the manifest
        tmp_path, "dqn_compression", onnx=(forest.parent / "iforest_generic.onnx").read_bytes()
    )
    v = add_version(tmp_path, "dqn_compression")
    (tmp_path / "dqn_compression" / v / "dqn_compression.onnx").write_bytes(raw + b"\0")
    bad["checksum mismatch"] = v
    v = add_version(tmp_path, "dqn_compression")
    path = tmp_path / "dqn_compression" / v / "manifest.json"
    m = read_manifest(path)
    assert m.golden is not None
    golden = msgspec.structs.replace(m.golden, output=(np.asarray(m.golden.output) + 1).tolist())
    write_manifest(path, msgspec.structs.replace(m, golden=golden))
    bad["golden parity"] = v
    return bad


MESSAGES = {
    "corrupt": "ONNX Runtime cannot load it",
    "truncated": "ONNX Runtime cannot load it",
    "wrong shape": "the flow feeds",
    "checksum mismatch": "does not match the manifest",
    "golden parity": "golden input gives outputs",
}


def test_every_kind_of_bad_version_is_rejected_while_the_current_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = bad_versions(tmp_path)
    folder = tmp_path / "dqn_compression"
    clock = Clock()
    served, loads = served_policy(tmp_path, clock)
    good = served.current()
    for kind, version in bad.items():
        before = counter_value(metrics.MODEL_RELOADS, model="dqn_compression", outcome="rejected")
        # the CLI refuses to promote it: the alias does not move
        with pytest.raises(ValueError, match=MESSAGES[kind]):
            promote_checked(folder, version)
        assert registry.read_aliases(folder)["champion"] == "1"
        # moved by hand (or by another tool): the flow refuses it and keeps serving v1
        registry.promote(folder, version)
        clock.t += 10
        with caplog.at_level(logging.ERROR, logger="novacron.models"):
            assert served.current() is good, kind
        assert served.rejected[version] and MESSAGES[kind] in served.rejected[version]
        after = counter_value(metrics.MODEL_RELOADS, model="dqn_compression", outcome="rejected")
        assert after == before + 1
        assert f"version {version} rejected, dqn_compression@1 keeps serving" in caplog.text
        clock.t += 10
        served.current()  # versions are immutable: a rejected one is not tried again
        assert counter_value(metrics.MODEL_RELOADS, model="dqn_compression",
                             outcome="rejected") == after  # fmt: skip
        registry.rollback(folder)
    assert loads[0].parent.name == "1" and served.version == "1"


def test_a_forecaster_with_another_step_is_not_swapped_in(tmp_path: Path) -> None:
    add_version(tmp_path, "lstm_forecaster")
    add_version(tmp_path, "lstm_forecaster", step_s=30.0)  # fits the graph, not the histories
    clock = Clock()
    ref = registry.parse_ref(tmp_path / "lstm_forecaster")
    served = ServedModel(ref, OnnxForecaster, 1.0, same_shape, clock)
    registry.promote(tmp_path / "lstm_forecaster")
    clock.t = 1.0
    assert served.current().manifest.version == "1"
    assert "the flow's histories would not fit" in served.rejected["2"]


def test_the_models_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_version(tmp_path, "dqn_compression")
    add_version(tmp_path, "dqn_compression", created_at="2026-12-06T03:00:00+00:00")
    root = ["models", "--registry", str(tmp_path)]
    assert main([*root, "list"]) == 0
    assert "dqn_compression" in capsys.readouterr().out
    assert main([*root, "diff", "dqn_compression", "champion", "challenger"]) == 0
    out = capsys.readouterr().out
    assert "created_at" in out and "version" in out and "sha256" not in out
    assert main([*root, "promote", "dqn_compression"]) == 0
    assert "champion 1 -> 2" in capsys.readouterr().out
    assert main([*root, "show", "dqn_compression"]) == 0
    assert '"aliases": [\n    "champion"\n  ]' in capsys.readouterr().out
    assert main([*root, "rollback", "dqn_compression"]) == 0
    assert "champion 2 -> 1" in capsys.readouterr().out
    assert main([*root, "promote", "no_such_model"]) == 2
    assert "no model 'no_such_model'" in capsys.readouterr().err


def weak_forest(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """An Isolation Forest of 3 trees fitted on noise, as an ONNX file with a manifest in the
    committed forest's format (its own sha256 and golden record)."""
    sklearn = pytest.importorskip("sklearn.ensemble")
    from operators.detection.iforest import IFOREST_SIGNATURE
    from operators.serving import make_golden
    from training.iforest import export_onnx

    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, len(read_manifest(registry.champion_manifest("iforest_generic"))
                                .feature_order))).astype(np.float32)  # fmt: skip
    forest = sklearn.IsolationForest(n_estimators=3, max_samples=16, random_state=0).fit(x)
    path = export_onnx(forest, tmp_path / "iforest_latency.onnx")
    base = read_manifest(registry.champion_manifest("iforest_latency"))
    manifest = msgspec.structs.replace(
        base, golden=make_golden(path, IFOREST_SIGNATURE, x[:4]), created_at="weak"
    )
    return path, manifest


def test_promotion_refuses_a_worse_challenger_and_takes_a_better_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx_file, weak = weak_forest(tmp_path)
    worse = tmp_path / "worse"
    add_version(worse, "iforest_latency")
    registry.register(worse, onnx_file, weak)  # the challenger: 3 trees fitted on noise
    args = ["models", "--registry", str(worse), "compare", "iforest_latency", "--promote",
            "--hours", "3", "--json", str(tmp_path / "worse.json")]  # fmt: skip
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "not better" in out and "2 stays the challenger" in out
    assert registry.read_aliases(worse / "iforest_latency")["champion"] == "1"
    report = json.loads((tmp_path / "worse.json").read_text())
    assert report["challenger_score"] < report["champion_score"] and not report["better"]

    better = tmp_path / "better"  # the same two, the other way round
    registry.register(better, onnx_file, weak)
    add_version(better, "iforest_latency")
    args[2], args[-1] = str(better), str(tmp_path / "better.json")
    assert main(args) == 0
    assert "champion 1 -> 2" in capsys.readouterr().out
    assert registry.read_aliases(better / "iforest_latency")["champion"] == "2"
    report = json.loads((tmp_path / "better.json").read_text())
    assert report["better"] and report["statistic"]["difference_p05"] > 0


def test_an_identical_challenger_is_never_better(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    from training.compare import compare, sign_test_p

    add_version(tmp_path, "lstm_forecaster")
    add_version(tmp_path, "lstm_forecaster")
    folder = tmp_path / "lstm_forecaster"
    result = compare(folder / "1" / "manifest.json", folder / "2" / "manifest.json", hours=6)
    assert not result.better and result.statistic["ties"] == result.held_out["series"] > 0
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(10, 0) == pytest.approx(1 / 1024)
    assert sign_test_p(6, 4) > 0.05
