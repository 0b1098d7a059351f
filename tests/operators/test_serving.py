"""Models are checked before they are served: a model whose shapes do not fit the code that
feeds it, a manifest paired with another model's file, or a golden record the model does not
reproduce is refused when the flow is built, in one line naming the manifest and the command
that makes a model that fits (`operators.serving.open_session`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from dataflows.config import forecaster_for, iforest_for
from novacron_ml.core.manifest import REGISTRY, read_manifest, write_manifest
from novacron_ml.core.registry import MANIFEST_FILE, champion_manifest
from novacron_ml.core.settings import Settings
from operators.detection.iforest import OnnxIsolationForest
from operators.forecast.model import OnnxForecaster
from operators.tuning.policy import OnnxPolicy


def copy_model(tmp_path: Path, name: str) -> Path:
    source = champion_manifest(name)
    manifest = read_manifest(source)
    shutil.copy(source.parent / manifest.file, tmp_path / manifest.file)
    shutil.copy(source, tmp_path / f"{name}.json")
    return tmp_path / f"{name}.json"


def edit(path: Path, **fields: object) -> None:
    manifest = read_manifest(path)
    write_manifest(path, msgspec.structs.replace(manifest, **fields))


def test_the_committed_models_pass_every_check_and_carry_a_golden_record() -> None:
    from novacron_ml.core import metrics

    for path in sorted(REGISTRY.glob(f"*/*/{MANIFEST_FILE}")):
        manifest = read_manifest(path)
        assert manifest.golden is not None and len(manifest.golden.input) >= 2, path
        if manifest.kind == "lstm_forecaster":
            model: Any = OnnxForecaster(path)
        elif manifest.kind == "dqn_policy":
            model = OnnxPolicy(path)
        else:
            model = OnnxIsolationForest(path)
        assert model.session is not None
        served = metrics.MODEL_INFO.labels(
            name=manifest.name, kind=manifest.kind, version=manifest.version,
            sha256=manifest.sha256[:12],
        )  # fmt: skip
        assert served._value.get() == 1  # novacron_model_info names what is served


def test_a_changed_input_len_is_refused_at_build_not_at_the_first_batch(tmp_path: Path) -> None:
    path = copy_model(tmp_path, "lstm_forecaster")
    edit(path, input_len=36, golden=None)
    with pytest.raises(
        ValueError,
        match=re.escape("input window is [batch, 48, 3], the flow feeds [batch, 36, 3]; retrain"),
    ):
        OnnxForecaster(path)
    settings = Settings(forecast={"enabled": True, "model": str(path)})
    with pytest.raises(ValueError, match=r"lstm_forecaster\.json: input window"):
        forecaster_for(settings)


def test_a_changed_horizon_is_refused(tmp_path: Path) -> None:
    path = copy_model(tmp_path, "lstm_forecaster")
    edit(path, horizon=24, golden=None)
    with pytest.raises(
        ValueError, match=r"output forecast is \[batch, 12\], the flow reads \[batch, 24\]"
    ):
        OnnxForecaster(path)


def test_a_manifest_paired_with_another_models_file_fails_its_golden_input(tmp_path: Path) -> None:
    # Same shapes, same inputs, the sha256 of the file it now names: only the golden record
    # tells that the latency manifest serves the generic forest.
    latency = copy_model(tmp_path, "iforest_latency")
    generic = read_manifest(copy_model(tmp_path, "iforest_generic"))
    edit(latency, file=generic.file, sha256=generic.sha256)
    with pytest.raises(
        ValueError, match=r"golden input gives outputs up to \S+ away from the manifest's"
    ):
        OnnxIsolationForest(latency)


def test_a_golden_output_off_by_more_than_its_tolerance_is_refused(tmp_path: Path) -> None:
    path = copy_model(tmp_path, "lstm_forecaster")
    golden = read_manifest(path).golden
    assert golden is not None
    shifted = [[v + 10 * golden.atol for v in row] for row in golden.output]
    edit(path, golden=msgspec.structs.replace(golden, output=shifted))
    with pytest.raises(ValueError, match="not the model it was exported as"):
        OnnxForecaster(path)
    within = [[v + 0.5 * golden.atol for v in row] for row in golden.output]
    edit(path, golden=msgspec.structs.replace(golden, output=within))
    OnnxForecaster(path)


def test_without_a_golden_record_a_probe_checks_shape_and_finiteness(tmp_path: Path) -> None:
    path = copy_model(tmp_path, "iforest_generic")
    edit(path, golden=None)
    assert OnnxIsolationForest(path).raw_scores(np.zeros((3, 12), np.float32)).shape == (3,)


def test_a_file_that_is_not_onnx_is_one_line(tmp_path: Path) -> None:
    from novacron_ml.core.manifest import sha256_of

    path = copy_model(tmp_path, "iforest_generic")
    model = tmp_path / read_manifest(path).file
    model.write_bytes(b"not a model")
    edit(path, sha256=sha256_of(model))
    with pytest.raises(ValueError, match="ONNX Runtime cannot load it") as err:
        OnnxIsolationForest(path)
    assert "\n" not in str(err.value)


def test_a_configured_model_directory_without_models_is_an_error(tmp_path: Path) -> None:
    settings = Settings(detector={"iforest_models": str(tmp_path)})
    with pytest.raises(ValueError, match=r"holds no iforest_\* models.*iforest_models=''"):
        iforest_for(settings)
    assert iforest_for(Settings(detector={"iforest_models": ""})) is None  # off explicitly


def test_a_policy_with_another_state_layout_is_refused(tmp_path: Path) -> None:
    path = copy_model(tmp_path, "dqn_compression")
    edit(path, feature_order=["knob_hde_level"])
    with pytest.raises(ValueError, match="retrain with `novacron-ml tune-train`"):
        OnnxPolicy(path)
