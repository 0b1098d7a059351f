"""Replay a time range of a Kafka topic through the detect flow, for backtests.

Bytewax's Kafka source starts at an offset, not a time, and either tails or reads to the end.
`TimeRangeKafkaSource` starts every partition at `offsets_for_times(from)` and stops each
partition at its first record stamped after `to` (or at the end offset it saw at start), so a
replay reads exactly the records whose Kafka timestamps fall in the range. Producers should
stamp records with event time (`novacron-ml produce` does).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import Consumer, TopicPartition

from novacron_ml.evaluation import Evaluation, evaluate
from novacron_ml.nab import PROFILES, CorpusScore, score_corpus
from novacron_ml.plots import SeriesPlot
from novacron_ml.schema import (
    Alert,
    parse_rfc3339_ms,
    rfc3339_ms,
    series_key,
    split_series_key,
)
from novacron_ml.simulator import AnomalyLabel
from operators.features import FeatureWindow
from operators.series import WindowScore

Message = KafkaSourceMessage[bytes | None, bytes | None]


class ReplayError(ValueError):
    """A replay that cannot run: missing topic, empty or inverted range."""


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "novacron-replay",
            "enable.auto.commit": "false",
            "enable.partition.eof": "false",
        }
    )


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    """First offset with a timestamp >= from."""
    end: int
    """Offset after the last record that existed when the replay was planned."""


def plan(bootstrap: str, topic: str, from_ms: int, to_ms: int) -> list[PartitionRange]:
    """Offsets to read per partition; raises ReplayError with a one-line reason."""
    if from_ms > to_ms:
        raise ReplayError(f"--from {rfc3339_ms(from_ms)} is after --to {rfc3339_ms(to_ms)}")
    consumer = _consumer(bootstrap)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReplayError(f"topic {topic!r} does not exist on {bootstrap}")
        parts = sorted(meta.partitions)
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, from_ms) for p in parts], timeout=10
        )
        ranges = []
        for tp in found:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=10
            )
            start = tp.offset if tp.offset >= 0 else high
            ranges.append(PartitionRange(tp.partition, start, high))
        return ranges
    finally:
        consumer.close()


class RangePartition(StatefulSourcePartition[Message, int]):
    """Reads one partition from `part.start` until a record stamped after `to_ms` or the
    end offset planned; also usable outside a dataflow (`next_batch` until StopIteration)."""

    def __init__(
        self, bootstrap: str, topic: str, part: PartitionRange, to_ms: int, resume: int | None
    ) -> None:
        self._topic = topic
        self._part = part
        self._to_ms = to_ms
        self._next = part.start if resume is None else resume
        self._done = self._next >= part.end
        self._consumer = _consumer(bootstrap)
        if not self._done:
            self._consumer.assign([TopicPartition(topic, part.partition, self._next)])

    def next_batch(self) -> list[Message]:
        if self._done:
            raise StopIteration
        batch: list[Message] = []
        for msg in self._consumer.consume(1000, 0.5):
            if msg.error() is not None:
                continue
            offset = msg.offset() or 0
            _kind, ts = msg.timestamp()
            if ts > self._to_ms or offset >= self._part.end:
                self._done = True
                break
            key, value = msg.key(), msg.value()
            batch.append(
                KafkaSourceMessage(
                    key=key if isinstance(key, bytes) or key is None else str(key).encode(),
                    value=value if isinstance(value, bytes) or value is None else value.encode(),
                    topic=self._topic,
                    partition=self._part.partition,
                    offset=offset,
                    timestamp=(_kind, ts),
                )
            )
            self._next = offset + 1
            if self._next >= self._part.end:
                self._done = True
                break
        return batch

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class TimeRangeKafkaSource(FixedPartitionedSource[Message, int]):
    """Records of `topic` with Kafka timestamps in [from_ms, to_ms], partition by partition."""

    def __init__(self, bootstrap: str, topic: str, from_ms: int, to_ms: int) -> None:
        self._bootstrap, self._topic = bootstrap, topic
        self._to_ms = to_ms
        self._ranges = {str(r.partition): r for r in plan(bootstrap, topic, from_ms, to_ms)}

    @property
    def ranges(self) -> list[PartitionRange]:
        return list(self._ranges.values())

    def list_parts(self) -> list[str]:
        return list(self._ranges)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> RangePartition:
        return RangePartition(
            self._bootstrap, self._topic, self._ranges[for_part], self._to_ms, resume_state
        )


@dataclass
class ReplayReport:
    from_ms: int
    to_ms: int
    messages: int
    events: int
    dead_letters: Counter[str]
    alerts: list[Alert]
    evaluation: Evaluation | None = None
    delays_s: list[float] = field(default_factory=list)
    nab: list[CorpusScore] = field(default_factory=list)

    @property
    def median_delay_s(self) -> float | None:
        return statistics.median(self.delays_s) if self.delays_s else None

    def lines(self) -> list[str]:
        from novacron_ml.console import table

        out = [
            f"replayed {rfc3339_ms(self.from_ms)} .. {rfc3339_ms(self.to_ms)}: "
            f"{self.messages:,} messages, {self.events:,} valid events, "
            f"{sum(self.dead_letters.values()):,} dead letters, {len(self.alerts):,} alerts",
        ]
        if self.messages == 0:
            out.append("no records in this range: nothing was replayed")
            return out
        by = Counter((a.type, a.severity) for a in self.alerts)
        if by:
            rows = [[t, s, n] for (t, s), n in sorted(by.items())]
            out += ["", table(rows, ["type", "severity", "alerts"])]
        if self.evaluation is not None:
            ev = self.evaluation
            rows2 = [
                [
                    k,
                    s.alerts,
                    s.precision,
                    s.labels,
                    s.detected,
                    s.recall,
                    s.f1,
                ]
                for k, s in ev.by_type.items()
            ]
            out += [
                "",
                f"against {ev.labels} labelled anomalies in range: precision {ev.precision:.3f}, "
                f"recall {ev.recall:.3f}, F1 {ev.f1:.3f}, type accuracy {ev.type_accuracy:.3f}",
                table(
                    rows2, ["type", "alerts", "precision", "anomalies", "detected", "recall", "F1"]
                ),
            ]
            if self.median_delay_s is not None:
                out.append(
                    f"detection delay (first alert window end - anomaly start): median "
                    f"{self.median_delay_s:.0f} s, max {max(self.delays_s):.0f} s"
                )
        if self.nab:
            out.append(
                "NAB score over the replayed series (windows as rows, threshold swept): "
                + ", ".join(f"{c.profile} {c.score:.1f}" for c in self.nab)
            )
        return out


def labels_in_range(labels: list[AnomalyLabel], from_ms: int, to_ms: int) -> list[AnomalyLabel]:
    return [lb for lb in labels if lb.start_ms <= to_ms and lb.end_ms >= from_ms]


def detection_delays(alerts: list[Alert], labels: list[AnomalyLabel]) -> list[float]:
    """Seconds from each detected anomaly's start to the end of its first matching alert window."""
    delays = []
    for lb in labels:
        ends = [
            parse_rfc3339_ms(a.window_end)
            for a in alerts
            if a.host == lb.host
            and parse_rfc3339_ms(a.window_start) < lb.end_ms
            and lb.start_ms < parse_rfc3339_ms(a.window_end)
        ]
        if ends:
            delays.append(max(0.0, (min(ends) - lb.start_ms) / 1000))
    return delays


