"""The detect flow's configuration: settings resolved once, before any step is built.

Every translation from `novacron_ml.core.settings` to an operator's own configuration lives
here, so steps receive finished objects and a bad model or setting fails the flow at build
time with its cause, not in the middle of a batch.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue, catalogue_for
from novacron_ml.core.features import FeatureConfig
from novacron_ml.core.manifest import resolve_model_path
from novacron_ml.core.registry import ALIASES_FILE, parse_ref
from novacron_ml.core.settings import Settings, TopicSettings
from operators.alerting.episodes import EpisodeConfig
from operators.alerting.suppression import Rule, rules_from_settings
from operators.detection.calibration import CalibrationConfig
from operators.detection.iforest import FAMILIES, IsolationForestTier, load_iforest
from operators.detection.load import LoadConfig
from operators.detection.novelty import NoveltyConfig
from operators.detection.river import RiverConfig
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import CombineConfig
from operators.forecast.forecaster import ForecastConfig, SeriesForecaster
from operators.forecast.model import load_forecaster
from operators.ingest.counters import CounterRates
from operators.ingest.parse import ParseLimits
from operators.serving import set_poll_s

LOG = logging.getLogger("novacron.config")


@dataclass(frozen=True)
class FlowConfig:
    """What the detect flow's steps are built from (`resolve(settings)`)."""

    catalogue: Catalogue
    """What each metric means (bad direction, type, counter); the settings' entries first."""
    parse_limits: ParseLimits
    shards: int
    features: FeatureConfig
    robust_z: RobustZConfig
    combine: CombineConfig
    rules: tuple[Rule, ...]
    episodes: EpisodeConfig
    topics: TopicSettings
    hourly_lateness_ms: int
    forecaster: SeriesForecaster | None = None
    """A fresh forecaster state (each shard starts from a copy), None when disabled."""
    model_path: str = ""
    """The forecaster's manifest; the ONNX session itself is per process, not state."""
    shadow: bool = False
    """Shadow-score the challenger (topics.forecasts_shadow set)."""
    iforest: IsolationForestTier | None = None

    def new_forecaster(self) -> SeriesForecaster | None:
        return copy.deepcopy(self.forecaster)

    def new_counter_rates(self) -> CounterRates:
        return CounterRates(self.catalogue, int(self.features.idle_ttl_s * 1000))


def resolve(settings: Settings) -> FlowConfig:
    """Every setting the flow uses, translated and checked once (models opened)."""
    set_poll_s(settings.models.poll_s)
    catalogue = catalogue_for(settings.catalogue)
    forecaster, model_path = forecaster_for(settings, catalogue)
    window = settings.window
    return FlowConfig(
        catalogue=catalogue,
        parse_limits=ParseLimits.from_settings(settings.ingest),
        shards=settings.features.shards,
        features=settings.feature_config(),
        robust_z=detector_config(settings),
        combine=combine_config(settings),
        rules=tuple(rules_from_settings(settings.suppression)),
        episodes=EpisodeConfig(settings.detector.resolve_after_windows),
        topics=settings.topics,
        hourly_lateness_ms=int(max(window.allowed_lateness_s, window.length_s) * 1000),
        forecaster=forecaster,
        model_path=model_path,
        shadow=shadow_for(settings),
        iforest=iforest_for(settings, catalogue),
    )


def shadow_for(settings: Settings) -> bool:
    """Shadow scoring is on when its topic is set; it needs the forecaster served from a
    registry folder (a pinned model has no challenger)."""
    if settings.topics.forecasts_shadow is None:
        return False
    if not settings.forecast.enabled:
        raise ValueError("topics.forecasts_shadow needs forecast.enabled: nothing to shadow")
    if parse_ref(settings.forecast.model).folder is None:
        raise ValueError(
            f"topics.forecasts_shadow: forecast.model {settings.forecast.model} is pinned (a "
            "manifest or a version); shadow scoring follows a registry folder's challenger"
        )
    return True


def detector_config(settings: Settings) -> RobustZConfig:
    d = settings.detector
    return RobustZConfig(
        z_threshold=d.z_threshold,
        history_windows=d.history_windows,
        min_history=d.min_history,
        relative_floor=d.relative_floor,
        adapt_after_windows=d.adapt_after_windows,
        warmup=d.warmup_widening,
    )


