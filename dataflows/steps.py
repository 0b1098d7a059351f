"""The detect flow's steps: Bytewax logic around the pure operators, one class or factory each.

Nothing here decides anything: parsing, features, detection and suppression are operators'
(`operators/`); this module gives them Bytewax's shapes (batch functions, stateful logic
with picklable snapshots) and counts what passes (`novacron_ml.core.metrics`).
"""

from __future__ import annotations

import copy
import itertools
import logging
import pickle
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
from bytewax.connectors.kafka import KafkaError, KafkaSourceMessage
from bytewax.operators import StatefulBatchLogic, StatefulLogic

from dataflows.config import FlowConfig
from dataflows.io import Message, MessageBatch, stopping
from novacron_ml.core import metrics as obs
from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.columnar import Columns, pack, unpack
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.features import FeatureConfig, FeatureWindow, SeriesEvicted
from novacron_ml.core.kafka import CONSUMED
from novacron_ml.core.schema import Alert, MetricEvent, rfc3339_ms
from operators.aggregate.hourly import HourlyAggregate, HourlyAggregator
from operators.alerting.episodes import (
    RESOLVED,
    EpisodeConfig,
    on_alert,
    on_quiet,
    resolved_record,
)
from operators.alerting.suppression import Rule, suppression_for
from operators.detection.feedback import (
    MAX_PENDING,
    Feedback,
    PendingVerdicts,
    parse_feedback,
    unknown_series_letter,
)
from operators.detection.iforest import IsolationForestTier, ShadowScore
from operators.detection.robust_z import RobustZConfig
from operators.detection.series import (
    CombineConfig,
    SeriesState,
    Tiers,
    WindowScore,
    adopt_settings,
    apply_series_feedback,
    detect_batch,
    new_series_state,
    tiers_for,
)
from operators.features.cross import CrossMetricJoiner, HostWindow
from operators.features.engine import FeatureEngine, LateEvent
from operators.forecast.forecaster import SeriesForecast, SeriesForecaster
from operators.forecast.model import load_forecaster, load_shadow
from operators.ingest.counters import CounterRates
from operators.ingest.parse import MessageParser

LOG = logging.getLogger("novacron.recovery")

Output = Alert | DeadLetter
_JSON = msgspec.json.Encoder()


def source_of(msg: KafkaSourceMessage[Any, Any]) -> str:
    """Where a record came from, `topic:partition:offset`, for dead letters."""
    if msg.topic is None:
        return ""
    return f"{msg.topic}:{msg.partition}:{msg.offset}"


def kafka_error_dead_letter(err: KafkaError[Any, Any]) -> DeadLetter:
    """A consumer error as the dead letter of the record it came with (every input's)."""
    inner = err.msg
    return DeadLetter(
        Reason.KAFKA_ERROR, str(err.err), inner.value or b"", inner.key, source_of(inner)
    )


def parse_feedback_message(msg: Any) -> Feedback | DeadLetter:
    if isinstance(msg, KafkaError):
        return kafka_error_dead_letter(msg)
    return parse_feedback(msg.value, msg.key, source_of(msg))


ShardBatch = tuple[str, list[MetricEvent]]
"""Valid events of one input batch that belong to one feature shard, keyed by the shard."""


