"""Training series from a Kafka topic replay: the series the served forecaster sees in the flow.

Reads the records of a metrics topic whose Kafka timestamps lie in [from, to] (the replay's
own partition reader, `novacron_ml.core.kafka.RangeReader`), parses them with the flow's
parser (JSON, JSON arrays or line protocol; a bad record is counted by reason and skipped,
never fatal), keeps the events whose event time lies in the range, and averages every
(cluster, host, metric) over the flow's epoch-aligned windows of `window_s`. Edge windows
holding under half the usual number of samples are dropped; missing windows inside a series
are filled by linear interpolation with a note (the CSV loader's repair). Needs no torch:
`forecast-train --kafka-topic` uses it. `kafka_feature_windows` replays the features topic
(the flow's own feature vectors) for `iforest-train --kafka-topic`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from novacron_ml.core.deadletter import DeadLetter
from novacron_ml.core.features import FEATURE_NAMES, FEATURE_VERSION, FeatureWindow
from novacron_ml.core.kafka import RangeReader, plan
from novacron_ml.core.schema import MetricEvent, parse_rfc3339_ms, rfc3339_ms
from operators.ingest.parse import MessageParser, ParseLimits
from training.series_io import Series, regularise


@dataclass
class KafkaDataset:
    topic: str
    from_ms: int
    to_ms: int
    window_s: float
    series: list[Series] = field(default_factory=list)
    records: int = 0
    events: int = 0
    outside_range: int = 0
    """Valid events whose event time is outside [from, to] (a record's Kafka timestamp was
    inside): not used."""
    dead_letters: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """For the model manifest's training_data."""
        return {
            "topic": self.topic,
            "from": rfc3339_ms(self.from_ms),
            "to": rfc3339_ms(self.to_ms),
            "window_s": self.window_s,
            "records": self.records,
            "events": self.events,
            "outside_range": self.outside_range,
            "dead_letters": dict(sorted(self.dead_letters.items())),
            "series": len(self.series),
        }

    def line(self) -> str:
        bad = sum(self.dead_letters.values())
        reasons = ", ".join(f"{k} {v}" for k, v in self.dead_letters.most_common())
        return (
            f"{self.topic} [{rfc3339_ms(self.from_ms)} .. {rfc3339_ms(self.to_ms)}]: "
            f"{self.records:,} records, {self.events:,} events, {len(self.series)} series of "
            f"{self.window_s:g} s windows; {bad:,} bad records skipped"
            + (f" ({reasons})" if bad else "")
            + (f"; {self.outside_range:,} events outside the range" if self.outside_range else "")
        )


