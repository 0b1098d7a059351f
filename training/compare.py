"""Champion against challenger on a held-out stretch neither was trained on, with a stated
test (docs/REGISTRY.md#promotion): `novacron-ml models compare NAME [--promote]`.

- Forecasters (`lstm_forecaster`): both forecast every series of a fresh simulated fleet from
  rolling origins; the score per series is MASE (mean absolute error over the horizon / the
  in-sample one-step naive error of the history before the first origin). **Test: one-sided
  sign test over series at alpha = 0.05** — the challenger has the lower MASE on more series
  than chance allows (ties dropped), and the lower mean MASE.
- Isolation Forests (`isolation_forest`): both score every feature window of a fresh
  simulated fleet with injected anomalies (the family's windows; `generic`: all); the score
  is ROC AUC against the labels. **Test: paired bootstrap over windows (1,000 resamples,
  seeded)** — the 5th percentile of AUC(challenger) - AUC(champion) is above 0.

On the fleet's own traffic (`--live`, shadow scoring): forecasters by the forecasts both
published against the window means that followed (`compare_live`, the same sign test);
forests by both forests' scores of the alerts operators confirmed or rejected
(`compare_forests_live`, the same paired bootstrap on those windows).

A challenger that does not pass stays the challenger (the report says why); an identical one
never passes (no wins, or a zero difference).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.manifest import ModelManifest, read_manifest

HELD_OUT_START = "2026-03-02T00:00:00Z"
"""A month after the iforest's evaluation stretch and two after every training start."""
ALPHA = 0.05


@dataclass
class Comparison:
    model: str
    kind: str
    champion: str
    challenger: str
    metric: str
    lower_is_better: bool
    champion_score: float
    challenger_score: float
    test: str
    statistic: dict[str, float]
    better: bool
    held_out: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def verdict(self) -> str:
        if self.better:
            return f"the challenger ({self.challenger}) is better: {self.test} passed"
        return f"the challenger ({self.challenger}) is not better: {self.test} not passed"


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided exact binomial p of `wins` or more out of wins + losses at p = 1/2."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def _forecaster_mase(model: Any, series: list[Any], stride: int) -> np.ndarray:
    from operators.forecast.model import forecaster_inputs
    from training.metrics import naive_scale

    L, H = model.input_len, model.horizon
    out = []
    for s in series:
        y = s.values.astype(np.float64)
        origins = np.arange(L, len(y) - H + 1, stride)
        scale = naive_scale(y[:L], 1)
        if len(origins) == 0 or scale is None:
            out.append(np.nan)
            continue
        idx = origins[:, None] + np.arange(-L, 0)[None, :]
        x = forecaster_inputs(y[idx], s.t_s[idx])
        pred = model.predict(x).astype(np.float64)
        target = y[origins[:, None] + np.arange(H)[None, :]]
        out.append(float(np.mean(np.abs(target - pred)) / scale))
    return np.asarray(out)


def compare_forecasters(
    champion: Path, challenger: Path, hours: float = 12.0, hosts: int = 4, seed: int = 11,
    start: str = HELD_OUT_START, stride: int = 6,
) -> Comparison:  # fmt: skip
    from operators.forecast.model import OnnxForecaster
    from training.features import simulator_series

    a, b = OnnxForecaster(champion), OnnxForecaster(challenger)
    if a.manifest.step_s != b.manifest.step_s:
        raise ValueError("the versions forecast different steps: not comparable")
    series = simulator_series(hours, hosts, seed, a.manifest.step_s, start)
    ea, eb = _forecaster_mase(a, series, stride), _forecaster_mase(b, series, stride)
    ok = np.isfinite(ea) & np.isfinite(eb)
    ea, eb = ea[ok], eb[ok]
    wins, losses = int(np.sum(eb < ea)), int(np.sum(eb > ea))
    p = sign_test_p(wins, losses)
    better = p < ALPHA and float(eb.mean()) < float(ea.mean())
    return Comparison(
        model=a.manifest.name, kind=a.manifest.kind, champion=a.manifest.version,
        challenger=b.manifest.version, metric="MASE (mean over series)", lower_is_better=True,
        champion_score=float(ea.mean()), challenger_score=float(eb.mean()),
        test=f"one-sided sign test over {len(ea)} series, alpha {ALPHA}, and a lower mean",
        statistic={"wins": wins, "losses": losses, "ties": len(ea) - wins - losses, "p": p},
        better=better,
        held_out={"simulator": {"hours": hours, "hosts": hosts, "seed": seed, "start": start},
                  "series": len(ea), "stride_windows": stride},
    )  # fmt: skip


