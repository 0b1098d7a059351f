"""Load one univariate series from any CSV, with one-line errors a user can act on.

Shared by `novacron-ml forecast-eval` and `novacron-ml capacity backtest`. The time column
holds timestamps (anything pandas parses, e.g. `2014-02-14 14:30:00` or RFC 3339) or numbers
(seconds from the start, e.g. 0, 300, 600); without a time column, rows are `step_s` apart.
Rows are sorted by time; repeated timestamps are averaged and missing steps of a regular grid
are filled by linear interpolation, each with a warning (the standard repairs); non-numeric or
missing values, unparseable timestamps and series too short for the horizon are errors naming
the file and the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


class SeriesError(ValueError):
    """Bad input: the message is one line naming the file and the problem."""


@dataclass
class Series:
    name: str
    """The file path as given."""
    t_s: np.ndarray
    """Seconds since the epoch (timestamps) or since the start (offsets), float64, regular."""
    values: np.ndarray
    step_s: float
    absolute_time: bool
    """True when t_s are epoch seconds (calendar features such as holidays apply)."""
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def index(self) -> pd.DatetimeIndex:
        """Timestamps (offsets are placed at 2000-01-03, a Monday, for models that need dates)."""
        base = 0.0 if self.absolute_time else 946_857_600.0
        return pd.DatetimeIndex(pd.to_datetime(self.t_s + base, unit="s"))


def _line(row: int) -> int:
    return row + 2  # header is line 1


def load_series(
    path: str | Path,
    value_column: str,
    time_column: str | None = None,
    *,
    step_s: float | None = None,
    min_length: int = 2,
    min_length_reason: str = "",
) -> Series:
    name = str(path)
    p = Path(path)
    if not p.is_file():
        raise SeriesError(f"{name}: no such file")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SeriesError(f"{name}: not a readable CSV ({first})") from None
    columns = ", ".join(map(str, frame.columns)) or "none"
    for wanted in (value_column, time_column):
        if wanted is not None and wanted not in frame.columns:
            raise SeriesError(f"{name}: no column {wanted!r} (columns: {columns})")
    if time_column is None and step_s is None:
        raise SeriesError(f"{name}: no time column given: pass --time-column or --step-s")
    raw_values = frame[value_column].str.strip()
    values = pd.to_numeric(raw_values, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        text = raw_values.iloc[row]
        what = "missing value" if text == "" else f"value {text!r} is not a number"
        raise SeriesError(
            f"{name}: line {_line(row)}: {what} in column {value_column!r}"
            f" ({int(bad.sum())} bad row(s) in all)"
        )
    warnings: list[str] = []
    if time_column is None:
        assert step_s is not None
        t_s = np.arange(len(values), dtype=np.float64) * step_s
        absolute = False
    else:
        t_s, absolute = _parse_times(name, frame[time_column].str.strip())
        order = np.argsort(t_s, kind="stable")
        if (np.diff(t_s) < 0).any():
            warnings.append(f"{name}: rows were not in time order; sorted")
            t_s, values = t_s[order], values[order]
        dup = np.flatnonzero(np.diff(t_s) == 0)
        if dup.size:  # repeated timestamps: their values are averaged (standard repair)
            row = int(order[dup[0] + 1])
            uniq, inverse = np.unique(t_s, return_inverse=True)
            values = np.bincount(inverse, weights=values) / np.bincount(inverse)
            t_s = uniq.astype(np.float64)
            warnings.append(
                f"{name}: line {_line(row)}: duplicate timestamp ({dup.size} in all):"
                " values at the same time averaged"
            )
        if len(t_s) >= 2:
            t_s, values, step_s, note = regularise(name, t_s, values, step_s)
            if note:
                warnings.append(note)
        elif step_s is None:
            step_s = 1.0
    if len(values) < min_length:
        why = f" ({min_length_reason})" if min_length_reason else ""
        raise SeriesError(
            f"{name}: {len(values)} rows is too short: needs at least {min_length}{why}"
        )
    assert step_s is not None
    return Series(name, t_s, values, float(step_s), absolute, warnings)


def _parse_times(name: str, raw: pd.Series) -> tuple[np.ndarray, bool]:
    empty = (raw == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise SeriesError(f"{name}: line {_line(row)}: missing timestamp")
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(dtype=np.float64), False
    parsed = pd.to_datetime(raw, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SeriesError(f"{name}: line {_line(row)}: unparseable timestamp {raw.iloc[row]!r}")
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns / 1e9, True


def regularise(
    name: str, t_s: np.ndarray, values: np.ndarray, step_s: float | None
) -> tuple[np.ndarray, np.ndarray, float, str]:
    diffs = np.diff(t_s)
    step = float(step_s) if step_s else float(np.median(diffs))
    off_grid = np.abs(diffs - step) > 1e-6 * max(step, 1.0)
    if not off_grid.any():
        return t_s, values, step, ""
    grid = t_s[0] + np.arange(round((t_s[-1] - t_s[0]) / step) + 1) * step
    filled = np.interp(grid, t_s, values)
    missing = len(grid) - len(t_s)
    note = (
        f"{name}: irregular time steps (median {step:g} s, {int(off_grid.sum())} gap(s),"
        f" {max(missing, 0)} missing step(s)): resampled to a {step:g} s grid by linear"
        " interpolation"
    )
    return grid, filled, step, note


def aggregate(series: Series, bucket_s: float) -> Series:
    """Means over aligned buckets of `bucket_s` (e.g. 3600: the planner's hourly steps)."""
    if bucket_s <= series.step_s:
        return series
    key = np.floor(series.t_s / bucket_s)
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=series.values)
    keep = counts >= max(1, round(0.5 * bucket_s / series.step_s))  # drop partial edge buckets
    note = f"{series.name}: aggregated to {bucket_s:g} s means ({int(keep.sum())} buckets)"
    return Series(
        series.name,
        uniq[keep] * bucket_s,
        sums[keep] / counts[keep],
        float(bucket_s),
        series.absolute_time,
        [*series.warnings, note],
    )


def season_length(step_s: float, n_train: int, override: int | None = None) -> int:
    """Daily season in steps when the training part holds two days of it, else none (1)."""
    if override is not None:
        return max(1, override)
    per_day = round(86_400.0 / step_s)
    if step_s < 86_400.0 and per_day >= 2 and n_train >= 2 * per_day:
        return per_day
    return 1
