"""Parsing and validation throughput per wire format (one process, no Bytewax).

python bench/bench_parse.py
"""

from __future__ import annotations

import platform
import time

from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.ingest.parse import MessageParser, ParseLimits, wall_clock_ms


def main() -> None:
    sim = FleetSimulator(FleetConfig(hosts=10, duration_s=3600, start_ms=1_790_000_000_000))
    parser = MessageParser(ParseLimits(max_event_age_ms=0))
    print(f"python {platform.python_version()}; simulator: 10 hosts x 10 metrics x 1 h at 5 s")
    print(f"{'format':<12}{'events/s':>12}{'messages/s':>13}")
    for fmt in ("json", "json-array", "line"):
        messages = list(sim.messages(fmt))
        events: list[object] = []
        dead: list[object] = []
        start = time.perf_counter()
        now = wall_clock_ms()
        for key, value in messages:
            parser.parse_into(value, key, "", now, events, dead)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        assert not dead
        print(f"{fmt:<12}{len(events) / seconds:>12,.0f}{len(messages) / seconds:>13,.0f}")


if __name__ == "__main__":
    main()