def combine_config(settings: Settings) -> CombineConfig:
    d = settings.detector
    return CombineConfig(
        tiers=tuple(d.probability_tiers),
        fire_probability=d.fire_probability,
        cooldown_windows=d.cooldown_windows,
        bigger_event=d.bigger_event,
        min_novelty=d.min_novelty,
        min_deviation=d.min_deviation,
        spread_threshold=d.spread_threshold or None,
        load_threshold=d.load_threshold or None,
        load=LoadConfig(
            proxy=d.load_proxy,
            proxy_gate=d.load_proxy_gate,
            proxy_vote=d.load_proxy_vote,
            min_r2=d.load_min_r2,
            relative_floor=d.relative_floor,
            runs=tuple(d.load_runs),
        ),
        resolve_after_windows=d.resolve_after_windows,
        hold_windows=d.hold_windows,
        rearm_after_windows=d.rearm_after_windows,
        novelty=NoveltyConfig(scales=tuple(d.novelty_scales), history=d.novelty_history),
        calibration=CalibrationConfig(history=d.calibration_history),
        river=RiverConfig() if d.river else None,
    )


def forecaster_for(
    settings: Settings, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> tuple[SeriesForecaster | None, str]:
    """The forecaster state and the model's manifest path, or (None, '') when disabled.

    Loads the model once here, so a missing or altered model fails the flow at build time
    with the manifest's path in the message."""
    fs = settings.forecast
    if not fs.enabled:
        return None, ""
    path = fs.model  # a registry folder (its champion, followed) or a manifest
    model = load_forecaster(path)
    step_ms = int((settings.window.slide_s or settings.window.length_s) * 1000)
    if abs(model.manifest.step_s * 1000 - step_ms) > 1:
        raise ValueError(
            f"{path}: the model forecasts {model.manifest.step_s:g} s steps but windows slide"
            f" every {step_ms / 1000:g} s"
        )
    config = ForecastConfig(
        step_ms=step_ms,
        residual_threshold=fs.residual_threshold,
        min_residuals=fs.min_residuals,
        blend=fs.blend,
        slo=dict(fs.slo),
        model_name=f"{model.manifest.name}@{model.manifest.version}",
        catalogue=catalogue,
    )
    return SeriesForecaster(config, model.input_len), path


def iforest_for(
    settings: Settings, catalogue: Catalogue = DEFAULT_CATALOGUE
) -> IsolationForestTier | None:
    """The Isolation Forest tier when `detector.iforest_models` names a directory with models;
    every model is opened (sha256, shapes and golden input checked) at build time. A directory
    without models is an error (the tier is off only when the setting is empty); a family
    without its own model is served by `iforest_generic`, and said so once here."""
    directory = settings.detector.iforest_models
    shadow = settings.topics.scores_shadow is not None
    if not directory:
        if shadow:
            raise ValueError(
                "topics.scores_shadow needs detector.iforest_models: no forest to shadow"
            )
        return None
    path = resolve_model_path(directory)
    refs = {  # registry folders (champions, followed) or, in a directory of exports, manifests
        p.name.removeprefix("iforest_"): str(p.resolve())
        for p in sorted(path.glob("iforest_*"))
        if (p / ALIASES_FILE).is_file()
    }
    for p in sorted(path.glob("iforest_*.json")):
        refs.setdefault(p.stem.removeprefix("iforest_"), str(p.resolve()))
    if not refs:
        raise ValueError(
            f"detector.iforest_models: {path} holds no iforest_* models; train them "
            "with `novacron-ml iforest-train`, or turn the tier off with iforest_models=''"
        )
    for ref in refs.values():  # a missing or altered model fails here, not mid-stream
        load_iforest(ref)
    families = set(refs)
    if "generic" not in families:
        raise ValueError(
            f"detector.iforest_models: {path} has no iforest_generic model, which serves every "
            "metric whose family has no model of its own"
        )
    missing = sorted(set(FAMILIES.values()) - families)
    if missing:
        LOG.warning(
            "iforest: no model for %s in %s; iforest_generic scores them", ", ".join(missing), path
        )
    if shadow and not any(Path(ref).is_dir() for ref in refs.values()):
        raise ValueError(
            f"topics.scores_shadow: {path} holds manifests, not registry folders; shadow "
            "scoring follows each folder's challenger"
        )
    return IsolationForestTier(str(path.resolve()), catalogue, shadow=shadow)