def compare_forests(
    champion: Path, challenger: Path, hours: float = 6.0, hosts: int = 4, seed: int = 11,
    start: str = HELD_OUT_START, resamples: int = 1000,
) -> Comparison:  # fmt: skip
    from operators.detection.iforest import OnnxIsolationForest, family_of
    from operators.features.scale_free import iforest_inputs
    from training.iforest import anomalous_mask, simulated_windows

    a, b = OnnxIsolationForest(champion), OnnxIsolationForest(challenger)
    family = a.manifest.name.removeprefix("iforest_")
    windows, labels = simulated_windows(hours, hosts, seed, start, 1.0)
    if family != "generic":
        windows = [w for w in windows if family_of(w.series) == family]
    positive = anomalous_mask(windows, labels)
    x = iforest_inputs(np.stack([w.features for w in windows]))
    sa, sb = a.raw_scores(x), b.raw_scores(x)
    try:
        auc_a, auc_b, low = _paired_auc_bootstrap(sa, sb, positive, resamples, seed)
    except ValueError:
        raise ValueError(f"the held-out stretch has no {family} windows of both classes") from None
    return Comparison(
        model=a.manifest.name, kind=a.manifest.kind, champion=a.manifest.version,
        challenger=b.manifest.version, metric="ROC AUC", lower_is_better=False,
        champion_score=auc_a, challenger_score=auc_b,
        test=f"paired bootstrap over {len(windows)} windows ({resamples} resamples): "
        "5th percentile of the AUC difference > 0",
        statistic={"difference_p05": low, "difference": auc_b - auc_a}, better=low > 0,
        held_out={"simulator": {"hours": hours, "hosts": hosts, "seed": seed, "start": start,
                                "anomalies_per_host_per_hour": 1.0},
                  "windows": len(windows), "anomalous": int(positive.sum())},
    )  # fmt: skip


def _paired_auc_bootstrap(
    sa: np.ndarray, sb: np.ndarray, positive: np.ndarray, resamples: int, seed: int
) -> tuple[float, float, float]:
    """(AUC champion, AUC challenger, 5th percentile of the resampled difference)."""
    from training.iforest import roc_auc

    auc_a, auc_b = roc_auc(sa, positive), roc_auc(sb, positive)
    if auc_a is None or auc_b is None:
        raise ValueError("no windows of both classes")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        i = rng.integers(0, len(sa), len(sa))
        da, db = roc_auc(sa[i], positive[i]), roc_auc(sb[i], positive[i])
        if da is not None and db is not None:
            diffs.append(db - da)
    return auc_a, auc_b, float(np.quantile(diffs, 0.05))


MIN_VERDICTS = 5
"""Confirmed and rejected alerts each that a live forest comparison needs."""