# fmt: off
SHARD_KEYS = (
    "0-44", "1-156", "2-218", "3-185", "4-57", "5-2", "6-72", "7-13",
    "8-50", "9-18", "10-57", "11-40", "12-6", "13-8", "14-110", "15-15",
    "16-10", "17-41", "18-76", "19-38", "20-54", "21-28", "22-83", "23-57",
    "24-68", "25-52", "26-29", "27-39", "28-6", "29-71", "30-92", "31-48",
    "32-17", "33-27", "34-21", "35-17", "36-10", "37-50", "38-76", "39-15",
    "40-203", "41-25", "42-28", "43-8", "44-51", "45-117", "46-164", "47-191",
    "48-100", "49-18", "50-52", "51-1", "52-50", "53-36", "54-147", "55-96",
    "56-64", "57-37", "58-30", "59-32", "60-119", "61-56", "62-96", "63-15",
)
# fmt: on
"""The Bytewax key of shard i (i < 64). Bytewax 0.21 sends a key to worker `hash(key) %
workers`, and the plain names "0".."3" (the default 4 shards) all hash to worker 1 of 2 and
3 of them to worker 3 of 4: a cluster did all feature and detection work on one worker.
Shard i's name is "i-j" with the first j for which Bytewax routes it to worker i of 64, found
by probing its routing with 64 workers; so shard i goes to worker i % W for every power of two
W up to 64, and shards that are a multiple of the workers spread evenly.
tests/flows/test_shard_routing.py checks that with a real cluster (a Bytewax upgrade that
changes the hash fails it). Shards past 64 are named by number (spread by chance)."""


def shard_key(index: int) -> str:
    return SHARD_KEYS[index] if index < len(SHARD_KEYS) else str(index)


class ShardRouter:
    """Groups events by shard, once per batch: Bytewax then routes one item per shard instead
    of one per event. All series of a host share a shard (cross-metric features need that)."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._cache: dict[str, str] = {}

    def shard_of(self, host: str) -> str:
        shard = self._cache.get(host)
        if shard is None:
            shard = shard_key(zlib.crc32(host.encode()) % self.shards)
            if len(self._cache) >= 100_000:  # hosts come and go (churn): bounded, not forever
                self._cache.clear()
            self._cache[host] = shard
        return shard

    def group(self, events: list[MetricEvent]) -> list[ShardBatch]:
        groups: dict[str, list[MetricEvent]] = {}
        cache = self._cache
        for e in events:
            shard = cache.get(e.host) or self.shard_of(e.host)
            group = groups.get(shard)
            if group is None:
                groups[shard] = [e]
            else:
                group.append(e)
        return list(groups.items())


def record_positions(batch: list[Any]) -> None:
    """The consumer's position per input partition (the last message of each in the batch),
    for the lag gauges (`LagMonitor`); a batch is not guaranteed to hold a single partition."""
    for item in batch:
        if type(item) is MessageBatch:
            stamp = item.timestamp
            CONSUMED[(item.topic, item.partition)] = (
                item.offsets[-1],
                stamp[1] if isinstance(stamp, tuple) else 0,
            )
    last = {
        (msg.topic, msg.partition): msg
        for msg in batch
        if type(msg) is not MessageBatch and type(msg) is not KafkaError and msg.offset is not None
    }
    for key, msg in last.items():
        stamp = msg.timestamp
        CONSUMED[key] = (msg.offset, stamp[1] if isinstance(stamp, tuple) else 0)


def make_parse_step(parser: MessageParser, router: ShardRouter) -> Any:
    """Batch step: raw Kafka messages, `MessageBatch`es or consumer errors to shard batches and
    dead letters."""

    def parse_messages(
        keys: Sequence[bytes | None],
        values: Sequence[bytes | None],
        source: Callable[[int], str],
        now: int,
        valid: list[MetricEvent],
        dead: list[DeadLetter],
        reasons: Counter[str],
    ) -> None:
        todo: Sequence[int] = range(len(values))
        refused = parser.parse_objects(values, now, valid)
        if refused is not None:  # one decode for the batch; refused ones alone
            todo = refused
        for i in todo:
            n_dead = len(dead)
            parser.parse_into(values[i], keys[i], "", now, valid, dead)
            if len(dead) > n_dead:  # where it came from, only for what goes to the DLQ
                where = source(i)
                for j in range(n_dead, len(dead)):
                    dead[j] = msgspec.structs.replace(dead[j], source=where)
                    reasons[dead[j].reason] += 1

    def parse_batch(batch: list[Any]) -> list[ShardBatch | DeadLetter]:
        with obs.PARSE_BATCH_SECONDS.time():
            valid: list[MetricEvent] = []
            out: list[ShardBatch | DeadLetter] = []
            dead: list[DeadLetter] = []
            reasons: Counter[str] = Counter()
            now = parser.now_ms()  # the wall clock, or a demo's simulated one
            singles: list[Message] = []
            n_messages = 0
            for item in batch:
                if type(item) is MessageBatch:
                    n_messages += len(item)
                    parse_messages(item.keys, item.values, item.source, now, valid, dead, reasons)
                elif isinstance(item, KafkaError):
                    dl = kafka_error_dead_letter(item)
                    out.append(dl)
                    reasons[dl.reason] += 1
                    n_messages += 1
                else:
                    singles.append(item)
            if singles:  # single messages (replay, tests): the same path, as one batch
                n_messages += len(singles)
                parse_messages(
                    [m.key for m in singles],
                    [m.value for m in singles],
                    lambda i: source_of(singles[i]),
                    now,
                    valid,
                    dead,
                    reasons,
                )
            out.extend(dead)
            record_positions(batch)
            if parser.skipped:
                for reason, n in parser.skipped.items():
                    obs.FIELDS_SKIPPED.labels(reason=reason).inc(n)
                parser.skipped.clear()
            obs.MESSAGES.inc(n_messages)
            obs.EVENTS.inc(len(valid))
            for reason, n in reasons.items():
                obs.DEAD_LETTERS.labels(reason=reason).inc(n)
            out.extend(router.group(valid))
            return out

    return parse_batch


def series_limit_dead_letter(event: MetricEvent, config: FeatureConfig) -> DeadLetter:
    return DeadLetter(
        Reason.SERIES_LIMIT,
        f"new series refused: a shard holds at most {config.max_series} series and a host "
        f"{config.max_series_per_host} (features.max_series, features.max_series_per_host)",
        _JSON.encode(event.to_wire()),
        event.series.encode(),
    )


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class FeatureState:
    """One shard's state in recovery snapshots: the engine and, if enabled, the host joiner."""

    engine: FeatureEngine
    joiner: CrossMetricJoiner | None = None
    forecaster: SeriesForecaster | None = None
    model_path: str = ""
    """The forecaster's manifest; the ONNX session itself is per process, not state."""
    shadow: bool = False
    """Shadow-score the registry's challenger on the same windows (topics.forecasts_shadow)."""
    iforest: IsolationForestTier | None = None
    """Scores each batch's closed windows (sessions are per process, not state)."""
    counters: CounterRates | None = None
    """Cumulative counters' last samples, to turn them into rates before the engine."""


