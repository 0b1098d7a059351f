"""The capacity path's pipelines that need the detect flow (the CLI only parses and prints)."""

from __future__ import annotations

from typing import Any

from dataflows.inprocess import run_in_process
from dataflows.io import simulator_source
from novacron_ml.app.console import Progress
from novacron_ml.core.settings import load_settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator


def simulated_hourly_records(
    days: float, hosts: int, clusters: int, seed: int
) -> list[dict[str, Any]]:
    """Hourly aggregates of a simulated fleet, made by the detect flow's own hourly branch,
    as the records of the hourly topic (`training.planner.histories_from_records` reads them)."""
    sim = FleetSimulator(
        FleetConfig(
            hosts=hosts,
            clusters=clusters,
            step_s=300.0,
            duration_s=days * 86_400.0,
            seed=seed,
            anomalies_per_host_per_hour=0.0,
        )
    )
    settings = load_settings(
        topics={"hourly": "metrics.hourly"},
        ingest={"max_event_age_s": 0},
        window={"length_s": 300.0},
        features={"step_s": 300.0},
    )
    bar = Progress(f"simulating {days:g} days of {hosts} hosts", sim.n_events)
    try:
        hourly = run_in_process(settings, simulator_source(sim), progress=bar.update).hourly
    finally:
        bar.close()
    out = [
        {
            "cluster": i.cluster,
            "resource": i.resource,
            "hour_start_ms": i.hour_start_ms,
            "mean": i.mean,
        }
        for i in hourly
    ]
    return out
