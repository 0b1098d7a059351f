"""`novacron-ml train all`: every champion's producing command rerun into the registry, each
result a challenger (the champion keeps serving until a comparison promotes it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from novacron_ml.cli import main
from novacron_ml.core import registry
from novacron_ml.core.manifest import REGISTRY

pytest.importorskip("sklearn")


def test_train_all_registers_challengers_and_leaves_the_champions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in registry.models(REGISTRY):
        shutil.copytree(folder, tmp_path / folder.name)
    assert main(["train", "all", "--out", str(tmp_path), "--dry-run", "--kafka-topic", "m"]) == 0
    planned = capsys.readouterr().out.splitlines()
    # one run per distinct command: iforest-train makes the six families at once
    assert sum(line.startswith("[iforest]") for line in planned) == 1
    (forecaster,) = [line for line in planned if line.startswith("[forecaster]")]
    assert "--sim-hours 0 --kafka-topic m --from now-7d" in forecaster
    assert all(f"--out {tmp_path}" in line for line in planned)
    # the forests on the fleet's own feature windows (the features topic)
    argv = ["train", "all", "--out", str(tmp_path), "--dry-run", "--only", "iforest"]
    assert main([*argv, "--features-topic", "metrics.features", "--from", "now-3d"]) == 0
    (forests,) = capsys.readouterr().out.splitlines()
    assert forests.endswith("--kafka-topic metrics.features --from now-3d")
    champions = {f.name: registry.read_aliases(f)["champion"] for f in registry.models(tmp_path)}
    assert main(["train", "all", "--out", str(tmp_path), "--only", "iforest"]) == 0
    out = capsys.readouterr().out
    for folder in registry.models(tmp_path):
        aliases = registry.read_aliases(folder)
        assert aliases["champion"] == champions[folder.name]
        if folder.name.startswith("iforest_"):
            assert aliases["challenger"] == str(int(champions[folder.name]) + 1)
            assert f"{folder.name}" in out
        else:
            assert "challenger" not in aliases
    assert out.count("not compared") == 6