FeatureOut = (
    FeatureWindow | HostWindow | DeadLetter | SeriesForecast | Alert | SeriesEvicted | ShadowScore
)


class FeatureLogic(StatefulBatchLogic[list[MetricEvent], FeatureOut, FeatureState | None]):
    """Bytewax glue around one shard's `FeatureEngine`; all logic lives in operators/."""

    NOTIFY_EVERY = timedelta(milliseconds=100)
    """How often system time closes windows of series that went quiet, when `exact_notify`
    is off: bounds the delay from a window's close (end + allowed lateness) to its scoring
    (bench_latency.py)."""
    NOTIFY_AT_MOST_MS = 1000
    """With `exact_notify`: the longest sleep (idle series are still evicted on time)."""
    exact_notify = True
    """Wake when the next window can close (`FeatureEngine.next_close_ms`), not on a cadence."""

    def __init__(self, state: FeatureState, snapshots: bool = True) -> None:
        self.state = state
        self.snapshots = snapshots

    def _emit(
        self, windows: list[FeatureWindow], late: list[LateEvent] | None = None
    ) -> list[FeatureOut]:
        shadow_scores: list[ShadowScore] = []
        if windows and self.state.iforest is not None:
            windows = self.state.iforest.score(windows)
            if self.state.iforest.shadow:
                shadow_scores = self.state.iforest.shadow_scores(windows)
        out: list[FeatureOut] = list(windows)
        out.extend(shadow_scores)
        if windows:
            obs.WINDOWS.inc(len(windows))
            obs.WINDOWED_EVENTS.inc(sum(w["count"] for w in windows))
            if self.state.joiner is not None:
                out.extend(self.state.joiner.add(windows))
            if self.state.forecaster is not None:
                model = load_forecaster(self.state.model_path)
                shadow = load_shadow(self.state.model_path) if self.state.shadow else None
                out.extend(self.state.forecaster.add(windows, model, shadow))
        engine = self.state.engine
        if engine.over_limit:
            out.extend(series_limit_dead_letter(e, engine.config) for e in engine.over_limit)
            obs.DEAD_LETTERS.labels(reason=Reason.SERIES_LIMIT.value).inc(len(engine.over_limit))
            engine.over_limit.clear()
        for item in late or ():
            out.append(
                DeadLetter(
                    Reason.LATE_EVENT,
                    f"event older than its series' next open window "
                    f"({rfc3339_ms(item.next_window_start_ms)})",
                    _JSON.encode(item.event.to_wire()),
                    item.series.encode(),
                )
            )
        if late:
            obs.DEAD_LETTERS.labels(reason=Reason.LATE_EVENT.value).inc(len(late))
        return out

    def on_batch(self, values: list[list[MetricEvent]]) -> tuple[list[FeatureOut], bool]:
        events = values[0] if len(values) == 1 else list(itertools.chain.from_iterable(values))
        counters = self.state.counters
        if counters is not None:
            events = counters.convert(events)
            if counters.skipped or counters.resets:  # exported, then counted afresh
                for reason, n in counters.skipped.items():
                    obs.COUNTER_SAMPLES_SKIPPED.labels(reason=reason).inc(n)
                obs.COUNTER_RESETS.inc(counters.resets)
                counters.skipped.clear()
                counters.resets = 0
        windows, late = self.state.engine.ingest(events, _wall_ms())
        return self._emit(windows, late), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[FeatureOut], bool]:
        engine = self.state.engine
        evicted = engine.evicted
        out = self._emit(engine.advance(_wall_ms()))
        if engine.evicted > evicted:
            obs.SERIES_EVICTED.inc(engine.evicted - evicted)
        if engine.evicted_series:  # after their last windows: the detect step drops them
            forecaster = self.state.forecaster
            for name in engine.evicted_series:  # and the forecaster's history, here
                if forecaster is not None:
                    forecaster.series.pop(name, None)
            out.extend(SeriesEvicted(name) for name in engine.evicted_series)
            engine.evicted_series.clear()
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[FeatureOut], bool]:
        if stopping():  # stopped by a signal: open windows stay open for the restart
            return [], StatefulBatchLogic.RETAIN
        return self._emit(self.state.engine.flush()), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        engine = self.state.engine
        if engine.n_series == 0:
            return None
        if not self.exact_notify:
            return datetime.now(UTC) + self.NOTIFY_EVERY
        now = _wall_ms()
        due = engine.next_close_ms()
        wake = now + self.NOTIFY_AT_MOST_MS if due is None else due
        # at least 1 ms ahead (never a busy loop), at most NOTIFY_AT_MOST_MS
        wake = min(max(wake, now + 1), now + self.NOTIFY_AT_MOST_MS)
        return datetime.fromtimestamp(wake / 1000, UTC)

    def snapshot(self) -> FeatureState | None:
        # Bytewax asks every epoch, recovery or not; without it nothing reads the copy
        return copy.deepcopy(self.state) if self.snapshots else None


