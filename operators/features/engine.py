"""Windowed feature engineering per series: event time, numpy ring buffers, vectorised.

`FeatureEngine` holds the state of many series (one Bytewax shard) as rows of 2-D numpy arrays
on a regular time grid (`step_s`), so the hot path has no per-feature Python loops: a batch of
events is written with one fancy-indexed assignment, and every window that closes in that batch
is computed together, one numpy call per feature over a (windows × samples) matrix.

Per series it keeps (see docs/FEATURES.md for every formula):
- a ring of samples on the grid (float64) covering the look-back plus write-ahead room, with a
  16-bit lap stamp per slot, so stale slots from the previous lap read as missing without
  clearing;
- `history_days` of `bucket_s` bucket means (float32 offsets from a float64 reference, + lap
  stamp) for the same-time-yesterday and same-time-last-week lags;
- the next window to emit, the largest event time, the fast and slow EWMA and the last three
  window means.

Windows are emitted in order, exactly once: an event earlier than the series' next window is
late (returned as such, never silently dropped), and a series evicted for idleness leaves a
tombstone so it cannot re-open windows it already emitted (the Bytewax 0.21 re-emission case).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from novacron_ml.core.features import (
    DAY_MS,
    FEATURE_NAMES,
    N_FEATURES,
    FeatureConfig,
    FeatureWindow,
)
from novacron_ml.core.schema import MetricEvent, split_series_key

WEEK_MS = 7 * DAY_MS
_LAP_MASK = 0xFFFF
_LABELS, _TS, _VALUE = attrgetter("labels"), attrgetter("ts_ms"), attrgetter("value")
_Z_CLIP = 1e6


@dataclass(frozen=True)
class LateEvent:
    series: str
    event: MetricEvent
    next_window_start_ms: int


class FeatureEngine:
    """Feature state of many series. Picklable; `snapshot()` gives an independent copy."""

    def __init__(self, config: FeatureConfig | None = None, capacity: int = 16) -> None:
        self.config = config or FeatureConfig()
        c = self.config
        self._index: dict[str, int] = {}
        self._names: list[str | None] = []
        self._free: list[int] = []
        self._tombstones: OrderedDict[str, int] = OrderedDict()
        self.evicted = 0
        """Series evicted so far (for metrics)."""
        self.evicted_series: list[str] = []
        """Names evicted since the caller last cleared it (the detect step drops their state)."""
        self._per_host: Counter[str] = Counter()
        """Live series per host (for `max_series_per_host`)."""
        self.over_limit: list[MetricEvent] = []
        """Events of new series refused by `max_series` / `max_series_per_host` since the
        caller last emptied it (the flow dead-letters them as `series_limit`)."""
        n = 0
        self._values = np.zeros((n, c.n_slots), np.float64)
        self._laps = np.full((n, c.n_slots), _LAP_MASK, np.uint16)
        self._buckets = np.zeros((n, c.n_buckets), np.float32)
        self._bucket_ref = np.zeros(n, np.float64)
        self._bucket_laps = np.full((n, c.n_buckets), _LAP_MASK, np.uint16)
        self._max_ts = np.zeros(n, np.int64)
        self._next_start = np.zeros(n, np.int64)
        self._last_seen = np.zeros(n, np.int64)
        self._active = np.zeros(n, bool)
        self._ewma = np.zeros((n, 2), np.float64)
        self._ewma_upto = np.zeros(n, np.int64)
        self._prev = np.zeros((n, 3), np.float32)
        # cached look-back statistics: median, scale, period, power share, entropy
        self._lookback_stats = np.zeros((n, 5), np.float64)
        self._grow(capacity)
        s = c.ewma_fast_span
        self._alphas = np.array([2.0 / (s + 1.0), 2.0 / (c.ewma_slow_span + 1.0)])

    # -- state management -----------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = len(self._max_ts)
        if capacity <= old:
            return

        def grow(arr: np.ndarray, fill: float) -> np.ndarray:
            new = np.full((capacity, *arr.shape[1:]), fill, arr.dtype)
            new[:old] = arr
            return new

        self._values = grow(self._values, 0)
        self._laps = grow(self._laps, _LAP_MASK)
        self._buckets = grow(self._buckets, 0)
        self._bucket_ref = grow(self._bucket_ref, np.nan)
        self._bucket_laps = grow(self._bucket_laps, _LAP_MASK)
        self._max_ts = grow(self._max_ts, 0)
        self._next_start = grow(self._next_start, 0)
        self._last_seen = grow(self._last_seen, 0)
        self._active = grow(self._active, False)
        self._ewma = grow(self._ewma, np.nan)
        self._ewma_upto = grow(self._ewma_upto, 0)
        self._prev = grow(self._prev, np.nan)
        self._lookback_stats = grow(self._lookback_stats, np.nan)
        self._names.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))

    def _admits(self, series: str) -> bool:
        """Whether a new series fits the bounds (so a label explosion cannot exhaust memory)."""
        c = self.config
        if c.max_series and len(self._index) >= c.max_series:
            return False
        if c.max_series_per_host:
            return self._per_host[split_series_key(series)[1]] < c.max_series_per_host
        return True

    def _allocate(self, series: str, first_ts: int) -> int:
        self._per_host[split_series_key(series)[1]] += 1
        if not self._free:
            self._grow(max(16, 2 * len(self._max_ts)))
        row = self._free.pop()
        c = self.config
        self._index[series] = row
        self._names[row] = series
        self._values[row] = 0
        self._laps[row] = _LAP_MASK
        self._buckets[row] = 0
        self._bucket_ref[row] = np.nan
        self._bucket_laps[row] = _LAP_MASK
        self._ewma[row] = np.nan
        self._prev[row] = np.nan
        self._lookback_stats[row] = np.nan
        # the earliest window that contains the first event, never before a tombstone
        k = -((c.window_ms - 1 - first_ts) // c.slide_ms)
        start = max(k * c.slide_ms, self._tombstones.pop(series, -(2**62)))
        self._next_start[row] = start
        self._max_ts[row] = first_ts
        self._ewma_upto[row] = start // c.step_ms
        self._active[row] = True
        return row

    def _evict(self, row: int) -> None:
        name = self._names[row]
        if name is not None:
            host = split_series_key(name)[1]
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]
            self._index.pop(name, None)
            self.evicted_series.append(name)
            self._tombstones[name] = int(self._next_start[row])
            while len(self._tombstones) > self.config.max_tombstones:
                self._tombstones.popitem(last=False)
        self._names[row] = None
        self._active[row] = False
        self._free.append(row)
        self.evicted += 1

    @property
    def n_series(self) -> int:
        return len(self._index)

    def state_bytes_per_series(self) -> int:
        """Bytes of numpy state per series row (excluding the name and dict entry)."""
        arrays = (
            self._values,
            self._laps,
            self._buckets,
            self._bucket_ref,
            self._bucket_laps,
            self._max_ts,
            self._next_start,
            self._last_seen,
            self._active,
            self._ewma,
            self._ewma_upto,
            self._prev,
            self._lookback_stats,
        )
        return sum(a.nbytes // max(len(a), 1) for a in arrays)

    def snapshot(self) -> FeatureEngine:
        return copy.deepcopy(self)

    # -- ingest -----------------------------------------------------------------------------------
    def ingest(
        self, events: Sequence[MetricEvent], now_ms: int
    ) -> tuple[list[FeatureWindow], list[LateEvent]]:
        """Write a batch of events; return the windows this closes and the late events."""
        if not events:
            return [], []
        c = self.config
        # schema.series_key, inlined for the common case: this runs once per event
        keys = [f"{e.cluster}/{e.host}/{e.metric}" for e in events]
        # Checked once on all keys joined: each holds at least its two slashes, so exactly 2n
        # slashes in all means exactly two in each.
        joined = "".join(keys)
        if (
            joined.count("/") != 2 * len(keys)
            or "%" in joined
            or "{" in joined
            or "}" in joined
            or any(map(_LABELS, events))
        ):  # tags or characters to escape (`plain_key`): the full key
            keys = [e.series for e in events]
        index = self._index
        rows_list = [index.get(k, -1) for k in keys]
        out: list[FeatureWindow] = []
        late: list[LateEvent] = []
        if -1 in rows_list:
            first_ts: dict[str, int] = {}
            last_ts: dict[str, int] = {}
            for key, e, r in zip(keys, events, rows_list, strict=True):
                if r == -1:
                    first_ts[key] = min(first_ts.get(key, e.ts_ms), e.ts_ms)
                    last_ts[key] = max(last_ts.get(key, e.ts_ms), e.ts_ms)
            refused: set[str] = set()
            for key, t in first_ts.items():
                stone = self._tombstones.get(key)
                if stone is None or last_ts[key] >= stone:  # else: all late, keep no state
                    if self._admits(key):
                        self._allocate(key, t)
                    else:
                        refused.add(key)
            rows_list = [index.get(k, -1) for k in keys]
            if -1 in rows_list:  # late events of evicted series, or refused new ones
                keep_idx = []
                for i, r in enumerate(rows_list):
                    if r != -1:
                        keep_idx.append(i)
                    elif keys[i] in refused:
                        self.over_limit.append(events[i])
                    else:
                        late.append(LateEvent(keys[i], events[i], self._tombstones[keys[i]]))
                events = [events[i] for i in keep_idx]
                keys = [keys[i] for i in keep_idx]
                rows_list = [rows_list[i] for i in keep_idx]
                if not events:
                    return out, late
        n = len(events)
        rows = np.fromiter(rows_list, np.int64, n)
        ts = np.fromiter(map(_TS, events), np.int64, n)
        vals = np.fromiter(map(_VALUE, events), np.float64, n)
        # A batch spanning more than the look-back (fast replays) would overwrite ring slots
        # of windows not yet closed: cut it, in arrival order, into spans that fit.
        safe_ms = max(round(c.write_ahead_s * 1000), c.step_ms)
        if int(ts.max()) - int(ts.min()) < safe_ms:
            bounds = [0, n]
        else:
            chunk = (ts - ts[0]) // safe_ms
            bounds = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), n]
        for a, b in itertools.pairwise(bounds):
            self._ingest_chunk(rows[a:b], ts[a:b], vals[a:b], a, keys, events, now_ms, out, late)
        return out, late

    def _ingest_chunk(
        self,
        rows: np.ndarray,
        ts: np.ndarray,
        vals: np.ndarray,
        offset: int,
        keys: list[str],
        events: Sequence[MetricEvent],
        now_ms: int,
        out: list[FeatureWindow],
        late_out: list[LateEvent],
    ) -> None:
        c = self.config
        # Close windows whose look-back the new samples are about to overwrite (a long gap):
        # window end E is intact while every write is below E - lookback + ring.
        new_max = np.full(len(self._max_ts), np.iinfo(np.int64).min // 2, np.int64)
        np.maximum.at(new_max, rows, ts)
        pre = new_max + c.lookback_ms - c.n_slots * c.step_ms
        if (self._active & (self._next_start + c.window_ms <= pre)).any():
            out.extend(self._close(pre))
        late = ts < self._next_start[rows]
        if late.any():
            for i in np.flatnonzero(late).tolist():
                r = int(rows[i])
                late_out.append(
                    LateEvent(keys[offset + i], events[offset + i], int(self._next_start[r]))
                )
            keep = ~late
            rows, ts, vals = rows[keep], ts[keep], vals[keep]
        if len(rows):
            slots = ts // c.step_ms
            pos = slots % c.n_slots
            self._values[rows, pos] = vals
            self._laps[rows, pos] = (slots // c.n_slots) & _LAP_MASK
            np.maximum.at(self._max_ts, rows, ts)
            self._last_seen[rows] = now_ms
        out.extend(self._close(self._max_ts - c.lateness_ms))

    def advance(self, now_ms: int) -> list[FeatureWindow]:
        """Let system time move idle series' watermarks on, then evict the long-idle ones."""
        c = self.config
        idle = now_ms - self._last_seen
        out = self._close(self._max_ts + np.maximum(idle, 0) - c.lateness_ms)
        stale = self._active & (idle > round(c.idle_ttl_s * 1000))
        if stale.any():
            # Close what an evicted series still holds first: its data must not be lost.
            never = np.iinfo(np.int64).min // 2
            out.extend(self._close(np.where(stale, np.iinfo(np.int64).max // 2, never)))
            for row in np.flatnonzero(stale).tolist():
                self._evict(row)
        return out

    def next_close_ms(self) -> int | None:
        """The wall time (ms) at which `advance` will close the next window, if no more events
        arrive: the moment to be notified, rather than a fixed cadence, so a quiet series'
        window is scored as soon as it can close. None: nothing pending."""
        c = self.config
        pending = self._active & (self._next_start <= self._max_ts)
        if not pending.any():
            return None
        due = (
            self._next_start[pending]
            + (c.window_ms + c.lateness_ms)
            - self._max_ts[pending]
            + self._last_seen[pending]
        )
        return int(due.min())

    def flush(self) -> list[FeatureWindow]:
        """End of input: close every window that holds data."""
        return self._close(np.full(len(self._max_ts), np.iinfo(np.int64).max // 2, np.int64))

    # -- closing windows -------------------------------------------------------------------------
    def _close(self, watermark: np.ndarray) -> list[FeatureWindow]:
        c = self.config
        out: list[FeatureWindow] = []
        for _ in range(1_000_000):
            due = (
                self._active
                & (self._next_start + c.window_ms <= watermark)
                & (self._next_start <= self._max_ts)
            )
            if not due.any():
                break
            rows = np.flatnonzero(due)
            starts = self._next_start[rows].copy()
            features, has_data = self._compute(rows, starts)
            names = self._names
            for j in np.flatnonzero(has_data).tolist():
                start = int(starts[j])
                out.append(
                    FeatureWindow(
                        names[int(rows[j])] or "", start, start + c.window_ms, features[j]
                    )
                )
            self._next_start[rows] += c.slide_ms
            empty = rows[~has_data]
            if len(empty):
                self._skip_gap(empty)
        return out

    def _skip_gap(self, rows: np.ndarray) -> None:
        """Jump rows whose next window is empty to the first window holding data (or past it)."""
        c = self.config
        n = c.n_slots
        head = self._max_ts[rows] // c.step_ms
        abs_slots = head[:, None] - (n - 1) + np.arange(n)[None, :]
        valid = self._laps[rows[:, None], abs_slots % n] == ((abs_slots // n) & _LAP_MASK)
        valid &= abs_slots >= (self._next_start[rows] // c.step_ms)[:, None]
        first = np.where(valid.any(1), abs_slots[np.arange(len(rows)), valid.argmax(1)], head + 1)
        first_ms = first * c.step_ms
        k = -((c.window_ms - 1 - first_ms) // c.slide_ms)
        self._next_start[rows] = np.maximum(self._next_start[rows], k * c.slide_ms)

    def _gather(self, rows: np.ndarray, first_slot: np.ndarray, width: int) -> np.ndarray:
        """(rows × width) float64 values on the grid from first_slot, NaN where missing."""
        n = self.config.n_slots
        if len(first_slot) and (first_slot == first_slot[0]).all():
            # Windows are epoch-aligned, so rows closing together share their slots: 1-D indices.
            abs_1d = first_slot[0] + np.arange(width)
            pos_1d = abs_1d % n
            vals = self._values[np.ix_(rows, pos_1d)]
            valid = self._laps[np.ix_(rows, pos_1d)] == ((abs_1d // n) & _LAP_MASK)
            return np.where(valid, vals, np.nan)
        abs_slots = first_slot[:, None] + np.arange(width)[None, :]
        pos = abs_slots % n
        vals = self._values[rows[:, None], pos]
        valid = self._laps[rows[:, None], pos] == ((abs_slots // n) & _LAP_MASK)
        return np.where(valid, vals, np.nan)

    def _compute(self, rows: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Extreme inputs (±1e300) overflow intermediate sums; the result is made finite below.
        with np.errstate(all="ignore"):
            return self._compute_unchecked(rows, starts)

    def _compute_unchecked(
        self, rows: np.ndarray, starts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        spw = c.window_ms // c.step_ms
        start_slot = starts // c.step_ms
        x = self._gather(rows, start_slot, spw)
        valid = ~np.isnan(x)
        count = valid.sum(1)
        has = count > 0
        m = len(rows)
        f = np.zeros((m, N_FEATURES))
        if not has.any():
            return f, has
        # Work on the rows with data only.
        rows_h, starts_h, x, valid, count = rows[has], starts[has], x[has], valid[has], count[has]
        cnt = count.astype(np.float64)
        xs = np.where(valid, x, 0.0)
        mean = xs.sum(1) / cnt
        dev = np.where(valid, x - mean[:, None], 0.0)
        m2 = (dev**2).sum(1)
        var = np.where(count > 1, m2 / np.maximum(cnt - 1, 1), 0.0)
        std = np.sqrt(var)
        srt = np.sort(np.where(valid, x, np.inf), axis=1)

        def quantile(q: float) -> np.ndarray:
            return _sorted_quantile(srt, count, q)

        idx = np.arange(spw)
        last_i = np.where(valid, idx, -1).max(1)
        first_i = np.where(valid, idx, spw).min(1)
        ar = np.arange(len(rows_h))
        last = x[ar, last_i]
        first = x[ar, first_i]
        span_s = (last_i - first_i) * c.step_s
        rate = np.where(span_s > 0, (last - first) / np.where(span_s > 0, span_s, 1), 0.0)
        skew, kurt = _pandas_moments(dev, cnt, m2)

        # EWMA over the samples not yet consumed by an earlier (overlapping) window.
        c0 = np.clip(self._ewma_upto[rows_h] - start_slot[has], 0, spw)
        ewma = self._ewma[rows_h].copy()
        for j in range(spw):
            take = valid[:, j] & (c0 <= j)
            if not take.any():
                continue
            xj = x[:, j][:, None]
            fresh = np.isnan(ewma)
            upd = np.where(fresh, xj, self._alphas * xj + (1 - self._alphas) * ewma)
            ewma = np.where(take[:, None], upd, ewma)
        ewma = np.where(np.isnan(ewma), mean[:, None], ewma)
        self._ewma[rows_h] = ewma
        self._ewma_upto[rows_h] = start_slot[has] + spw

        # Look-back buffer: robust z of the last value, spectrum.
        stats = self._lookback_stats[rows_h]
        refresh = np.isnan(stats[:, 0]) | ((starts_h // c.slide_ms) % c.lookback_every == 0)
        if refresh.any():
            r = rows_h[refresh]
            end_slot = start_slot[has][refresh] + spw
            lb = self._gather(r, end_slot - c.lookback_slots, c.lookback_slots)
            med, scale = _median_scale(lb)
            period, power, entropy = _spectrum(lb, c.step_s)
            stats[refresh] = np.column_stack([med, scale, period, power, entropy])
            self._lookback_stats[r] = stats[refresh]
        med, scale = stats[:, 0], stats[:, 1]
        robust_z = np.clip(
            np.where(scale > 0, (last - med) / np.where(scale > 0, scale, 1.0), 0.0),
            -_Z_CLIP,
            _Z_CLIP,
        )
        period, power, entropy = stats[:, 2], stats[:, 3], stats[:, 4]

        # Temporal, at the window start (UTC).
        start_s = starts_h / 1000.0
        hour = (start_s % 86400.0) / 3600.0
        dow = ((starts_h // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        # Lagged.
        prev = self._prev[rows_h].astype(np.float64)
        prev_filled = np.where(np.isnan(prev), mean[:, None], prev)
        self._prev[rows_h] = np.column_stack([mean, prev[:, 0], prev[:, 1]])
        lag_1d, has_1d = self._bucket_lookup(rows_h, starts_h - DAY_MS)
        lag_1w, has_1w = self._bucket_lookup(rows_h, starts_h - WEEK_MS)
        lag_1d = np.where(has_1d, lag_1d, mean)
        lag_1w = np.where(has_1w, lag_1w, mean)
        self._update_buckets(rows_h, starts_h)

        cols = {
            "count": cnt,
            "missing_ratio": 1.0 - cnt / spw,
            "mean": mean,
            "std": std,
            "min": srt[:, 0],
            "max": srt[ar, count - 1],
            "p50": quantile(0.5),
            "p95": quantile(0.95),
            "p99": quantile(0.99),
            "skew": skew,
            "kurtosis": kurt,
            "last": last,
            "rate_of_change": rate,
            "robust_z_last": robust_z,
            "ewma_fast": ewma[:, 0],
            "ewma_slow": ewma[:, 1],
            "ewma_gap": ewma[:, 0] - ewma[:, 1],
            "hour_sin": np.sin(2 * np.pi * hour / 24),
            "hour_cos": np.cos(2 * np.pi * hour / 24),
            "dow_sin": np.sin(2 * np.pi * dow / 7),
            "dow_cos": np.cos(2 * np.pi * dow / 7),
            "is_weekend": (dow >= 5).astype(np.float64),
            "dominant_period_s": period,
            "dominant_power": power,
            "spectral_entropy": entropy,
            "prev_mean_1": prev_filled[:, 0],
            "prev_mean_2": prev_filled[:, 1],
            "prev_mean_3": prev_filled[:, 2],
            "diff_prev_1": mean - prev_filled[:, 0],
            "lag_1d": lag_1d,
            "lag_1w": lag_1w,
            "diff_1d": mean - lag_1d,
            "diff_1w": mean - lag_1w,
            "has_lag_1d": has_1d.astype(np.float64),
            "has_lag_1w": has_1w.astype(np.float64),
        }
        block = np.column_stack([cols[name] for name in FEATURE_NAMES])
        f[has] = np.nan_to_num(
            block, nan=0.0, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max
        )
        return f, has

    def _bucket_lookup(
        self, rows: np.ndarray, when_ms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        b = when_ms // c.bucket_ms
        pos = b % c.n_buckets
        ok = (self._bucket_laps[rows, pos] == ((b // c.n_buckets) & _LAP_MASK)) & (when_ms >= 0)
        return self._buckets[rows, pos].astype(np.float64) + self._bucket_ref[rows], ok

    def _update_buckets(self, rows: np.ndarray, starts: np.ndarray) -> None:
        """Refresh the mean of the bucket each window falls in, from the look-back buffer."""
        c = self.config
        b = starts // c.bucket_ms
        width = c.bucket_ms // c.step_ms
        vals = self._gather(rows, b * c.bucket_ms // c.step_ms, width)
        n = (~np.isnan(vals)).sum(1)
        ok = n > 0
        if not ok.any():
            return
        means = np.where(np.isnan(vals), 0.0, vals).sum(1)[ok] / n[ok]
        r, bb = rows[ok], b[ok]
        pos = bb % c.n_buckets
        # float32 buckets store offsets from a per-series float64 reference, so lags of large
        # values (1e9 and up) keep the precision of their deviations.
        ref = self._bucket_ref[r]
        fresh = np.isnan(ref)
        self._bucket_ref[r[fresh]] = means[fresh]
        self._buckets[r, pos] = means - self._bucket_ref[r]
        self._bucket_laps[r, pos] = (bb // c.n_buckets) & _LAP_MASK


def _sorted_quantile(srt: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile (numpy/pandas default) of each row's first `count` values."""
    pos = (count - 1) * q
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, count - 1)
    frac = pos - lo
    ar = np.arange(len(srt))
    a, b = srt[ar, lo], srt[ar, hi]
    return a + (b - a) * frac


def _pandas_moments(
    dev: np.ndarray, n: np.ndarray, m2: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bias-adjusted skewness (G1) and excess kurtosis (G2), as pandas computes them.

    0 where undefined: fewer than 3 (skew) or 4 (kurtosis) samples, or zero variance.
    """
    m3 = (dev**3).sum(1)
    m4 = (dev**4).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_b = m2 / n
        flat = var_b <= 1e-14 * np.maximum(1.0, (np.abs(dev).max(1) ** 2))
        g1 = (m3 / n) / var_b**1.5
        skew = np.sqrt(n * (n - 1)) / (n - 2) * g1
        g2 = (m4 / n) / var_b**2 - 3.0
        kurt = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * g2 + 6.0)
    skew = np.where((n >= 3) & ~flat, skew, 0.0)
    kurt = np.where((n >= 4) & ~flat, kurt, 0.0)
    return skew, kurt


def _median_scale(lookback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and robust scale (1.4826 · MAD, else 1.2533 · mean absolute deviation)."""
    valid = ~np.isnan(lookback)
    n = np.maximum(valid.sum(1), 1)
    srt = np.sort(np.where(valid, lookback, np.inf), axis=1)
    med = _sorted_quantile(srt, n, 0.5)
    absdev = np.abs(lookback - med[:, None])
    srt_dev = np.sort(np.where(valid, absdev, np.inf), axis=1)
    mad = _sorted_quantile(srt_dev, n, 0.5)
    mean_ad = np.where(valid, absdev, 0.0).sum(1) / n
    return med, np.where(mad > 0, 1.4826 * mad, 1.2533 * mean_ad)


def _spectrum(lookback: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dominant period (s), its share of the power, and normalised spectral entropy.

    Missing samples are filled with the row mean and the mean removed before the FFT.
    """
    valid = ~np.isnan(lookback)
    n_valid = valid.sum(1)
    mean = np.where(valid, lookback, 0.0).sum(1) / np.maximum(n_valid, 1)
    filled = np.where(valid, lookback, mean[:, None]) - mean[:, None]
    spec = np.fft.rfft(filled, axis=1)[:, 1:]
    power = spec.real**2 + spec.imag**2
    total = power.sum(1)
    n = lookback.shape[1]
    k = power.argmax(1) + 1
    scale = np.maximum(np.abs(mean), 1.0) ** 2 * n * 1e-18
    ok = (total > scale) & (n_valid >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = power / np.where(ok, total, 1.0)[:, None]
        ent = -(p * np.log(np.maximum(p, 1e-300))).sum(1)
    ent /= math.log(power.shape[1]) if power.shape[1] > 1 else 1.0
    period = np.where(ok, n * step_s / k, 0.0)
    share = np.where(ok, power[np.arange(len(k)), k - 1] / np.where(ok, total, 1.0), 0.0)
    return period, share, np.where(ok, ent, 0.0)
