"""Cumulative counters to per-second rates, before any feature is computed.

A counter (the catalogue says which metrics are: Telegraf's `net_bytes_recv`, `diskio_*`,
Prometheus' `*_total`, ...) only ever rises, so its level says nothing; its rate does. Per
series this keeps the last sample and turns each later one into `(value - last) / seconds`.
A value below the last one is a counter reset (a restart counts from zero again, as
Prometheus' `rate()` assumes): the rate is `value / seconds`. What cannot give a rate is
counted by reason, never silently lost: a series' first sample (`first`) and a sample not
after the last one (`not_after_last`). State per counter series: one timestamp and value,
forgotten after `idle_ms` of event time without a sample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec

from novacron_ml.core.catalogue import DEFAULT_CATALOGUE, Catalogue
from novacron_ml.core.schema import MetricEvent


class CounterRates:
    """Per-series last samples of counter metrics. Picklable (plain dicts)."""

    PRUNE_EVERY = 50_000
    """Counter samples between scans for idle series."""

    def __init__(self, catalogue: Catalogue = DEFAULT_CATALOGUE, idle_ms: int = 3_600_000):
        self.catalogue = catalogue
        self.idle_ms = idle_ms
        self._last: dict[str, tuple[int, float]] = {}
        self._is_counter: dict[str, bool] = {}
        self._since_prune = 0
        self._max_ts = 0
        self.skipped: Counter[str] = Counter()
        """Counter samples that gave no rate, by reason (exported by the flow)."""
        self.resets = 0

    def use(self, catalogue: Catalogue) -> None:
        """Judge counter-ness by `catalogue` from now on (a resumed flow's own settings)."""
        self.catalogue = catalogue
        self._is_counter = {}

    @property
    def n_series(self) -> int:
        return len(self._last)

    def convert(self, events: Sequence[MetricEvent]) -> list[MetricEvent]:
        """The batch with every counter sample replaced by its rate (or left out, counted)."""
        is_counter = self._is_counter
        out: list[MetricEvent] | None = None
        for i, e in enumerate(events):
            counter = is_counter.get(e.metric)
            if counter is None:
                counter = is_counter[e.metric] = self.catalogue.spec_for(e.metric).counter
            if not counter:
                if out is not None:
                    out.append(e)
                continue
            if out is None:
                out = list(events[:i])
            rate = self._rate(e)
            if rate is not None:
                out.append(rate)
        if out is None:
            return list(events)
        self._since_prune += len(events)
        if self._since_prune >= self.PRUNE_EVERY:
            self.prune()
        return out

    def _rate(self, e: MetricEvent) -> MetricEvent | None:
        key = e.series
        last = self._last.get(key)
        self._max_ts = max(self._max_ts, e.ts_ms)
        if last is None:
            self._last[key] = (e.ts_ms, e.value)
            self.skipped["first"] += 1
            return None
        ts, value = last
        if e.ts_ms <= ts:
            self.skipped["not_after_last"] += 1
            return None
        self._last[key] = (e.ts_ms, e.value)
        delta = e.value - value
        if delta < 0:  # a reset: the counter restarted from zero
            self.resets += 1
            delta = e.value
        return msgspec.structs.replace(e, value=delta * 1000.0 / (e.ts_ms - ts))

    def prune(self) -> int:
        """Forget counter series silent for `idle_ms` of event time; how many were."""
        self._since_prune = 0
        horizon = self._max_ts - self.idle_ms
        stale = [k for k, (ts, _v) in self._last.items() if ts < horizon]
        for k in stale:
            del self._last[k]
        return len(stale)