def count_dead_letter(item: Any) -> DeadLetter:
    assert isinstance(item, DeadLetter)
    obs.DEAD_LETTERS.labels(reason=item.reason.value).inc()
    return item


def make_feature_builder(config: FlowConfig, snapshots: bool = True) -> Any:
    """`snapshots` false: the run keeps no recovery state, so the epochs' snapshots are
    skipped (`build_flow`'s `recovery`)."""
    publish = config.topics.features is not None

    def build(resume: FeatureState | None) -> FeatureLogic:
        if resume is None:
            joiner = CrossMetricJoiner(config.features.window_ms) if publish else None
            resume = FeatureState(
                FeatureEngine(config.features),
                joiner,
                config.new_forecaster(),
                config.model_path,
                config.shadow,
                config.iforest,
                config.new_counter_rates(),
            )
        else:  # the settings of this run decide, not the snapshot's
            resume.iforest = config.iforest
            resume.shadow = config.shadow
            if resume.counters is None:
                resume.counters = config.new_counter_rates()
            else:
                resume.counters.use(config.catalogue)
        return FeatureLogic(resume, snapshots)

    return build


def count_and_suppress(alert: Alert, rules: Sequence[Rule]) -> Alert:
    """Count a new alert and mark it suppressed if a maintenance window or silence matches
    (a `resolved` record is marked like its episode's alerts, and counted apart)."""
    if alert.status == RESOLVED:
        obs.EPISODES_RESOLVED.labels(type=alert.type).inc()
    else:
        obs.ALERTS.labels(type=alert.type, severity=alert.severity).inc()
    reason = suppression_for(alert, rules)
    if reason is None:
        return alert
    obs.ALERTS_SUPPRESSED.labels(kind=reason.split(":", 1)[0]).inc()
    return msgspec.structs.replace(alert, suppressed_by=reason)