def compare_forests_live(
    bootstrap: str, model: str, shadow_topic: str, alerts_topic: str, feedback_topic: str,
    from_ms: int, to_ms: int, resamples: int = 1000, seed: int = 0,
) -> Comparison:  # fmt: skip
    """A forest's champion against its shadow-scored challenger on operator verdicts: the
    windows of alerts an operator confirmed (`true_positive`) or rejected (`false_positive`)
    on `topics.feedback`, found through the alerts topic, with both forests' raw scores of
    those windows from the shadow topic (`topics.scores_shadow`). Score: ROC AUC of telling
    confirmed from rejected alerts; **test: paired bootstrap over the labelled windows
    (1,000 resamples), 5th percentile of the AUC difference > 0**. Needs MIN_VERDICTS of
    each; the share of all shadow-scored windows each forest flags is reported beside."""
    import msgspec

    from novacron_ml.core.kafka import read_topic
    from novacron_ml.core.schema import Alert, parse_rfc3339_ms
    from operators.detection.iforest import ShadowScore

    scores: dict[tuple[str, int], ShadowScore] = {}
    for record in read_topic(bootstrap, shadow_topic):
        try:
            sc = msgspec.json.decode(record.value or b"", type=ShadowScore)
            end = parse_rfc3339_ms(sc.window_end)
        except (msgspec.DecodeError, ValueError):
            continue
        if sc.model.split("@")[0] == model and from_ms <= end <= to_ms:
            scores[(sc.series, end)] = sc
    if not scores:
        raise ValueError(
            f"no {model} window shadow-scored on {shadow_topic} in the range: is "
            "topics.scores_shadow set and a challenger registered?"
        )
    windows: dict[str, tuple[str, int]] = {}
    for record in read_topic(bootstrap, alerts_topic):
        try:
            alert = msgspec.json.decode(record.value or b"", type=Alert)
            windows[alert.alert_id] = (alert.series, parse_rfc3339_ms(alert.window_end))
        except (msgspec.DecodeError, ValueError):
            continue
    verdicts: dict[str, bool] = {}  # the last verdict per alert wins
    for record in read_topic(bootstrap, feedback_topic):
        try:
            fb = msgspec.json.decode(record.value or b"")
            verdicts[str(fb["alert_id"])] = fb["verdict"] == "true_positive"
        except (msgspec.DecodeError, KeyError, TypeError):
            continue
    labelled = [
        (scores[windows[a]], confirmed)
        for a, confirmed in verdicts.items()
        if a in windows and windows[a] in scores
    ]
    confirmed = sum(c for _, c in labelled)
    rejected = len(labelled) - confirmed
    if confirmed < MIN_VERDICTS or rejected < MIN_VERDICTS:
        raise ValueError(
            f"{confirmed} confirmed and {rejected} rejected {model} alerts have shadow scores "
            f"in the range; the test needs at least {MIN_VERDICTS} of each (operators' "
            "verdicts: novacron-ml alerts feedback); compare on the held-out stretch instead"
        )
    sa = np.array([sc.champion_score for sc, _ in labelled])
    sb = np.array([sc.score for sc, _ in labelled])
    positive = np.array([c for _, c in labelled])
    auc_a, auc_b, low = _paired_auc_bootstrap(sa, sb, positive, resamples, seed)
    every = list(scores.values())
    first = every[0]
    return Comparison(
        model=model, kind="isolation_forest", champion=first.champion.split("@")[-1],
        challenger=first.model.split("@")[-1], metric="ROC AUC on operator verdicts",
        lower_is_better=False, champion_score=auc_a, challenger_score=auc_b,
        test=f"paired bootstrap over {len(labelled)} alerts with verdicts ({resamples} "
        "resamples): 5th percentile of the AUC difference > 0",
        statistic={"difference_p05": low, "difference": auc_b - auc_a}, better=low > 0,
        held_out={"live": {"shadow": shadow_topic, "alerts": alerts_topic,
                           "feedback": feedback_topic, "from_ms": from_ms, "to_ms": to_ms},
                  "confirmed": confirmed, "rejected": rejected, "shadow_windows": len(every),
                  "flagged_share": {
                      "champion": float(np.mean([sc.champion_score > 0 for sc in every])),
                      "challenger": float(np.mean([sc.score > 0 for sc in every]))}},
    )  # fmt: skip


def compare(champion: Path, challenger: Path, **kw: Any) -> Comparison:
    """Champion against challenger with the test of their kind."""
    kind = read_manifest(champion).kind
    other: ModelManifest = read_manifest(challenger)
    if other.kind != kind:
        raise ValueError(f"a {kind} champion and a {other.kind} challenger are not comparable")
    if kind == "lstm_forecaster":
        return compare_forecasters(champion, challenger, **kw)
    if kind == "isolation_forest":
        return compare_forests(champion, challenger, **kw)
    raise ValueError(
        f"{kind}: no held-out comparison here; tuning policies are compared with "
        "`novacron-ml tune eval --tuners ... dqn --policy <manifest>`"
    )


