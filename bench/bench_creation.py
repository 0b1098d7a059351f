"""What a new series costs when it arrives (issue 18 target: creation <= 50 us): its first event
through the feature engine (a row in its arrays, its key in the index) and its detection
state (`new_series_state`, the flow's default tiers), each against the same work for series
that already exist, in one run.

    python bench/bench_creation.py [--series 20000] [--batch 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from dataflows.config import combine_config, detector_config
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import Settings
from operators.detection.series import new_series_state
from operators.features.engine import FeatureEngine

T0 = 1_767_225_600_000


def events_for(n: int, ts_ms: int) -> list[MetricEvent]:
    return [
        MetricEvent(ts_ms, f"host-{i // 10:06d}", f"cluster-{i % 7}", f"metric_{i % 10}", 0.5)
        for i in range(n)
    ]


def feature_side(n: int, batch: int) -> tuple[float, float]:
    """(µs per event creating its series, µs per event of an existing series)."""
    settings = Settings()
    engine = FeatureEngine(settings.feature_config())
    first = events_for(n, T0)
    later = events_for(n, T0 + 5_000)  # the same series, 5 s later: same window
    now = T0 + 10_000
    start = time.perf_counter()
    for i in range(0, n, batch):
        engine.ingest(first[i : i + batch], now)
    create = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, n, batch):
        engine.ingest(later[i : i + batch], now)
    existing = time.perf_counter() - start
    return create / n * 1e6, existing / n * 1e6


def detection_side(n: int, detector: dict[str, float] | None = None) -> float:
    """µs per `new_series_state` with the flow's default tiers (`detector`: settings on top)."""
    settings = Settings(detector=detector or {})
    rz, combine = detector_config(settings), combine_config(settings)
    names = [e.series for e in events_for(n, T0)]
    start = time.perf_counter()
    for name in names:
        new_series_state(name, rz, combine)
    return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--series", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1_000, help="events per ingest call (1000)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    print(f"python {platform.python_version()}; {args.series:,} new series, batches of "
          f"{args.batch:,}, {args.repeats} repeats")  # fmt: skip
    rows = []
    for _ in range(args.repeats):
        create, existing = feature_side(args.series, args.batch)
        without = detection_side(args.series, {"load_threshold": 0.0})
        rows.append((create, existing, create - existing, detection_side(args.series), without))
    for i, (c, e, d, s, w) in enumerate(rows, 1):
        print(f"  run {i}: features {c:.2f} µs/event new vs {e:.2f} existing (creation "
              f"{d:.2f}); detection state {s:.2f} µs ({w:.2f} without the load-residual "
              f"tier); creation total {d + s:.2f} µs")  # fmt: skip
    total = statistics.median(r[2] + r[3] for r in rows)
    print(f"median creation: {total:.2f} µs per series (target <= 50 µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
