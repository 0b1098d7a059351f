"""Alert episodes: the alerts one series raises for one anomaly, from the first to `resolved`.

An episode opens with a series' first alert; every later alert of the series while it is
open carries the same `episode_id` (a hash of the series, the type and the first window, so a
replay gives the same ids). After `resolve_after_windows` scored windows in a row without an
alert the episode closes with one `resolved` record (status `resolved`, `ends_at` = the end
of its last anomalous window), so consumers of the alerts topic and the Alertmanager bridge
know it is over. A new type on an open episode's series closes it and opens another.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from novacron_ml.core.schema import Alert, alert_id_for, parse_rfc3339_ms

RESOLVED = "resolved"


@dataclass(frozen=True)
class EpisodeConfig:
    resolve_after_windows: int = 5
    """Scored windows in a row without an alert that end an episode."""


@dataclass
class Episode:
    episode_id: str
    start: str
    """Window start of the first alert."""
    last: Alert
    quiet: int = 0


def episode_id_for(alert: Alert) -> str:
    return alert_id_for(alert.series, parse_rfc3339_ms(alert.window_start), f"{alert.type}:episode")


def on_alert(episode: Episode | None, alert: Alert) -> tuple[Episode, list[Alert]]:
    """The episode after `alert`, and the records to publish: the alert with its episode
    (after the previous episode's `resolved` record when the type changed)."""
    out: list[Alert] = []
    if episode is not None and episode.last.type != alert.type:
        out.append(resolved_record(episode))
        episode = None
    if episode is None:
        episode = Episode(episode_id_for(alert), alert.window_start, alert)
    tagged = msgspec.structs.replace(
        alert, episode_id=episode.episode_id, episode_start=episode.start
    )
    episode.last = tagged
    episode.quiet = 0
    out.append(tagged)
    return episode, out


def on_quiet(episode: Episode | None, config: EpisodeConfig) -> tuple[Episode | None, Alert | None]:
    """A scored window without an alert: the episode, or None and its `resolved` record."""
    if episode is None:
        return None, None
    episode.quiet += 1
    if episode.quiet < config.resolve_after_windows:
        return episode, None
    return None, resolved_record(episode)


def resolved_record(episode: Episode) -> Alert:
    last = episode.last
    return msgspec.structs.replace(
        last,
        alert_id=alert_id_for(
            last.series, parse_rfc3339_ms(episode.start), f"{last.type}:{RESOLVED}"
        ),
        status=RESOLVED,
        ends_at=last.window_end,
    )
