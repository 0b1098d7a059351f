"""`novacron-ml nab`: the detect flow over NAB-style CSV files, scored."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import writes


def cmd_nab(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import table
    from novacron_ml.app.nab import PROFILES, load_profiles
    from novacron_ml.app.nab_runner import (
        leave_one_category_out,
        print_problems,
        report_html,
        run_directory,
        score_alerts,
        score_by_category,
        score_run,
    )
    from novacron_ml.core.settings import load_settings

    if not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    if (args.per_file or args.plots) and not args.labels:
        raise ValueError("--per-file and --plots score the run: they need --labels")
    settings = load_settings()

    def progress(i: int, n: int, name: str) -> None:
        print(f"\r[{i}/{n}] {name:<70}", end="", file=sys.stderr, flush=True)

    start = time.perf_counter()
    run = run_directory(args.data, args.out, args.detector, settings, progress)
    print(
        f"\rscored {len(run.files)} files in {time.perf_counter() - start:.1f} s -> {args.out}"
        + " " * 40,
        file=sys.stderr,
    )
    print_problems(run.problems)
    if args.labels:
        profiles = load_profiles(args.profiles) if args.profiles else PROFILES
        results = score_run(run, args.labels, profiles)
        alerts = score_alerts(run, args.labels, profiles)
        opened = score_alerts(run, args.labels, profiles, opened=True)
        rows = [
            [r.profile, r.score, r.threshold, r.raw, a.score, o.score]
            for r, a, o in zip(results, alerts, opened, strict=True)
        ]
        print(
            "NAB: the alert decision's probability (threshold swept per profile), and its "
            "alerts at the shipped firing level (no sweep): every alert row, and the rows "
            "that opened an episode"
        )
        header = ["profile", "NAB score", "threshold", "raw score", "alerts", "episodes opened"]
        print(table(rows, header))
        held = leave_one_category_out(run, args.labels, profiles[0]) if results else None
        if held is not None:
            print(
                f"leave one category out, {profiles[0].name} profile: {held.score:.2f} "
                f"(each category at the threshold swept on the others: "
                + ", ".join(f"{c} {t:.4f}" for c, t in held.thresholds.items())
                + ")"
            )
        if args.per_file and results:
            first = results[0]
            print(f"\nper file, {first.profile} profile at its threshold {first.threshold:.4f}:")
            per_file = [[f.name, f.tp + f.fn, f.tp, f.fn, f.fp, f.raw] for f in first.files]
            print(table(per_file, ["file", "windows", "detected", "missed", "false pos.", "raw"]))
            per_category = [
                [name, n_files, n_windows, part.score]
                for name, n_files, n_windows, part in score_by_category(
                    run, args.labels, profiles[0]
                )
            ]
            print(f"\nper category, {first.profile} profile, threshold swept within each:")
            print(table(per_category, ["category", "files", "windows", "NAB score"]))
        if args.plots and results:
            Path(args.plots).write_text(report_html(run, args.labels, results[0]))
            print(f"plots of {len(run.files)} files -> {args.plots}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        r.profile: {
                            "score": r.score,
                            "threshold": r.threshold,
                            "alerts_score": a.score,
                            "episodes_opened_score": o.score,
                            "files": {
                                f.name: {"raw": f.raw, "tp": f.tp, "fp": f.fp, "fn": f.fn}
                                for f in r.files
                            },
                        }
                        for r, a, o in zip(results, alerts, opened, strict=True)
                    }
                    | (
                        {"leave_one_category_out": {"score": held.score, **held.thresholds}}
                        if held is not None
                        else {}
                    ),
                    indent=2,
                )
            )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "nab",
        help="run the detect flow over NAB-style CSV files and (optionally) score them",
        description="Run the detect flow (event-time, from the files) over every "
        "DATA/<category>/<name>.csv with columns timestamp,value, and write "
        "OUT/<category>/<detector>_<name>.csv with timestamp,value,anomaly_score,alert,opened: "
        "the probability the alert decision fired on, 1 where it alerted, 1 where that alert "
        "opened an episode. With --labels "
        "(NAB's combined_windows.json) also print the NAB scores of the three profiles: the "
        "probability with one threshold per profile swept over the whole corpus, the alerts "
        "at the shipped firing level (no sweep), and a leave-one-category-out score (each "
        "category at the threshold swept on the others; with two or more categories).",
    )
    p.add_argument("--data", type=Path, required=True, help="directory of <category>/<name>.csv")
    p.add_argument("--out", type=Path, required=True, help="directory for the results files")
    p.add_argument("--labels", type=Path, help="combined_windows.json to score against")
    p.add_argument("--profiles", type=Path, help="NAB profiles.json (default: NAB's three)")
    p.add_argument(
        "--per-file",
        action="store_true",
        help="with --labels, also print each file's windows detected and missed, false "
        "positives and raw score (first profile, at its threshold)",
    )
    p.add_argument(
        "--plots",
        metavar="HTML",
        help="with --labels, write one plot per file here: values, label windows and the rows "
        "at or above the first profile's threshold, biggest losses first",
    )
    p.add_argument("--detector", default="novacron", help="detector name in file names")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    writes(p, "out", "plots", "json")
    p.set_defaults(func=cmd_nab)
