"""Input drift of the served tuning policy on a healthy closed loop: the PSI of the states it
decided on against its training states (the manifest's reference: a replay-buffer sample),
beside the share of those states outside the training range, per input
(docs/REGISTRY.md#drift).

    python bench/policy_drift.py [--policy models/onnx/dqn_compression] [--hosts 20] [--hours 6]

The tuning flow (`dataflows.tune`, apply mode, every host in the canary) runs in process on
the simulator's closed loop (the demo's: the hosts' DWCP metrics answer the knobs through the
measured table). A healthy fleet: whatever a figure says here, none of it is drift.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from bytewax.testing import run_main

    from dataflows.io import CallbackSink, MessageSource
    from dataflows.tune import build_flow, tuner_context
    from novacron_ml.app.console import table
    from novacron_ml.app.tune_demo import ClosedLoop
    from novacron_ml.core import metrics
    from novacron_ml.core.manifest import Reference
    from novacron_ml.core.registry import parse_ref
    from novacron_ml.core.settings import Settings
    from novacron_ml.core.simulator import FleetConfig, FleetSimulator
    from operators import drift
    from operators.tuning.policy import OnnxPolicy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--policy", default="models/onnx/dqn_compression")
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--hours", type=float, default=6.0)
    args = p.parse_args()
    start = time.perf_counter()
    manifest = OnnxPolicy(parse_ref(args.policy).manifest_path()).manifest
    reference = manifest.reference
    if reference is None or reference.low is None:
        raise SystemExit(f"{args.policy}: its manifest has no reference with a training range")
    seen: list[np.ndarray] = []
    observe = drift.observe_support

    def capture(model: str, reference: Reference | None, x: np.ndarray) -> None:
        seen.append(np.array(x, dtype=np.float64))
        observe(model, reference, x)

    drift.observe_support = capture
    settings = Settings(tune={"mode": "apply", "canary_fraction": 1.0, "policy": args.policy})
    sim = FleetSimulator(FleetConfig(hosts=args.hosts, clusters=1,
                                     duration_s=args.hours * 3600, step_s=10))  # fmt: skip
    loop = ClosedLoop(sim, tuner_context(settings), 1.0)
    sim.hook = loop.hook
    out: list[Any] = []
    run_main(build_flow(settings, MessageSource(lambda: sim.messages("json"), 500),
                        CallbackSink(out.extend), kafka_output=False))  # fmt: skip
    states = np.concatenate(seen) if seen else np.empty((0, len(reference.inputs)))
    psi = drift.InputDrift(reference, window=max(len(states), 1), min_rows=1).add(states)
    gauges = {s.labels["input"]: s.value for m in metrics.MODEL_INPUT_OUTSIDE.collect()
              for s in m.samples if s.labels["model"] == manifest.name}  # fmt: skip
    rows = [
        [name, f"{value:.3f}", f"{gauges.get(name, float('nan')):.3f}"]
        for name, value in sorted(zip(reference.inputs, psi, strict=False), key=lambda r: -r[1])
    ]
    print(f"{manifest.name}@{manifest.version}: {args.hosts} hosts x {args.hours:g} h of the "
          f"closed loop, {len(states):,} decisions")  # fmt: skip
    print(table(rows, ["input", "PSI vs training states", "share outside training range"]))
    print(f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
