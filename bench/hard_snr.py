"""How visible the hard scenario's anomalies are to any window-mean detector (issue 17).

The hard scenario (`FleetConfig(difficulty="hard")`) sizes each anomaly in *noise widths*, a
width being the metric's sample-to-sample noise on that host (`std(diff) / sqrt 2` of the
hour's clean samples). A detector does not see samples but window means, and those also move
with the host's load, an AR(1) process (coefficient 0.9) that sample-to-sample differences
mostly cancel. This script measures, for every injected anomaly and each of its metrics, the
signal a perfect detector would have: the same fleet is generated twice, with and without
the injection (the injection draws its random numbers after the clean values, so the clean
values are the same), and the injected change of each one-minute window mean is divided by
the spread of the clean window means the robust-z gate compares against (1.4826 × MAD of the
previous hour's window means, the shipped `robust_z` baseline). The anomaly's "peak SNR" is
the largest of these over its windows (for `variance`: the largest ratio of a window's
standard deviation to the clean window's).

A second figure asks what a cross-metric decision could see (not a shipped tier): the same
injected change measured on the residual of the metric's window mean after a straight-line
fit, over the previous hour's clean windows, on the host's CPU window mean (network
utilisation for CPU itself), a proxy of the load that moves every metric of a host; its
width is 1.4826 x MAD of that hour's residuals. `--clean` adds the other side: the share of
clean windows (no injection, seeds 1-4) that either measure puts 5 widths from the last
hour's median, the false alarms such a gate would raise.

    python bench/hard_snr.py                      # seeds 1-8, 12 hosts x 6 h, as the demo
    python bench/hard_snr.py --seeds 7 --hosts 16
    python bench/hard_snr.py --clean              # and the clean windows' tails (~25 s)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/...` too

from novacron_ml.core.simulator import METRIC_NAMES, FleetConfig, FleetSimulator

START_MS = 1_795_996_800_000  # 2026-11-30T00:00:00Z, the demo commands' start
WINDOW_TICKS = 12  # 60 s windows of 5 s samples


class _Clean(FleetSimulator):
    def _inject(self, t_ms: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> None:
        return None


def _values(sim: FleetSimulator) -> tuple[np.ndarray, np.ndarray]:
    times, values = zip(*sim.ticks(), strict=True)
    return np.concatenate(times), np.concatenate(values)


def _windows(t_ms: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window start (ms), mean and std per window (windows x hosts x metrics)."""
    n = len(t_ms) // WINDOW_TICKS * WINDOW_TICKS
    shaped = v[:n].reshape(n // WINDOW_TICKS, WINDOW_TICKS, *v.shape[1:])
    return t_ms[:n:WINDOW_TICKS], shaped.mean(1), shaped.std(1, ddof=1)


def measure(seed: int, hosts: int, hours: float) -> list[dict[str, object]]:
    cfg = FleetConfig(
        hosts=hosts, duration_s=hours * 3600, start_ms=START_MS, seed=seed, difficulty="hard"
    )
    sim, clean = FleetSimulator(cfg), _Clean(cfg)
    t_ms, dirty = _values(sim)
    _, pure = _values(clean)
    starts, m_dirty, s_dirty = _windows(t_ms, dirty)
    _, m_pure, s_pure = _windows(t_ms, pure)
    host_index = {host: i for i, (_, host) in enumerate(sim.hosts)}
    rows = []
    for label in sim.labels:
        h = host_index[label.host]
        inside = (starts + 60_000 > label.start_ms) & (starts < label.end_ms)
        first = int(np.flatnonzero(inside)[0])
        for k, metric in enumerate(label.metrics):
            j = METRIC_NAMES.index(metric)
            past = m_pure[max(first - 60, 0) : first, h, j]
            med = float(np.median(past))
            scale = max(1.4826 * float(np.median(np.abs(past - med))), 1e-12)
            residual = float("nan")
            if label.shape == "variance":
                ratio = s_dirty[inside, h, j] / np.maximum(s_pure[inside, h, j], 1e-12)
                peak = float(ratio.max())
            else:
                delta = np.abs(m_dirty[inside, h, j] - m_pure[inside, h, j])
                peak = float(delta.max()) / scale
                x = _proxy(metric)
                fit = _LoadFit(m_pure[max(first - 60, 0) : first, h, x], past)
                moved = fit.residual(m_dirty[inside, h, x], m_dirty[inside, h, j])
                change = moved - fit.residual(m_pure[inside, h, x], m_pure[inside, h, j])
                residual = float(np.abs(change).max()) / fit.width
            rows.append(
                {
                    "seed": seed,
                    "type": label.type,
                    "shape": label.shape,
                    "metric": metric,
                    "root": k == 0,
                    "peak": peak,
                    "residual": residual,
                }
            )
    return rows


def _proxy(metric: str) -> int:
    """The load proxy a metric's residual is taken against."""
    return METRIC_NAMES.index("network_util" if metric == "cpu_util" else "cpu_util")


class _LoadFit:
    """A straight line from the proxy's window means to the metric's, fitted on an hour of
    windows, and the robust width of its residuals there."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        line = np.polyfit(x, y, 1) if np.ptp(x) > 0 else np.zeros(2)
        self.slope, self.intercept = float(line[0]), float(line[1])
        r = y - (self.intercept + self.slope * x)
        self.centre = float(np.median(r))
        self.width = max(1.4826 * float(np.median(np.abs(r - self.centre))), 1e-12)

    def residual(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return y - (self.intercept + self.slope * x)


def clean_tails(seeds: list[int], hosts: int, hours: float) -> tuple[int, float, float]:
    """Windows of clean fleets (no injection) scored against their previous hour: how many,
    and the shares 5 widths from the median by the window mean and by its load residual."""
    n = plain = residual = 0
    for seed in seeds:
        cfg = FleetConfig(
            hosts=hosts, duration_s=hours * 3600, start_ms=START_MS, seed=seed, difficulty="hard"
        )
        _, means, _ = _windows(*_values(_Clean(cfg)))
        for h in range(hosts):
            for j, metric in enumerate(METRIC_NAMES):
                x = _proxy(metric)
                for w in range(60, len(means)):
                    past = means[w - 60 : w, h, j]
                    med = float(np.median(past))
                    scale = max(1.4826 * float(np.median(np.abs(past - med))), 1e-12)
                    fit = _LoadFit(means[w - 60 : w, h, x], past)
                    now = fit.residual(means[w : w + 1, h, x], means[w : w + 1, h, j])[0]
                    n += 1
                    plain += abs(float(means[w, h, j]) - med) >= 5 * scale
                    residual += abs(float(now) - fit.centre) >= 5 * fit.width
    return n, plain / max(n, 1), residual / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(1, 9)))
    ap.add_argument("--hosts", type=int, default=12)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--clean", action="store_true", help="also the clean windows' tails")
    args = ap.parse_args()
    rows = [r for s in args.seeds for r in measure(s, args.hosts, args.hours)]
    print(f"seeds {args.seeds}, {args.hosts} hosts x {args.hours:g} h: {len(rows)} anomaly-metrics")
    print("peak SNR of each anomaly's root metric (mean shapes: injected change of a window")
    print("mean / the gate's noise width; variance: window std / clean window std; the type")
    print("rows: the mean shapes only; 'load residual': the same change on the residual of")
    print("a line fitted on the host's CPU, a load proxy, not a shipped tier)")
    print(
        f"{'':24} {'n':>3} {'median':>7} {'>= 3':>6} {'>= 5':>6}  "
        f"{'load residual: median':>21} {'>= 5':>6}  (share of anomalies)"
    )
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["root"]:
            pair = (float(r["peak"]), float(r["residual"]))  # type: ignore[arg-type]
            groups[f"shape {r['shape']}"].append(pair)
            if r["shape"] != "variance":  # its figure is a ratio of spreads, not a mean's SNR
                groups[f"type {r['type']}"].append(pair)
    for name in sorted(groups):
        peaks, residuals = np.array(groups[name]).T
        line = (
            f"{name:24} {len(peaks):3d} {float(np.median(peaks)):7.2f} "
            f"{(peaks >= 3).mean():6.0%} {(peaks >= 5).mean():6.0%}"
        )
        if not np.isnan(residuals).all():
            line += f"  {float(np.median(residuals)):21.2f} {(residuals >= 5).mean():6.0%}"
        print(line)
    mean_rows = [r for r in rows if r["shape"] != "variance"]
    any_metric: dict[tuple[object, ...], float] = defaultdict(float)
    for r in mean_rows:
        key = (r["seed"], r["type"], r["shape"])
        any_metric[key] = max(any_metric[key], float(r["peak"]))  # type: ignore[arg-type]
    any_residual: dict[tuple[object, ...], float] = defaultdict(float)
    for r in mean_rows:
        key = (r["seed"], r["type"], r["shape"])
        any_residual[key] = max(any_residual[key], float(r["residual"]))  # type: ignore[arg-type]
    by_residual = np.array(list(any_residual.values()))
    peaks = np.array(list(any_metric.values()))
    if len(peaks):
        print(
            f"mean shapes, best metric of each anomaly: {len(peaks)} anomalies, "
            f"{(peaks >= 5).mean():.0%} reach 5 widths (the shipped gate), "
            f"{(peaks >= 3).mean():.0%} reach 3, median {float(np.median(peaks)):.2f}"
            + ("" if math.isfinite(float(peaks.max())) else " (some infinite)")
        )
        print(
            f"the same by the load residual: {(by_residual >= 5).mean():.0%} reach 5 widths, "
            f"{(by_residual >= 3).mean():.0%} reach 3, median {float(np.median(by_residual)):.2f}"
        )
    if args.clean:
        n, plain, residual = clean_tails([1, 2, 3, 4], args.hosts, args.hours)
        print(
            f"clean windows 5 widths out (no injection, seeds 1-4, {n:,} windows): "
            f"window mean {plain:.3%}, load residual {residual:.3%}"
        )


if __name__ == "__main__":
    main()