def report(
    from_ms: int,
    to_ms: int,
    messages: int,
    events: int,
    dead: Counter[str],
    alerts: list[Alert],
    labels: list[AnomalyLabel] | None,
    scores: list[WindowScore] | None = None,
) -> ReplayReport:
    result = ReplayReport(from_ms, to_ms, messages, events, dead, alerts)
    if labels is not None:
        scoped = labels_in_range(labels, from_ms, to_ms)
        result.evaluation = evaluate(alerts, scoped)
        result.delays_s = detection_delays(alerts, scoped)
        if scores and scoped:
            result.nab = nab_scores(scores, scoped)
    return result


def nab_scores(scores: list[WindowScore], labels: list[AnomalyLabel]) -> list[CorpusScore]:
    """NAB scores of a replay: each series' windows are rows, labels are its anomaly windows."""
    by_series: dict[str, list[WindowScore]] = {}
    for s in scores:
        by_series.setdefault(s.series, []).append(s)
    data = []
    for series, rows in sorted(by_series.items()):
        rows.sort(key=lambda r: r.start_ms)
        _cluster, host, metric = split_series_key(series)
        spans = []
        for lb in labels:
            if lb.host != host or metric not in lb.metrics:
                continue
            inside = [
                i for i, r in enumerate(rows) if r.start_ms < lb.end_ms and lb.start_ms < r.end_ms
            ]
            if inside:
                spans.append((inside[0], inside[-1]))
        data.append((series, [r.anomaly_score for r in rows], spans))
    return [score_corpus(data, profile) for profile in PROFILES]


def affected_plots(
    windows: list[FeatureWindow], alerts: list[Alert], labels: list[AnomalyLabel] | None
) -> list[SeriesPlot]:
    """One plot per series that alerted or carries a label, in series order."""
    by_series: dict[str, list[FeatureWindow]] = {}
    for w in windows:
        by_series.setdefault(w.series, []).append(w)
    wanted = {a.series for a in alerts}
    for lb in labels or ():
        wanted |= {series_key(lb.cluster, lb.host, m) for m in lb.metrics}
    plots = []
    for series in sorted(wanted & set(by_series)):
        ws = sorted(by_series[series], key=lambda w: w.start_ms)
        _cluster, host, metric = split_series_key(series)
        plots.append(
            SeriesPlot(
                series,
                [w.start_ms for w in ws],
                [w["mean"] for w in ws],
                [
                    (lb.start_ms, lb.end_ms, lb.type)
                    for lb in labels or ()
                    if lb.host == host and metric in lb.metrics
                ],
                [a for a in alerts if a.series == series],
            )
        )
    return plots
