"""What the tuning flow's bandwidth loop buys on the six real traffic series (issue 21;
docs/TUNING.md#bandwidth-flow, docs/QUALITY.md).

    python bench/bandwidth_flow.py [--hosts host-1 host-2 host-3]

A real `BandwidthTuner` (apply mode, canary 100 %, no cooldown) is fed each series as a host's
`pba_demand_mbps`, one report per 5-minute sample, once per host name (the name sets the
day boundaries: `decision_offset`); every day after its first decision is then run with the
setting the loop had in force, and its cost is compared with the default setting's on the
same days. Printed per series: tuned cost ÷ default cost (lower is better), with the
default guardrails and with the safe set off (throughput margin 100 %), and the changes
applied. Then a host's cost to the flow: the daily rerun's time and its pickled state with
a full history.
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np

from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.tuning import DEFAULT_PBA, BandwidthSetting
from operators.tuning.bandwidth import (
    CONFIGS,
    SAMPLE_MS,
    SCALE_SAMPLES,
    SEGMENT,
    BandwidthContext,
    BandwidthTuner,
    decision_offset,
    rerun_day,
    run_predictor,
)
from operators.tuning.guardrails import GuardrailConfig
from training.tuning.bandwidth import traffic_series


def run(y: np.ndarray, host: str, guard: GuardrailConfig) -> tuple[float, int]:
    """(tuned cost / default cost over the days after the first decision, changes)."""
    ctx = BandwidthContext(guard, mode="apply")
    tuner = BandwidthTuner(host)
    in_force: dict[int, tuple[float, ...]] = {}
    changes = 0
    for i, v in enumerate(y):
        for o in tuner.on_event(MetricEvent(i * SAMPLE_MS, host, "c", "pba_demand_mbps",
                                            float(v)), ctx):  # fmt: skip
            if isinstance(o, BandwidthSetting):
                changes += 1
        in_force[i] = tuple(tuner.config)
    first = 2 * SEGMENT + decision_offset(host)
    tuned = default = 0.0
    for start in range(first, len(y) - 1, SEGMENT):
        stop = min(start + SEGMENT, len(y))
        w, c, u = in_force[start]
        tuned += -run_predictor(y, start, stop, int(w), c, int(u))["reward"]
        dw, dc, du = DEFAULT_PBA
        default += -run_predictor(y, start, stop, int(dw), dc, int(du))["reward"]
    return tuned / default, changes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", nargs="+", default=["host-1", "host-2", "host-3"])
    args = p.parse_args()
    series = traffic_series()
    guarded = GuardrailConfig(canary_fraction=1.0, cooldown_s=0.0)
    lax = GuardrailConfig(canary_fraction=1.0, cooldown_s=0.0, throughput_margin=0.999)
    means: dict[str, list[float]] = {"guarded": [], "no safe set": []}
    print(f"{'series':<36} {'host':<8} {'offset':>6}  tuned/default (changes): guarded, "
          "no safe set")  # fmt: skip
    for name, y in series.items():
        for host in args.hosts:
            a, na = run(y, host, guarded)
            b, nb = run(y, host, lax)
            means["guarded"].append(a)
            means["no safe set"].append(b)
            print(f"{name:<36} {host:<8} {decision_offset(host):>6}  {a:.3f} ({na}), "
                  f"{b:.3f} ({nb})")  # fmt: skip
    for k, v in means.items():
        print(f"mean over {len(v)} runs, {k}: {np.mean(v):.3f} (worst {max(v):.3f})")
    # what a host costs the flow: the daily rerun of the grid, and its state (a full history)
    y = next(iter(series.values()))
    tuner = BandwidthTuner("host-1")
    ctx = BandwidthContext(guarded)
    for i, v in enumerate(y[: SCALE_SAMPLES + SEGMENT + 1]):
        tuner.on_event(MetricEvent(i * SAMPLE_MS, "host-1", "c", "pba_demand_mbps", float(v)), ctx)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        rerun_day(np.asarray(tuner.samples))
        times.append(time.perf_counter() - t0)
    print(
        f"daily rerun of {len(CONFIGS)} settings on {len(tuner.samples):,} samples: "
        + " · ".join(f"{t:.2f} s" for t in times)
        + f"; a host's state {len(pickle.dumps(tuner)) / 1024:.1f} KB pickled"
    )


if __name__ == "__main__":
    main()
