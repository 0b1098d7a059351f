"""Hot swap under load: a running flow picks up a promoted version between batches, and its
outputs are exactly those of a run that never swapped (none dropped, none duplicated), only
labelled with the version that made them; the detect flow's forecaster and the tuning flow's
policy. The new version is the same weights registered again, so any difference in the
outputs would be the swap's doing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main

from dataflows.detect import build_flow as build_detect
from dataflows.encode import to_kafka_message
from dataflows.io import CallbackSink, MessageSource
from dataflows.tune import build_flow as build_tune
from dataflows.tune import tuner_context
from novacron_ml.app.tune_demo import ClosedLoop
from novacron_ml.core import registry
from novacron_ml.core.schema import Alert
from novacron_ml.core.settings import Settings, load_settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from novacron_ml.core.tuning import Recommendation
from operators.forecast.forecaster import SeriesForecast, ShadowForecast
from operators.serving import set_poll_s
from tests.operators.test_registry import add_version


@pytest.fixture(autouse=True)
def _poll_back() -> Iterator[None]:
    yield
    set_poll_s(10.0)  # the flows here poll every batch; later tests get the default back


def messages(sim: FleetSimulator, folder: Path | None, at: int) -> Iterator[tuple[bytes, bytes]]:
    """The simulator's messages; after `at` of them, the challenger is promoted (when a
    registry folder is given), as an operator would while the flow runs."""
    for i, message in enumerate(sim.messages("json")):
        if folder is not None and i == at:
            registry.promote(folder)
            time.sleep(0.01)  # past models.poll_s
        yield message


def labels_in_order(labels: list[str]) -> list[str]:
    return [k for k, _ in itertools.groupby(labels)]


def test_the_detect_flow_swaps_its_forecaster_mid_stream(tmp_path: Path) -> None:
    hours = 1.5
    start = int(time.time() // 60 * 60_000) - int(hours * 3_600_000)
    runs: dict[str, list[SeriesForecast]] = {}
    for run in ("steady", "swapped"):
        root = tmp_path / run
        add_version(root, "lstm_forecaster")
        add_version(root, "lstm_forecaster")  # the challenger
        sim = FleetSimulator(
            FleetConfig(hosts=2, clusters=1, duration_s=hours * 3600, seed=3, start_ms=start,
                        anomalies_per_host_per_hour=0.0)
        )  # fmt: skip
        settings = load_settings(
            forecast={"enabled": True, "model": str(root / "lstm_forecaster")},
            topics={"forecasts": "metrics.forecasts"},
            models={"poll_s": 0.001},
        )
        folder = root / "lstm_forecaster" if run == "swapped" else None
        at = sum(1 for _ in sim.messages("json")) * 2 // 3
        source = MessageSource(lambda s=sim, f=folder, a=at: messages(s, f, a), 200)
        out: list[Any] = []
        run_main(build_detect(settings, source, CallbackSink(out.extend), kafka_output=False))
        runs[run] = [o for o in out if isinstance(o, SeriesForecast)]
    steady, swapped = runs["steady"], runs["swapped"]
    assert len(steady) > 100
    key = [(f.series, f.window_end, f.forecast) for f in steady]
    assert [(f.series, f.window_end, f.forecast) for f in swapped] == key
    assert {f.model for f in steady} == {"lstm_forecaster@1"}
    by_series: dict[str, list[str]] = {}
    for f in swapped:
        by_series.setdefault(f.series, []).append(f.model)
    for models in by_series.values():  # every series moves once, from 1 to 2
        assert labels_in_order(models) == ["lstm_forecaster@1", "lstm_forecaster@2"]


@pytest.mark.parametrize(
    ("name", "setting", "other"),
    [("dqn_compression", "policy", "consensus_policy"), ("dqn_consensus", "consensus_policy", "")],
)
def test_the_tuning_flow_swaps_its_policy_mid_stream(
    tmp_path: Path, name: str, setting: str, other: str
) -> None:
    subsystem = name.removeprefix("dqn_")
    runs: dict[str, list[Recommendation]] = {}
    start = int(time.time() // 60 * 60_000) - 4 * 3_600_000  # one start for both runs
    for run in ("steady", "swapped"):
        root = tmp_path / run
        add_version(root, name)
        add_version(root, name)
        tune: dict[str, object] = {"mode": "apply", "canary_fraction": 1.0,
                                   setting: str(root / name)}  # fmt: skip
        if other:
            tune[other] = ""  # the other policy off: only this one's verdicts
        settings = Settings(tune=tune, models={"poll_s": 0.001})
        sim = FleetSimulator(
            FleetConfig(hosts=4, clusters=1, duration_s=3 * 3600, step_s=10, start_ms=start)
        )
        loop = ClosedLoop(sim, tuner_context(settings), 1.0)
        sim.hook = loop.hook
        folder = root / name if run == "swapped" else None
        source = MessageSource(lambda s=sim, f=folder: messages(s, f, 60_000), 500)
        out: list[Any] = []
        run_main(build_tune(settings, source, CallbackSink(out.extend), kafka_output=False))
        runs[run] = [o for o in out if isinstance(o, Recommendation) and o.subsystem == subsystem]
    steady, swapped = runs["steady"], runs["swapped"]

    def key(r: Recommendation) -> tuple[object, ...]:
        return (r.host, r.cluster, r.ts, r.knob, r.old, r.new, r.action, r.allowed, r.guardrail)

    assert len(steady) > (20 if subsystem == "compression" else 5)
    assert sorted(map(key, swapped)) == sorted(map(key, steady))
    assert {r.model for r in steady} == {f"{name}@1"}
    for who in {(r.host, r.cluster) for r in swapped}:
        models = [r.model for r in swapped if (r.host, r.cluster) == who]
        assert labels_in_order(models) in (
            [f"{name}@1", f"{name}@2"],
            [f"{name}@1"],  # no verdict after the swap
        )
    assert any(r.model == f"{name}@2" for r in swapped)


def test_a_challenger_is_shadow_scored_on_the_same_windows_without_alerting(
    tmp_path: Path,
) -> None:
    hours = 3.0  # past the forecaster's 48 windows of history and 60 residuals: alerts fire
    start = int(time.time() // 60 * 60_000) - int(hours * 3_600_000)
    outs: dict[str, list[Any]] = {}
    for run in ("alone", "shadowed"):
        root = tmp_path / run
        add_version(root, "lstm_forecaster")
        if run == "shadowed":  # a challenger: the same weights registered again
            add_version(root, "lstm_forecaster")
        sim = FleetSimulator(
            FleetConfig(hosts=2, clusters=1, duration_s=hours * 3600, seed=3, start_ms=start,
                        anomalies_per_host_per_hour=2.0)
        )  # fmt: skip
        settings = load_settings(
            forecast={"enabled": True, "model": str(root / "lstm_forecaster"),
                      "slo": {"latency_p99_ms": 50.0}},
            topics={"forecasts": "metrics.forecasts",
                    "forecasts_shadow": "metrics.forecasts.shadow"},
        )  # fmt: skip
        out: list[Any] = []
        source = MessageSource(lambda s=sim: s.messages("json"), 200)
        run_main(build_detect(settings, source, CallbackSink(out.extend), kafka_output=False))
        outs[run] = out
    alone, shadowed = outs["alone"], outs["shadowed"]
    assert not any(isinstance(o, ShadowForecast) for o in alone)  # no challenger: idle
    shadows = [o for o in shadowed if isinstance(o, ShadowForecast)]
    champion = [o for o in shadowed if type(o) is SeriesForecast]
    assert len(shadows) == len(champion) > 100
    assert [(s.series, s.window_end, s.forecast) for s in shadows] == [
        (f.series, f.window_end, f.forecast) for f in champion
    ]  # the same inputs: identical weights give identical forecasts
    assert {s.model for s in shadows} == {"lstm_forecaster@2"}
    assert {f.model for f in champion} == {"lstm_forecaster@1"}

    def alerts(items: list[Any]) -> list[str]:
        return sorted(a.alert_id for a in items if isinstance(a, Alert))

    assert alerts(shadowed) == alerts(alone) and alerts(alone)  # the shadow alerts nothing
    assert [f for f in alone if isinstance(f, SeriesForecast)] == champion
    # encoded, shadows go to their own topic
    encode = to_kafka_message(settings.topics)
    assert encode(shadows[0]).topic == "metrics.forecasts.shadow"
    assert encode(champion[0]).topic == "metrics.forecasts"


def test_shadow_scoring_needs_a_registry_folder(tmp_path: Path) -> None:
    add_version(tmp_path, "lstm_forecaster")
    pinned = str(tmp_path / "lstm_forecaster" / "1" / "manifest.json")
    settings = load_settings(forecast={"enabled": True, "model": pinned},
                             topics={"forecasts_shadow": "metrics.forecasts.shadow"})  # fmt: skip
    with pytest.raises(ValueError, match="is pinned"):
        build_detect(settings, MessageSource(lambda: iter([]), 10), CallbackSink(print))


def test_a_challenger_forest_scores_the_same_windows_beside_its_champion(tmp_path: Path) -> None:
    from operators.detection.iforest import ShadowScore

    root = tmp_path / "registry"
    for folder in registry.models(Path(__file__).resolve().parents[2] / "models" / "onnx"):
        if folder.name.startswith("iforest_"):
            add_version(root, folder.name)
    add_version(root, "iforest_latency")  # the latency family's challenger: same weights
    start = int(time.time() // 60 * 60_000) - 3_600_000
    outs: dict[str, list[Any]] = {}
    for run, topics in (("off", {}), ("on", {"scores_shadow": "metrics.scores.shadow"})):
        sim = FleetSimulator(FleetConfig(hosts=2, clusters=1, duration_s=3600, seed=4,
                                         start_ms=start))  # fmt: skip
        settings = load_settings(detector={"iforest_models": str(root)}, topics=topics)
        out: list[Any] = []
        source = MessageSource(lambda s=sim: s.messages("json"), 200)
        run_main(build_detect(settings, source, CallbackSink(out.extend), kafka_output=False))
        outs[run] = out
    assert not any(isinstance(o, ShadowScore) for o in outs["off"])
    shadows = [o for o in outs["on"] if isinstance(o, ShadowScore)]
    # every latency window (2 hosts x 2 latency metrics x ~60 windows), no other family's
    assert 200 <= len(shadows) <= 240
    assert {s.series.rsplit("/", 1)[1] for s in shadows} == {"latency_p50_ms", "latency_p99_ms"}
    assert {s.model for s in shadows} == {"iforest_latency@2"}
    assert {s.champion for s in shadows} == {"iforest_latency@1"}
    assert all(s.score == s.champion_score for s in shadows)  # the same weights
    assert sorted(a.alert_id for a in outs["on"] if isinstance(a, Alert)) == sorted(
        a.alert_id for a in outs["off"] if isinstance(a, Alert)
    )  # the shadow decides nothing
    encode = to_kafka_message(load_settings(topics={"scores_shadow": "s.shadow"}).topics)
    assert encode(shadows[0]).topic == "s.shadow"
    with pytest.raises(ValueError, match=r"needs detector\.iforest_models"):
        build_detect(load_settings(topics={"scores_shadow": "x"}),
                     MessageSource(lambda: iter([]), 10), CallbackSink(print))  # fmt: skip