DetectIn = FeatureWindow | Feedback | SeriesEvicted
DetectOut = Output | WindowScore


@dataclass
class DetectShard:
    """One shard's detection state: every live series' `SeriesState`, and the verdicts
    waiting for series that have none yet (`PendingVerdicts`)."""

    series: dict[str, SeriesState] = field(default_factory=dict)
    pending: dict[str, PendingVerdicts] = field(default_factory=dict)
    proxies: dict[str, str] = field(default_factory=dict)
    """Load proxies whose key has more tags than detector.load_proxy names, by the key the
    setting gives them (`LoadResidualDetector.proxy_key`); rebuilt from `series`, not
    pickled."""

    def __len__(self) -> int:
        return len(self.series) + len(self.pending)

    def proxy_state(self, key: str) -> SeriesState | None:
        """A host's load proxy by the key its other series look it up under (`proxy_key`)."""
        state = self.series.get(key)
        if state is None and self.proxies:
            alias = self.proxies.get(key)
            state = self.series.get(alias) if alias is not None else None
        return state

    def add(self, key: str, state: SeriesState) -> None:
        """A new series' state (and, if it is a load proxy named with more tags, its alias)."""
        self.series[key] = state
        load = state.load
        if load is not None and load.is_proxy and load.proxy_key != key:
            self.proxies.setdefault(load.proxy_key, key)

    def remove(self, key: str) -> SeriesState | None:
        state = self.series.pop(key, None)
        load = state.load if state is not None else None
        if load is not None and self.proxies.get(load.proxy_key) == key:
            del self.proxies[load.proxy_key]
        return state

    def adopt(self, tiers: Tiers, combine: CombineConfig) -> Counter[str]:
        """This run's detection settings for every series restored from a snapshot
        (`adopt_settings`): per part changed, in how many series."""
        changed: Counter[str] = Counter()
        for key, state in self.series.items():
            changed.update(adopt_settings(state, key, tiers, combine))
        if changed["load_residual"]:
            self._index_proxies()
        return changed

    def _index_proxies(self) -> None:
        self.proxies = {}
        for key, state in self.series.items():
            load = state.load
            if load is not None and load.is_proxy and load.proxy_key != key:
                self.proxies.setdefault(load.proxy_key, key)

    def __getstate__(self) -> tuple[object, ...]:
        """Pickled with the series' states as columns (`novacron_ml.core.columnar`: each
        field of every state side by side, the rings stacked into one block per field),
        cheaper to take and to restore than state by state (docs/BENCHMARKS.md);
        `ShardSnapshot` is the same without a second copy of the blocks."""
        return (_COLUMNS, list(self.series), pack(list(self.series.values())), self.pending)

    def __setstate__(self, state: dict[str, Any] | tuple[object, ...]) -> None:
        if isinstance(state, dict):  # pickled state by state (before stop 37): its fields
            self.__dict__.update(state)
            self._index_proxies()
            return
        if state[0] != _COLUMNS:
            raise ValueError(f"unknown detect shard snapshot format {state[0]!r}")
        _, names, columns, pending = state
        self.series = dict(zip(names, unpack(columns), strict=True))  # type: ignore[call-overload, arg-type]
        self.pending = pending  # type: ignore[assignment]
        self._index_proxies()


