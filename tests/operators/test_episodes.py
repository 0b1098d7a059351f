"""Alert episodes: one id from the first alert to the `resolved` record that closes it."""

from __future__ import annotations

import numpy as np

from dataflows.steps import DetectShard, make_detect_step
from novacron_ml.core.features import N_FEATURES, FeatureWindow
from novacron_ml.core.schema import Alert
from operators.alerting.episodes import EpisodeConfig
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import CombineConfig

FEATURES = {"mean": 2, "count": 0}


def window(i: int, mean: float, series: str = "c/h/latency_p99_ms") -> FeatureWindow:
    f = np.zeros(N_FEATURES)
    f[FEATURES["mean"]] = mean
    f[FEATURES["count"]] = 12
    return FeatureWindow(series, i * 60_000, (i + 1) * 60_000, f)


def run(means: list[float], resolve_after: int = 3) -> list[Alert]:
    step = make_detect_step(
        RobustZConfig(min_history=5),
        combine=CombineConfig(river=None),
        episodes=EpisodeConfig(resolve_after),
    )
    shard, out = DetectShard(), []
    for i, m in enumerate(means):
        items = step(shard, [window(i, m)])
        out += [o for o in items if isinstance(o, Alert)]
    return out


def test_an_episode_opens_continues_and_resolves() -> None:
    rng = np.random.default_rng(0)
    normal = list(100 + rng.normal(0, 1, 20))
    out = run([*normal, 300.0, 310.0, 305.0, *normal[:3], *normal[3:6]])
    firing = [a for a in out if a.status == "firing"]
    resolved = [a for a in out if a.status == "resolved"]
    assert len(firing) == 3 and len(resolved) == 1
    assert len({a.episode_id for a in out}) == 1
    assert all(a.episode_start == firing[0].window_start for a in out)
    assert resolved[0].ends_at == firing[-1].window_end
    assert resolved[0].alert_id not in {a.alert_id for a in firing}


def test_an_episode_stays_open_while_windows_keep_alerting_or_are_too_few() -> None:
    rng = np.random.default_rng(1)
    normal = list(100 + rng.normal(0, 1, 20))
    out = run([*normal, 300.0, 100.0, 301.0, 100.0, 100.0], resolve_after=3)
    assert [a.status for a in out] == ["firing", "firing"]  # quiet 1, then 2: still open
    assert out[0].episode_id == out[1].episode_id


def test_a_later_anomaly_is_a_new_episode() -> None:
    rng = np.random.default_rng(2)
    normal = list(100 + rng.normal(0, 1, 20))
    out = run([*normal, 300.0, *normal[:4], 300.0, *normal[:4]], resolve_after=2)
    assert [a.status for a in out] == ["firing", "resolved", "firing", "resolved"]
    assert out[0].episode_id == out[1].episode_id != out[2].episode_id == out[3].episode_id
