"""WindowStats against a numpy reference, and exact merges."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.windows import WindowGrid, WindowStats


def stats_of(values: list[float], start_ts: int = 0) -> WindowStats:
    s = WindowStats()
    for i, v in enumerate(values):
        s.add(start_ts + i * 1000, v)
    return s


@pytest.mark.parametrize(
    "values",
    [
        [1.0],
        [5.0, 5.0, 5.0],
        [1e12, 1e12 + 1, 1e12 + 2],
        [-3.5, 0.0, 2.25, 100.0],
        list(np.random.default_rng(1).normal(50, 10, 500)),
    ],
    ids=["single", "constant", "huge-offset", "mixed", "random"],
)
def test_matches_numpy(values: list[float]) -> None:
    s = stats_of(values)
    arr = np.array(values)
    assert s.count == len(values)
    assert s.mean == pytest.approx(arr.mean(), rel=1e-12)
    assert s.std == pytest.approx(arr.std(ddof=1) if len(values) > 1 else 0.0, rel=1e-9, abs=1e-12)
    assert (s.min, s.max, s.last) == (arr.min(), arr.max(), arr[-1])


@settings(max_examples=200)
@given(
    st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=60),
    st.lists(st.floats(-1e9, 1e9), min_size=1, max_size=60),
)
def test_merge_equals_one_pass(a: list[float], b: list[float]) -> None:
    merged = stats_of(a).merge(stats_of(b, start_ts=len(a) * 1000))
    whole = stats_of(a + b)
    assert merged.count == whole.count
    assert merged.mean == pytest.approx(whole.mean, rel=1e-9, abs=1e-6)
    assert merged.std == pytest.approx(whole.std, rel=1e-6, abs=1e-3)
    assert (merged.min, merged.max, merged.last) == (whole.min, whole.max, whole.last)


def test_out_of_order_keeps_latest_as_last() -> None:
    s = WindowStats().add(2000, 2.0).add(1000, 1.0)
    assert s.last == 2.0 and s.first_ts_ms == 1000 and s.last_ts_ms == 2000


def test_pickles() -> None:
    s = stats_of([1.0, 2.0, 4.0])
    t = pickle.loads(pickle.dumps(s))
    assert (t.count, t.mean, t.std, t.min, t.max) == (s.count, s.mean, s.std, s.min, s.max)


def test_grid_bounds() -> None:
    grid = WindowGrid(length_ms=60_000, slide_ms=30_000)
    assert (grid.start_ms(4), grid.end_ms(4)) == (120_000, 180_000)
