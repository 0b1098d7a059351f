"""Hourly aggregates per (cluster, metric): the capacity planner's history.

Pure logic (no Bytewax). Input: the detect flow's closed feature windows of every host of one
(cluster, metric); output: one `HourlyAggregate` per event-time hour, emitted once the hour
can no longer change: every live host of the key has sent a window starting `lateness_ms` past
the hour's end (hosts run in different feature shards, whose output can be hours apart in
event time within one input batch), or at end of input. A host silent for `idle_ms` of event
time, while others go on, stops holding hours open; for the same reason nothing closes in the
first `idle_ms` of event time after a key's first window, while its hosts show up. The
cluster value of an hour is the mean over hosts of each host's sample-weighted mean in that
hour, so a host reporting more often does not weigh more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import split_series_key

HOUR_MS = 3_600_000


class HourlyAggregate(msgspec.Struct, frozen=True, kw_only=True):
    """One hour of one (cluster, metric); JSON on `metrics.hourly`, keyed `cluster/metric`."""

    cluster: str
    resource: str
    hour_start_ms: int
    mean: float
    """Mean over hosts of each host's mean over the hour."""
    max: float
    """Largest sample of any host in the hour."""
    hosts: int
    samples: int

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.resource}"


def hourly_key(window: FeatureWindow) -> str:
    cluster, _host, metric = split_series_key(window.series)
    return f"{cluster}/{metric}"


@dataclass
class _Hour:
    # host -> [sum of values, number of samples]
    hosts: dict[str, list[float]] = field(default_factory=dict)
    max: float = float("-inf")


@dataclass
class HourlyAggregator:
    """State of one (cluster, metric) key. Picklable (it is the Bytewax state)."""

    lateness_ms: int = 300_000
    idle_ms: int = 6 * HOUR_MS
    host_watermarks: dict[str, int] = field(default_factory=dict)
    """Latest window start per host."""
    cluster: str = ""
    resource: str = ""
    hours: dict[int, _Hour] = field(default_factory=dict)
    watermark_ms: int = 0
    """Latest window start seen for this key (any host)."""
    first_ms: int | None = None
    closed_before_ms: int = 0
    """Hours starting before this were emitted; later windows for them are counted as late."""
    late_windows: int = 0

    def add(self, window: FeatureWindow) -> list[HourlyAggregate]:
        """Fold one closed window in; return the hours it closes."""
        if not self.resource:
            self.cluster, _host, self.resource = split_series_key(window.series)
        count = window["count"]
        hour = window.start_ms - window.start_ms % HOUR_MS
        _cluster, host, _metric = split_series_key(window.series)
        if hour < self.closed_before_ms:
            self.late_windows += 1
        elif count > 0:
            state = self.hours.setdefault(hour, _Hour())
            acc = state.hosts.setdefault(host, [0.0, 0.0])
            acc[0] += window["mean"] * count
            acc[1] += count
            state.max = max(state.max, window["max"])
        self.watermark_ms = max(self.watermark_ms, window.start_ms)
        if self.first_ms is None:
            self.first_ms = window.start_ms
        marks = self.host_watermarks
        marks[host] = max(marks.get(host, window.start_ms), window.start_ms)
        if not self.hours or min(self.hours) + HOUR_MS > self.watermark_ms - self.lateness_ms:
            return []  # even the newest host has not passed the oldest open hour: no scan
        live = [m for m in marks.values() if m >= self.watermark_ms - self.idle_ms]
        for gone in [h for h, m in marks.items() if m < self.watermark_ms - 2 * self.idle_ms]:
            del marks[gone]
        if self.watermark_ms - self.first_ms < self.idle_ms:
            return []  # hosts are still showing up
        return self._close(min(live) - self.lateness_ms)

    def flush(self) -> list[HourlyAggregate]:
        """End of input: emit every hour still open."""
        return self._close(None)

    def _close(self, before_ms: int | None) -> list[HourlyAggregate]:
        out = []
        for hour in sorted(self.hours):
            if before_ms is not None and hour + HOUR_MS > before_ms:
                break
            state = self.hours.pop(hour)
            means = [s / n for s, n in state.hosts.values() if n > 0]
            out.append(
                HourlyAggregate(
                    cluster=self.cluster,
                    resource=self.resource,
                    hour_start_ms=hour,
                    mean=sum(means) / len(means),
                    max=state.max,
                    hosts=len(means),
                    samples=int(sum(n for _s, n in state.hosts.values())),
                )
            )
            self.closed_before_ms = max(self.closed_before_ms, hour + HOUR_MS)
        return out
