"""The load-residual tier on real multi-metric data: how often it fires next to the others.

The simulator drives every metric of a host from one load, linearly: the case most
favourable to a tier that fits each metric on the host's CPU (docs/QUALITY.md). The two
whole-datacenter traces in ../shared/data/dctraces are real metrics that move with a real
load (Alibaba 2018: CPU, memory, network in and out, disk I/O; Azure v2: CPU and assigned
memory; 5-minute steps, so the tier's 60 windows of history are 5 hours here).

First it prints how much of each series a line on the CPU explains (R^2, what
`detector.load_min_r2` gates on), for the traces and for a clean simulated fleet. Then it
runs the production detect flow (in process, 5-minute windows, the shipped decision with
the trace's CPU as `detector.load_proxy`) over each trace as one host, with the tier and
without it, and prints the alerts each decision raises per day, by the tier that decided,
and what the tier did with each fitted window (its outcome counter). The traces carry no
anomaly labels, so this measures no precision or recall: an alert the tier adds is not known
to be false, but a tier that fires often here would fire often on a real host.

    python bench/load_real.py                        # ~20 s
    python bench/load_real.py --min-r2 0 0.3 0.7 --list
        # also at other detector.load_min_r2 values, and every alert the tier decided
    python bench/load_real.py --relative-floor 0 0.003 --list
        # beside it, robust z's scale floor at the series' resolution (0) or lower than its
        # 1 % of the level, and (--list) the alerts where they differ
"""

from __future__ import annotations

import argparse
import csv
import functools
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.core import metrics
from novacron_ml.core.schema import Alert, WireEvent, parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import METRIC_NAMES, FleetConfig, FleetSimulator
from operators.detection.load import OUTCOMES

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "dctraces"
STEP_S = 300
START_MS = 1_764_547_200_000  # 2025-12-01T00:00:00Z: any fixed start (ages are not checked)


@dataclass(frozen=True)
class Trace:
    name: str
    path: Path
    proxy: str
    """The column standing for the load (the trace's CPU)."""
    time_column: str | None
    """Seconds from the trace's start; None: row i is i x 300 s."""


TRACE_FILES = (
    Trace(
        "alibaba2018",
        TRACES / "alibaba2018" / "machine_usage_days_1_to_8_grouped_300_seconds.csv",
        "cpu_util_percent",
        None,
    ),
    Trace(
        "azure_v2",
        TRACES / "azure_v2" / "vm_cpu_readings_month_aggregated_cpu_mem.csv",
        "cpu_usage",
        "timestamp",
    ),
)


def events(trace: Trace) -> tuple[list[tuple[bytes, bytes]], int, list[str]]:
    """The trace as the flow's JSON wire events (one host), its row count and metric names."""
    enc = msgspec.json.Encoder()
    out: list[tuple[bytes, bytes]] = []
    with trace.path.open(newline="") as f:
        reader = csv.DictReader(f)
        names = [c for c in reader.fieldnames or () if c != trace.time_column]
        rows = 0
        for i, row in enumerate(reader):
            offset_s = float(row[trace.time_column]) if trace.time_column else i * STEP_S
            ts = START_MS + int(offset_s * 1000)
            for name in names:
                out.append(
                    (b"", enc.encode(WireEvent(ts, trace.name, "dc", name, float(row[name]))))
                )
            rows += 1
    return out, rows, names


def settings_for(
    trace: Trace, load: bool, min_r2: float | None, floor: float | None = None
) -> Settings:
    base = Settings()
    detector: dict[str, object] = {
        "load_proxy": trace.proxy,
        "load_threshold": base.detector.load_threshold if load else 0.0,
    }
    if min_r2 is not None:
        detector["load_min_r2"] = min_r2
    if floor is not None:
        detector["relative_floor"] = floor
    return base.model_copy(
        update={
            "window": base.window.model_copy(
                update={"length_s": float(STEP_S), "slide_s": None, "allowed_lateness_s": 0.0}
            ),
            "features": base.features.model_copy(update={"step_s": float(STEP_S), "shards": 1}),
            "ingest": base.ingest.model_copy(
                update={"max_event_age_s": 0.0, "max_event_future_s": 0.0}
            ),
            "detector": base.detector.model_copy(update=detector),
            "forecast": base.forecast.model_copy(update={"enabled": False}),
        }
    )


def explained(x: np.ndarray, y: np.ndarray, ring: int = 60, every: int = 10) -> tuple[float, float]:
    """How much of a series a line on the proxy explains over rings of `ring` windows (every
    `every`-th): the median R^2 (what `detector.load_min_r2` gates on) and the median ratio
    of the residuals' MAD to the series' own."""
    r2s, ratios = [], []
    for end in range(ring, len(y) + 1, every):
        xs, ys = x[end - ring : end], y[end - ring : end]
        dx, dy = xs - xs.mean(), ys - ys.mean()
        sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
        if sxx <= 0 or syy <= 0:
            continue
        r2s.append(sxy * sxy / (sxx * syy))
        residual = dy - sxy / sxx * dx
        ratios.append(_mad(residual) / max(_mad(ys), 1e-12))
    return float(np.median(r2s)), float(np.median(ratios))


def _mad(a: np.ndarray) -> float:
    return float(np.median(np.abs(a - np.median(a))))