def compare_live(
    bootstrap: str, metrics_topic: str, champion_topic: str, shadow_topic: str,
    from_ms: int, to_ms: int,
) -> Comparison:  # fmt: skip
    """Champion against the shadow-scored challenger on the fleet's own traffic: the
    forecasts both published for the same (series, window) in [from, to]
    (`topics.forecasts`, `topics.forecasts_shadow`) against the actual window means replayed
    from the metrics topic. Per series the mean absolute error over every step both
    forecast; **one-sided sign test over series at alpha = 0.05** and a lower mean relative
    error (MAE / the series' mean level)."""
    import msgspec

    from novacron_ml.core.kafka import read_topic
    from novacron_ml.core.schema import parse_rfc3339_ms
    from operators.forecast.forecaster import SeriesForecast
    from training.kafka_dataset import kafka_series

    def forecasts(topic: str) -> dict[tuple[str, int], SeriesForecast]:
        out = {}
        for record in read_topic(bootstrap, topic):
            f = msgspec.json.decode(record.value or b"", type=SeriesForecast)
            end = parse_rfc3339_ms(f.window_end)
            if from_ms <= end <= to_ms:
                out[(f.series, end)] = f
        return out

    champ, shadow = forecasts(champion_topic), forecasts(shadow_topic)
    both = sorted(set(champ) & set(shadow))
    if not both:
        raise ValueError(
            f"no window forecast on both {champion_topic} and {shadow_topic} in the range: is "
            "topics.forecasts_shadow set and a challenger registered?"
        )
    step_s = champ[both[0]].step_s
    horizon = max(len(champ[k].forecast) for k in both)
    actual = kafka_series(bootstrap, metrics_topic, from_ms,
                          to_ms + int(horizon * step_s * 1000), step_s)  # fmt: skip
    means = {
        s.name: dict(zip(np.round(s.t_s).astype(np.int64).tolist(), s.values.tolist(),
                         strict=True))
        for s in actual.series
    }  # fmt: skip
    errs: dict[str, list[tuple[float, float, float]]] = {}
    for series, end in both:
        truth = means.get(series)
        if truth is None:
            continue
        a, b = champ[(series, end)].forecast, shadow[(series, end)].forecast
        for i, (fa, fb) in enumerate(zip(a, b, strict=False)):
            y = truth.get(end // 1000 + round(i * step_s))
            if y is not None:
                errs.setdefault(series, []).append((abs(fa - y), abs(fb - y), abs(y)))
    if not errs:
        raise ValueError(f"no actual window means on {metrics_topic} for the forecast windows")
    per_series = [np.asarray(v, dtype=np.float64) for v in errs.values()]  # (n, 3) each
    level = np.array([max(float(v[:, 2].mean()), 1e-12) for v in per_series])
    ea = np.array([float(v[:, 0].mean()) for v in per_series]) / level
    eb = np.array([float(v[:, 1].mean()) for v in per_series]) / level
    wins, losses = int(np.sum(eb < ea)), int(np.sum(eb > ea))
    p = sign_test_p(wins, losses)
    label_a, label_b = champ[both[0]].model, shadow[both[0]].model
    return Comparison(
        model=label_a.split("@")[0], kind="lstm_forecaster",
        champion=label_a.split("@")[-1], challenger=label_b.split("@")[-1],
        metric="relative MAE (mean over series)", lower_is_better=True,
        champion_score=float(ea.mean()), challenger_score=float(eb.mean()),
        test=f"one-sided sign test over {len(ea)} series, alpha {ALPHA}, and a lower mean",
        statistic={"wins": wins, "losses": losses, "ties": len(ea) - wins - losses, "p": p},
        better=p < ALPHA and float(eb.mean()) < float(ea.mean()),
        held_out={"live": {"metrics": metrics_topic, "champion": champion_topic,
                           "shadow": shadow_topic, "from_ms": from_ms, "to_ms": to_ms},
                  "forecasts": len(both), "series": len(ea)},
    )  # fmt: skip