@dataclass(frozen=True)
class ShardSnapshot:
    """A detect shard as `DetectLogic.snapshot` hands it to Bytewax: everything but the
    stacked rings pickled at once (`state`: nothing done to the shard later reaches it), and
    the stacked rings as they are (`blocks`: fresh arrays nothing else holds). Bytewax pickles
    both when it writes the snapshot; pickling the blocks into bytes here as well copied every
    ring a second time (17 µs a series at 10,000 series, bench/bench_detect_step.py)."""

    state: bytes
    blocks: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, shard: DetectShard) -> ShardSnapshot:
        tag, names, columns, pending = shard.__getstate__()
        assert isinstance(columns, Columns)
        layout = (tag, names, columns.layout, pending)
        return cls(pickle.dumps(layout, protocol=pickle.HIGHEST_PROTOCOL), tuple(columns.blocks))

    def restore(self) -> DetectShard:
        tag, names, layout, pending = pickle.loads(self.state)
        shard = DetectShard.__new__(DetectShard)
        shard.__setstate__((tag, names, Columns(layout, list(self.blocks)), pending))
        return shard


_COLUMNS = "columns-1"
"""The format tag of a `DetectShard` snapshot pickled as columns."""


def in_rounds(items: Sequence[DetectIn]) -> list[list[DetectIn]]:
    """Split a batch into rounds holding at most one item per series, each series' items in
    their order (its k-th item in round k): the windows of one round are scored together."""
    seen: dict[str, int] = {}
    rounds: list[list[DetectIn]] = []
    for item in items:
        key = item.series
        k = seen.get(key, 0)
        seen[key] = k + 1
        if k == len(rounds):
            rounds.append([item])
        else:
            rounds[k].append(item)
    return rounds