def explained_table(traces: Sequence[Trace]) -> None:
    """Per series of each trace and of a clean simulated host fleet (seed 7, 6 hosts, 6 h,
    one-minute window means): what a line on the CPU explains over 60 windows."""
    print("How much of each series a line on the CPU explains over 60 windows (medians)")
    print(f"  {'data':14} {'series':30} {'R^2':>5} {'resid MAD / own':>16}")
    for trace in traces:
        with trace.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        columns = {c: np.array([float(r[c]) for r in rows]) for c in rows[0]}
        for name, y in columns.items():
            if name not in (trace.proxy, trace.time_column):
                r2, ratio = explained(columns[trace.proxy], y)
                print(f"  {trace.name:14} {name:30} {r2:5.2f} {ratio:16.2f}")
    config = FleetConfig(
        hosts=6, clusters=1, duration_s=6 * 3600.0, seed=7, anomalies_per_host_per_hour=0.0
    )
    ticks = [v for _, v in FleetSimulator(config).ticks()]
    values = np.concatenate(ticks)  # (ticks, hosts, metrics), 5 s apart
    n = len(values) // 12 * 12
    means = values[:n].reshape(n // 12, 12, *values.shape[1:]).mean(axis=1)
    cpu = METRIC_NAMES.index("cpu_util")
    for m, name in enumerate(METRIC_NAMES):
        if m != cpu:
            pairs = [explained(means[:, h, cpu], means[:, h, m]) for h in range(means.shape[1])]
            r2 = float(np.median([p[0] for p in pairs]))
            ratio = float(np.median([p[1] for p in pairs]))
            print(f"  {'simulator':14} {name:30} {r2:5.2f} {ratio:16.2f}")
    print()


def _count(outcome: str) -> float:
    return metrics.counter_value(metrics.LOAD_RESIDUAL_WINDOWS, outcome=outcome)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--list", action="store_true", help="print every alert the tier decided")
    parser.add_argument(
        "--min-r2",
        type=float,
        nargs="*",
        default=[],
        help="also run the tier at these detector.load_min_r2 values",
    )
    parser.add_argument(
        "--relative-floor",
        type=float,
        nargs="*",
        default=[],
        help="also run the shipped decision at these detector.relative_floor values "
        "(robust z's scale floor, a fraction of the series' level; 0: the series' "
        "resolution instead)",
    )
    args = parser.parse_args()
    missing = [t.path for t in TRACE_FILES if not t.path.exists()]
    if missing:
        print(f"load_real: no such file: {missing[0]}", file=sys.stderr)
        return 2
    explained_table(TRACE_FILES)
    print(
        "The shipped decision over real whole-datacenter traces (one host each, 5-minute "
        "windows), without and with the load-residual tier (its proxy: the trace's CPU)\n"
    )
    print(f"{'trace':12} {'tier':10} {'days':>5} {'windows':>8} {'alerts':>7} {'per day':>8}  by")
    variants: list[tuple[str, bool, float | None, float | None]] = [
        ("off", False, None, None),
        ("shipped", True, None, None),
    ]
    variants += [(f"r2 {r}", True, r, None) for r in args.min_r2]
    variants += [(f"floor {f}", True, None, f) for f in args.relative_floor]
    listed = []
    added = []  # alerts of a floor variant or of the shipped decision, not of both
    for trace in TRACE_FILES:
        shipped: dict[tuple[str, str], Alert] = {}
        messages, rows, names = events(trace)
        days = rows * STEP_S / 86_400
        for label, load, min_r2, floor in variants:
            before = {o: _count(o) for o in OUTCOMES}
            run = run_in_process(
                settings_for(trace, load, min_r2, floor),
                MessageSource(functools.partial(iter, messages), 5000),
                flow_id="novacron_load_real",
            )
            counts = {o: _count(o) - before[o] for o in OUTCOMES}
            by = Counter(a.detector for a in run.alerts)
            tiers = ", ".join(f"{k} {v}" for k, v in by.most_common())
            print(
                f"{trace.name:12} {label:10} {days:5.1f} {run.windows_scored:8,} "
                f"{len(run.alerts):7} {len(run.alerts) / days:8.2f}  {tiers or '-'}"
            )
            if load:
                fitted = sum(counts.values())
                done = ", ".join(f"{o} {counts[o]:.0f}" for o in OUTCOMES if counts[o])
                print(f"{'':24}its {fitted:.0f} fitted windows ({len(names) - 1} series): {done}")
                tier = [a for a in run.alerts if a.detector == "load_residual"]
                listed += [(f"{trace.name} {label}", a) for a in tier]
            keys = {(a.series, a.window_start): a for a in run.alerts}
            if label == "shipped":
                shipped = keys
            elif floor is not None:
                more = [a for k, a in keys.items() if k not in shipped]
                fewer = [a for k, a in shipped.items() if k not in keys]
                added += [(f"{trace.name} {label}", a) for a in more]
                added += [(f"{trace.name} shipped", a) for a in fewer]
                print(
                    f"{'':24}{len(more)} alerts the shipped decision did not raise, "
                    f"{len(fewer)} it raised that this did not"
                )
    if args.list:
        print("\nalerts the tier decided:")
        for name, a in listed:
            _print_alert(name, a)
        if added:
            print("\nalerts of the shipped decision or a floor variant, not of both:")
        for name, a in added:
            _print_alert(name, a)
    return 0


def _print_alert(name: str, a: Alert) -> None:
    day = (parse_rfc3339_ms(a.window_start) - START_MS) / 86_400_000
    print(
        f"  {name:22} day {day:5.2f}  {a.metric:18} z={a.score:+.1f} {a.severity:8} "
        f"value {a.value:.4g}, expected {a.expected:.4g} ({a.value / a.expected - 1:+.1%}), "
        f"by {a.detector}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
