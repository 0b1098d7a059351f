"""Ablation of the alert decision (issue 17): each part on and off, NAB and the simulator.

Every variant runs the production detect flow twice: over the NAB development split
(`novacron-ml nab`'s runner: the probability swept, the alerts at the shipped level with no
sweep, the rows that opened an episode, and leave one category out) and over a simulated
fleet (`novacron-ml demo`'s scenario without the forecaster, so only the decision alerts:
precision, recall, lowest per-type precision and recall, false-positive windows). A variant is
a set of `detector.*` settings on top of the defaults; the first row is the shipped decision.

    python bench/decision_ablation.py                          # every variant, ~2 min each
    python bench/decision_ablation.py --only shipped no-gate   # some of them
    python bench/decision_ablation.py --seed 21 --hosts 16 --hours 8
    python bench/decision_ablation.py --no-nab --difficulty hard  # the hard scenario only
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from novacron_ml.app.demo import false_positive_windows, run_demo
from novacron_ml.app.nab import PROFILES
from novacron_ml.app.nab_runner import (
    leave_one_category_out,
    run_directory,
    score_alerts,
    score_run,
)
from novacron_ml.core.schema import parse_rfc3339_ms
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig

ROOT = Path(__file__).resolve().parents[1]
NAB = ROOT.parent / "shared" / "data" / "nab"

VARIANTS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "no-gate": {"min_deviation": 0.0},
    "gate-4": {"min_deviation": 4.0},
    "gate-6": {"min_deviation": 6.0},
    "no-spread": {"spread_threshold": 0.0},
    "spread-6": {"spread_threshold": 6.0},
    "no-load": {"load_threshold": 0.0},
    "load-5": {"load_threshold": 5.0},
    "load-8": {"load_threshold": 8.0},
    # the load tier's two guards against a proxy that moved (docs/DETECTION.md item 8)
    "gate-2": {"load_proxy_gate": 2.0},
    "gate-5": {"load_proxy_gate": 5.0},
    "vote-2": {"load_proxy_vote": 2.0},
    "vote-5": {"load_proxy_vote": 5.0},
    # the load tier's runs of windows in a row (stop 44): none (the decision before), the
    # longest scale alone, the shipped (2, 4), and every length from 2 to 4
    "no-runs": {"load_runs": []},
    "runs-4": {"load_runs": [4]},
    "runs-2-3-4": {"load_runs": [2, 3, 4]},
    # which series the tier judges: all (0), or those the load explains (shipped 0.5)
    "r2-0": {"load_min_r2": 0.0},
    "r2-0.3": {"load_min_r2": 0.3},
    "r2-0.7": {"load_min_r2": 0.7},
    # robust z's (and the load tier's) scale floor, 1 % of the series' level (a near-constant
    # series does not alert on rounding); the hard scenario sizes some anomalies below it;
    # `resolution`: floored at the series' resolution instead (QUALITY.md)
    "resolution": {"relative_floor": 0.0},
    "floor-0.3%": {"relative_floor": 0.003},
    # the scale widened while the baseline fills (stop 43); without it: the decision before
    "no-widening": {"warmup_widening": False},
    "resolution-no-widening": {"relative_floor": 0.0, "warmup_widening": False},
    "no-hold": {"hold_windows": 0},
    "hold-5": {"hold_windows": 5},
    "hold-20": {"hold_windows": 20},
    "rearm-10": {"rearm_after_windows": 10},
    "rearm-40": {"rearm_after_windows": 40},
    "cooldown-50": {"cooldown_windows": 50},
    "resolve-3": {"resolve_after_windows": 3},
    "no-rearm": {"rearm_after_windows": 10_000},
    "no-hold-no-rearm": {"hold_windows": 0, "rearm_after_windows": 10_000},
    "+river": {"probability_tiers": ["novelty", "river"], "river": True},
    "+iforest": {"probability_tiers": ["novelty", "iforest"], "iforest_models": "models/onnx"},
    "+robust_z": {"probability_tiers": ["novelty", "robust_z"]},
    # a shorter novelty search (its cost per window is linear in it: the live-latency target
    # of issue 18); at 60 s windows 1,440 shapes are a day, 360 six hours
    "novelty-720": {"novelty_history": 720},
    "novelty-360": {"novelty_history": 360},
}


def settings_for(update: dict[str, Any]) -> Settings:
    base = Settings()
    return base.model_copy(
        update={
            "detector": base.detector.model_validate(base.detector.model_dump() | update),
            "forecast": base.forecast.model_copy(update={"enabled": False}),
        }
    )


def nab_row(settings: Settings, labels: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        run = run_directory(NAB / "data", Path(out), "ablation", settings)
    swept = score_run(run, labels)
    alerts = score_alerts(run, labels)
    opened = score_alerts(run, labels, opened=True)
    return {
        "nab": swept[0].score,
        "nab_low_fp": swept[1].score,
        "nab_low_fn": swept[2].score,
        "alerts": alerts[0].score,
        "opened": opened[0].score,
        "loco": held.score
        if (held := leave_one_category_out(run, labels, PROFILES[0]))
        else float("nan"),
    }


def sim_row(settings: Settings, fleet: FleetConfig) -> dict[str, float]:
    with contextlib.redirect_stderr(io.StringIO()):
        result = run_demo(settings, fleet, quiet=True)
    ev = result.evaluation
    types = ev.by_type.values()
    return {
        "precision": ev.precision or 0.0,
        "recall": ev.recall or 0.0,
        "min_type_precision": min((t.precision or 0.0 for t in types if t.alerts), default=0.0),
        "min_type_recall": min((t.recall or 0.0 for t in types if t.labels), default=0.0),
        "fp_windows": false_positive_windows(result) / max(result.windows, 1),
        "alerts": float(ev.alerts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="variants to run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument(
        "--difficulty", choices=["default", "hard"], default="default", help="the scenario"
    )
    parser.add_argument("--no-nab", action="store_true", help="the simulator only")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    labels = NAB / "labels" / "combined_windows.json"
    fleet = FleetConfig(
        hosts=args.hosts,
        duration_s=args.hours * 3600,
        seed=args.seed,
        start_ms=parse_rfc3339_ms("2026-11-30T00:00:00Z"),
        difficulty=args.difficulty,
    )
    print(
        f"NAB development split ({NAB / 'data'}) and the simulator (seed {args.seed}, "
        f"{args.hosts} hosts, {args.hours:g} h, {args.difficulty} scenario, forecaster off)\n"
    )
    header = (
        f"{'variant':<18} {'NAB':>6} {'lowFP':>6} {'lowFN':>6} {'alerts':>6} {'opened':>6} "
        f"{'LOCO':>6} | {'prec':>5} {'recall':>6} {'minTP':>5} {'minTR':>5} {'FPwin':>7} "
        f"{'alerts':>6} {'s':>4}"
    )
    print(header)
    rows = {}
    for name in args.only or list(VARIANTS):
        start = time.perf_counter()
        settings = settings_for(VARIANTS[name])
        nab = {} if args.no_nab else nab_row(settings, labels)
        sim = sim_row(settings, fleet)
        rows[name] = {"settings": VARIANTS[name], "nab": nab, "sim": sim}
        n = nab or dict.fromkeys(("nab", "nab_low_fp", "nab_low_fn", "alerts", "opened", "loco"), 0)
        print(
            f"{name:<18} {n['nab']:6.2f} {n['nab_low_fp']:6.2f} {n['nab_low_fn']:6.2f} "
            f"{n['alerts']:6.2f} {n['opened']:6.2f} {n['loco']:6.2f} | "
            f"{sim['precision']:5.3f} {sim['recall']:6.3f} {sim['min_type_precision']:5.3f} "
            f"{sim['min_type_recall']:5.3f} {sim['fp_windows']:7.3%} {sim['alerts']:6.0f} "
            f"{time.perf_counter() - start:4.0f}",
            flush=True,
        )
    print(
        "\nNAB: standard profile swept, reward_low_FP/FN swept, the alerts and the episode "
        "openings at the shipped level (no sweep), leave one category out (standard). "
        "Simulator: precision/recall of the decision's alerts (host and time match), lowest "
        "per-type precision and recall, false-positive windows over windows scored."
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