def kafka_series(
    bootstrap: str,
    topic: str,
    from_ms: int,
    to_ms: int,
    window_s: float,
    *,
    min_windows: int = 2,
    limits: ParseLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> KafkaDataset:
    """Window-mean series of every (cluster, host, metric) in the topic's [from, to] records.

    Raises `novacron_ml.replay.ReplayError` (one line) for a missing topic or an inverted
    range. Series with fewer than `min_windows` windows are left out with a note. `limits`
    defaults to no wall-clock age bounds (a replay is explicit about its range). `progress`
    gets (records read, records planned) after every batch.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    window_ms = round(window_s * 1000)
    parser = MessageParser(limits or ParseLimits(max_event_age_ms=0, max_event_future_ms=0))
    data = KafkaDataset(topic, from_ms, to_ms, window_s)
    slots: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for batch, read, planned in _batches(bootstrap, topic, from_ms, to_ms, data.notes):
        now = int(time.time() * 1000)
        for msg in batch:
            data.records += 1
            events: list[MetricEvent] = []
            dead: list[DeadLetter] = []
            source = f"{topic}:{msg.partition}:{msg.offset}"
            parser.parse_into(msg.value, msg.key, source, now, events, dead)
            for letter in dead:
                data.dead_letters[str(letter.reason)] += 1
            for ev in events:
                if not from_ms <= ev.ts_ms <= to_ms:
                    data.outside_range += 1
                    continue
                data.events += 1
                slots.setdefault(ev.series, []).append(ev.ts_ms // window_ms)
                values.setdefault(ev.series, []).append(ev.value)
        if progress is not None:
            progress(read, planned)
    for name in sorted(slots):
        series = _window_means(name, np.array(slots[name]), np.array(values[name]), window_s)
        if len(series) < min_windows:
            data.notes.append(f"{name}: {len(series)} windows (< {min_windows}): left out")
            continue
        data.notes.extend(series.warnings)
        data.series.append(series)
    return data


def _batches(
    bootstrap: str, topic: str, from_ms: int, to_ms: int, notes: list[str]
) -> Iterator[tuple[list[Any], int, int]]:
    """The records of `topic` whose Kafka timestamps lie in [from, to], partition by
    partition, in the replay's batches: (batch, records read so far, records planned).
    A partition whose range lost its start to the topic's retention gets a line in `notes`.
    Raises ReplayError (one line) for a missing topic or an inverted range."""
    parts = plan(bootstrap, topic, from_ms, to_ms)
    notes.extend(note for part in parts if (note := part.retention_note()))
    planned = sum(p.end - p.start for p in parts)
    read = 0
    for part in parts:
        reader = RangeReader(bootstrap, topic, part, to_ms, None)
        try:
            while True:
                try:
                    batch = reader.next_batch()
                except StopIteration:
                    break
                read += len(batch)
                yield batch, read, planned
        finally:
            reader.close()


def _window_means(name: str, slot: np.ndarray, value: np.ndarray, window_s: float) -> Series:
    uniq, inverse, counts = np.unique(slot, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=value) / counts
    # partial windows at the range's edges (or a host's start and stop) would bias the level
    keep = counts >= 0.5 * float(np.median(counts))
    uniq, means = uniq[keep], means[keep]
    t_s = uniq.astype(np.float64) * window_s
    warnings: list[str] = []
    if len(t_s) > 1:
        t_s, means, _step, note = regularise(name, t_s, means, window_s)
        if note:
            warnings.append(note)
    return Series(name, t_s, means, float(window_s), True, warnings)


@dataclass
class FeatureDataset:
    """Series windows replayed from the features topic (`topics.features`): the vectors the
    flow computed and its Isolation Forests score, as training data."""

    topic: str
    from_ms: int
    to_ms: int
    windows: list[FeatureWindow] = field(default_factory=list)
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Records not used, by reason: host (host-level records), bad_json, feature_version
    (another feature engine's vectors), missing_features, outside_range."""
    notes: list[str] = field(default_factory=list)
    """Partitions whose range lost its start to the topic's retention."""

    def summary(self) -> dict[str, object]:
        """For the model manifest's training_data."""
        return {
            "topic": self.topic,
            "from": rfc3339_ms(self.from_ms),
            "to": rfc3339_ms(self.to_ms),
            "records": self.records,
            "windows": len(self.windows),
            "series": len({w.series for w in self.windows}),
            "skipped": dict(sorted(self.skipped.items())),
            "feature_version": FEATURE_VERSION,
        }

    def line(self) -> str:
        skipped = ", ".join(f"{k} {v:,}" for k, v in self.skipped.most_common())
        return (
            f"{self.topic} [{rfc3339_ms(self.from_ms)} .. {rfc3339_ms(self.to_ms)}]: "
            f"{self.records:,} records, {len(self.windows):,} series windows of "
            f"{len({w.series for w in self.windows}):,} series"
            + (f"; not used: {skipped}" if skipped else "")
            + "".join(f"; {note}" for note in self.notes)
        )


def kafka_feature_windows(
    bootstrap: str,
    topic: str,
    from_ms: int,
    to_ms: int,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureDataset:
    """The series records of a features topic whose window starts in [from, to], as the
    `FeatureWindow`s the flow scored. Host records, records of another `feature_version` and
    malformed ones are counted by reason and skipped, never fatal. Raises ReplayError (one
    line) for a missing topic or an inverted range."""
    data = FeatureDataset(topic, from_ms, to_ms)
    for batch, read, planned in _batches(bootstrap, topic, from_ms, to_ms, data.notes):
        for msg in batch:
            data.records += 1
            reason = _feature_window(msg.value, from_ms, to_ms, data.windows)
            if reason is not None:
                data.skipped[reason] += 1
        if progress is not None:
            progress(read, planned)
    data.windows.sort(key=lambda w: (w.series, w.start_ms))
    return data


def _feature_window(
    value: bytes | None, from_ms: int, to_ms: int, out: list[FeatureWindow]
) -> str | None:
    """Append the record's window to `out`, or say why it is not used."""
    try:
        record = json.loads(value or b"")
        if not isinstance(record, dict):
            return "bad_json"
        if record.get("kind") != "series":
            return "host"
        if record.get("feature_version") != FEATURE_VERSION:
            return "feature_version"
        named = record["features"]
        start, end = (
            parse_rfc3339_ms(record["window_start"]),
            parse_rfc3339_ms(record["window_end"]),
        )
        series = str(record["series"])
    except (ValueError, KeyError, TypeError):
        return "bad_json"
    if not isinstance(named, dict) or any(n not in named for n in FEATURE_NAMES):
        return "missing_features"
    if not from_ms <= start <= to_ms:
        return "outside_range"
    vector = np.array(
        [np.nan if named[n] is None else float(named[n]) for n in FEATURE_NAMES], np.float64
    )
    out.append(FeatureWindow(series, start, end, vector))
    return None
