"""The default detect flow in-process, best of three runs: a quick A/B of two trees.

Same data every time (6 hosts x 10 metrics x 2 h at 5 s, one JSON object per message, a
fixed start), so two checkouts can be compared side by side, alternated:

    (cd TREE_A && PYTHONPATH=. python bench/bench_flow_best.py A)
    (cd TREE_B && PYTHONPATH=. python bench/bench_flow_best.py B)
"""

from __future__ import annotations

import sys

from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "this tree"
    sim = FleetSimulator(
        FleetConfig(hosts=6, clusters=2, duration_s=2 * 3600, start_ms=1_790_000_000_000)
    )
    msgs = list(sim.messages("json"))
    settings = Settings(ingest={"max_event_age_s": 0, "max_event_future_s": 0})
    best = min(
        run_in_process(settings, MessageSource(lambda: iter(msgs), 1000)).seconds for _ in range(3)
    )
    print(f"{name}: {len(msgs) / best:,.0f} events/s (best of 3, {len(msgs):,} events)")


if __name__ == "__main__":
    main()