def make_detect_step(
    config: RobustZConfig,
    emit_scores: bool = False,
    rules: Sequence[Rule] = (),
    combine: CombineConfig | None = None,
    catalogue: Catalogue = DEFAULT_CATALOGUE,
    episodes: EpisodeConfig | None = None,
    lateness_ms: int = 10_000,
) -> Callable[[DetectShard, Sequence[DetectIn]], list[DetectOut]]:
    """The detect step over a batch of a shard's items (windows, verdicts, evictions): each
    round of windows (`in_rounds`) is scored together across series
    (`operators.detection.series.detect_batch`), then becomes alert records through the
    series' episodes. `lateness_ms`: window.allowed_lateness_s, for the detection latency
    after window close."""
    active_rules = rules
    tiers = tiers_for(config, combine or CombineConfig(), catalogue)
    episode_config = episodes or EpisodeConfig()
    latency = obs.DETECTION_LATENCY

    def evict(shard: DetectShard, item: SeriesEvicted) -> list[DetectOut]:
        # idle past features.idle_ttl_s: an open episode ends here, then the state goes
        pending = shard.pending.pop(item.series, None)
        if pending is not None:
            return expire_pending(pending, "the series was evicted")
        state = shard.remove(item.series)
        if state is None or state.episode is None:
            return []
        return [count_and_suppress(resolved_record(state.episode), active_rules)]

    def verdict(shard: DetectShard, item: Feedback) -> list[DetectOut]:
        state = shard.series.get(item.series)
        if state is None:
            pending, out = wait_for_series(shard.pending.get(item.series), item)
            shard.pending[item.series] = pending
            return out
        apply_series_feedback(state, item)
        obs.FEEDBACK.labels(verdict=item.verdict.value).inc()
        return []

    def state_for(shard: DetectShard, window: FeatureWindow) -> SeriesState:
        state = shard.series.get(window.series)
        if state is None:
            pending = shard.pending.pop(window.series, None)
            state = new_series_state(window.series, config, combine, tiers)
            shard.add(window.series, state)
            for waiting in pending.verdicts if pending is not None else ():
                apply_series_feedback(state, waiting)  # replayed before its first window
                obs.FEEDBACK.labels(verdict=waiting.verdict.value).inc()
        return state

    def detect(shard: DetectShard, items: Sequence[DetectIn]) -> list[DetectOut]:
        out: list[DetectOut] = []
        for batch in in_rounds(items) if len(items) > 1 else [items]:
            windows: list[FeatureWindow] = []
            for item in batch:
                if isinstance(item, FeatureWindow):
                    windows.append(item)
                elif isinstance(item, SeriesEvicted):
                    out.extend(evict(shard, item))
                else:
                    out.extend(verdict(shard, item))
            if not windows:
                continue
            states = [state_for(shard, w) for w in windows]
            results = detect_batch(states, windows, tiers, shard.proxy_state)
            now_ms = time.time() * 1000
            for state, window, result in zip(states, windows, results, strict=True):
                late_ms = now_ms - window.end_ms - lateness_ms
                if late_ms < 3_600_000:  # a live window (not a replay): its latency after close
                    latency.observe(max(late_ms, 0.0) / 1000)
                if isinstance(result, DeadLetter):
                    obs.DEAD_LETTERS.labels(reason=result.reason.value).inc()
                    out.append(result)
                    continue
                if result is not None:
                    state.episode, records = on_alert(state.episode, result)
                else:
                    state.episode, resolved = on_quiet(state.episode, episode_config)
                    records = [resolved] if resolved is not None else []
                out.extend(count_and_suppress(r, active_rules) for r in records)
                if emit_scores:
                    out.append(
                        WindowScore(
                            window.series,
                            window.start_ms,
                            window.end_ms,
                            state.last_score,
                            result is not None,
                            result is not None and state.opened,
                        )
                    )
        return out

    return detect


def wait_for_series(
    pending: PendingVerdicts | None, feedback: Feedback
) -> tuple[PendingVerdicts, list[DetectOut]]:
    """Keep a verdict for a series with no state yet (`PendingVerdicts`), or dead-letter it when
    `MAX_PENDING` already wait."""
    pending = pending or PendingVerdicts(since_s=time.time())
    if len(pending.verdicts) >= MAX_PENDING:
        letter = unknown_series_letter(feedback, f"{MAX_PENDING} verdicts already wait for it")
        obs.DEAD_LETTERS.labels(reason=letter.reason.value).inc()
        return pending, [letter]
    pending.verdicts.append(feedback)
    return pending, []


def expire_pending(pending: PendingVerdicts, why: str) -> list[DetectOut]:
    letters = [unknown_series_letter(v, why) for v in pending.verdicts]
    for letter in letters:
        obs.DEAD_LETTERS.labels(reason=letter.reason.value).inc()
    return list(letters)


class DetectLogic(StatefulBatchLogic[DetectIn, DetectOut, ShardSnapshot | None]):
    """One shard's detection (`DetectShard`) around `make_detect_step`'s step: Bytewax hands
    it every item of the shard in a batch at once, so the windows closing together are
    scored together across series.

    Snapshots are a `ShardSnapshot` (one bytes object and a dozen stacked arrays), not a deep
    copy: a few large allocations, where deep copies of many small objects every epoch set
    off full garbage-collector passes (210-340 ms with River's trees; the tail of the live
    latency, bench_latency)."""

    def __init__(
        self, step: Any, state: DetectShard, pending_ttl_s: float, snapshots: bool = True
    ) -> None:
        self.step = step
        self.state = state
        self.pending_ttl_s = pending_ttl_s
        self.snapshots = snapshots

    def _retain(self) -> bool:
        return StatefulBatchLogic.RETAIN if len(self.state) else StatefulBatchLogic.DISCARD

    def on_batch(self, values: list[DetectIn]) -> tuple[list[DetectOut], bool]:
        return self.step(self.state, values), self._retain()

    def notify_at(self) -> datetime | None:
        # Verdicts waiting for their series expire after the idle TTL (wall clock).
        if not self.state.pending:
            return None
        first = min(p.since_s for p in self.state.pending.values())
        return datetime.fromtimestamp(first + self.pending_ttl_s, UTC)

    def _expire(self, due_s: float, why: str) -> list[DetectOut]:
        out: list[DetectOut] = []
        for series, pending in list(self.state.pending.items()):
            if pending.since_s <= due_s:
                del self.state.pending[series]
                out.extend(expire_pending(pending, why))
        return out

    def on_notify(self) -> tuple[list[DetectOut], bool]:
        why = f"no window of it arrived within {self.pending_ttl_s:g} s (features.idle_ttl_s)"
        due_s = time.time() - self.pending_ttl_s + 0.001  # woken on time: the first is due
        return self._expire(due_s, why), self._retain()

    def on_eof(self) -> tuple[list[DetectOut], bool]:
        why = "no window of it arrived before the input ended"
        return self._expire(float("inf"), why), self._retain()

    def snapshot(self) -> ShardSnapshot | None:
        if not self.snapshots:  # no recovery state: nothing reads it
            return None
        return ShardSnapshot.of(self.state)


def make_detect_builder(
    step: Any,
    pending_ttl_s: float = 3600.0,
    snapshots: bool = True,
    settings: tuple[Tiers, CombineConfig] | None = None,
) -> Any:
    """`pending_ttl_s`: how long verdicts wait for a series with no state (features.idle_ttl_s);
    `snapshots` false: the run keeps no recovery state (`build_flow`'s `recovery`);
    `settings`: the step's detection settings (`tiers_for`'s tiers and the decision's
    configuration), which a shard restored from a snapshot adopts (`DetectShard.adopt`; a
    warning names what changed), so a setting changed across a restart reaches every series."""

    def build(resume: ShardSnapshot | bytes | DetectShard | None) -> DetectLogic:
        if isinstance(resume, ShardSnapshot):
            state: DetectShard | None = resume.restore()
        else:  # bytes: a pickled DetectShard (the snapshots before stop 37)
            state = pickle.loads(resume) if isinstance(resume, bytes) else resume
        shard = state if state is not None else DetectShard()
        if state is not None and settings is not None:
            changed = shard.adopt(*settings)
            if changed:
                parts = ", ".join(f"{part} in {n:,}" for part, n in sorted(changed.items()))
                LOG.warning(
                    "recovery: detection settings changed since the snapshot (%s of %s restored "
                    "series): this run's apply to them (docs/STATE.md)",
                    parts,
                    f"{len(shard.series):,}",
                )
        return DetectLogic(step, shard, pending_ttl_s, snapshots)

    return build


class HourlyLogic(StatefulLogic[FeatureWindow, HourlyAggregate, HourlyAggregator]):
    """Bytewax wrapper of `operators.aggregate.hourly.HourlyAggregator`: one (cluster, metric)."""

    def __init__(self, state: HourlyAggregator) -> None:
        self.state = state

    def on_item(self, value: FeatureWindow) -> tuple[list[HourlyAggregate], bool]:
        return self.state.add(value), False

    def on_eof(self) -> tuple[list[HourlyAggregate], bool]:
        return self.state.flush(), False

    def snapshot(self) -> HourlyAggregator:
        return copy.deepcopy(self.state)


def make_hourly_builder(lateness_ms: int) -> Any:
    def build(resume: HourlyAggregator | None) -> HourlyLogic:
        return HourlyLogic(resume or HourlyAggregator(lateness_ms=lateness_ms))

    return build
