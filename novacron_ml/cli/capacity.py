"""`novacron-ml capacity ...`: backtest, plan, report, simulate (needs the `train` extra)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novacron_ml.cli.common import csv_series_args, require_train_extra, writes

if TYPE_CHECKING:
    from training.planner import HourlyHistory


def _require_train() -> None:
    from training.logs import quiet_prophet

    quiet_prophet()  # before prophet's import, which logs about plotly
    require_train_extra("pandas", "prophet", "statsforecast")
    quiet_prophet()  # prophet's import configures cmdstanpy's logger again


def _bar(total: int, desc: str, unit: str = "series") -> Any:
    from novacron_ml.cli.common import Bar

    return Bar(total, desc, unit)


def _capacity_settings(args: argparse.Namespace, settings: Any = None) -> Any:
    """The `capacity` settings with this command's --workers/--engine/--scheduler/--fast/
    --selection applied."""
    from novacron_ml.core.settings import load_settings

    cap = (settings or load_settings()).capacity
    update = {
        key: getattr(args, key)
        for key in ("workers", "engine", "scheduler", "selection")
        if getattr(args, key, None) is not None
    }
    if getattr(args, "fast", False):
        update["fast"] = True
    # validated like the settings themselves: a bad --selection is one line, before any fit
    return type(cap).model_validate({**cap.model_dump(), **update}) if update else cap


def cmd_backtest(args: argparse.Namespace) -> int:
    _require_train()
    from novacron_ml.app.console import table
    from training.capacity import FAST_MODELS, MODELS, RULES, ModelOptions, backtest_job, overall
    from training.fleet import run_tasks
    from training.series_io import aggregate, load_series

    models = args.models or list(MODELS)
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)} (known: {', '.join(MODELS)})")
    series = []
    for path in args.csv:  # load and check everything before the first (slow) fit
        for column in args.value_column:
            s = load_series(
                path,
                column,
                args.time_column,
                step_s=args.step_s,
                min_length=args.horizon + 2,
                min_length_reason=f"horizon {args.horizon} plus training data",
            )
            if args.aggregate:
                s = aggregate(s, args.aggregate)
            for w in s.warnings:
                print(f"warning: {w}", file=sys.stderr)
            series.append((f"{path}:{column}", s))
    opts = ModelOptions(
        level=args.level,
        uncertainty_samples=args.uncertainty_samples,
        changepoints=args.changepoints,
        holidays_country=args.holidays,
        season_override=args.season,
        fast=args.fast,
    )
    if args.fast:  # the planner's fast path: its candidates, daily season only
        models = [m for m in models if m in FAST_MODELS] or list(FAST_MODELS)
    cap = _capacity_settings(args)
    bar = _bar(len(series), "backtest")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        results = run_tasks(
            backtest_job,
            [(s, args.horizon, models, args.windows, opts) for _name, s in series],
            engine=cap.engine,
            workers=cap.workers,
            scheduler=cap.scheduler,
            progress=progress,
        )
    finally:
        bar.close()
    files = {}
    for (name, s), r in zip(series, results, strict=True):
        files[name] = {"rows": len(s), "step_s": s.step_s, **r.summary()}
    summary = overall(results)
    report = {
        "command": args.invocation,
        "generated_at": datetime.now(UTC).isoformat(),
        "horizon": args.horizon,
        "windows": args.windows,
        "level": args.level,
        "engine": "local" if (cap.workers == 1 and not cap.scheduler) else cap.engine,
        "aggregate_s": args.aggregate,
        "fast": args.fast,
        "seconds": round(time.perf_counter() - start, 2),
        "notes": "window 0 of each file is warm-up: interval calibration and each rule's"
        " weights for window k use windows < k only; metrics are means over the scored windows;"
        " 'chosen' = rule:select (per-series CV-best), kept for older readers",
        "files": files,
        "overall": summary,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))

    def f(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    shipped = cap.selection

    def label(rule: str) -> str:
        return f"rule:{rule}" + (" (planner)" if rule == shipped else "")

    rows = []
    for name, r in zip(files, results, strict=True):
        for m in models:
            pm = r.per_model[m]
            rows.append([name, m, f(pm["mase"]), f(pm["accuracy"], 2), f(pm["coverage"], 3)])
        for rule in RULES:
            c = r.rules[rule]
            rows.append([name, label(rule), f(c["mase"]), f(c["accuracy"], 2), f(c["coverage"], 3)])
    for key in [*models, *(f"rule:{rule}" for rule in RULES)]:
        o = summary[key]
        name = label(key[5:]) if key.startswith("rule:") else key
        rows.append(["OVERALL", name, f(o["mase"]), f(o["accuracy"], 2), f(o["coverage"], 3)])
    print(table(rows, ["series", "model or rule", "MASE", "accuracy %", "coverage"]))
    print(f"wrote {args.json} ({report['seconds']} s)")
    return 0


def _histories(args: argparse.Namespace, settings: Any) -> list[HourlyHistory]:
    from novacron_ml.core import kafka as kafka_io
    from training.planner import histories_from_records, read_hourly_csv

    if args.csv:
        return read_hourly_csv(args.csv)
    topic = settings.topics.hourly or "metrics.hourly"
    bootstrap = settings.kafka.bootstrap_servers
    kafka_io.wait_ready(bootstrap, args.wait)
    records = [json.loads(r.value) for r in kafka_io.iter_topic(bootstrap, topic, args.wait)]
    if not records:
        raise ValueError(
            f"topic {topic} holds no hourly aggregates (run the detect flow with"
            " NOVACRON_TOPICS_HOURLY set, or pass --csv)"
        )
    return histories_from_records(records)


def _plan(args: argparse.Namespace) -> tuple[Any, list[Any], list[str], str]:
    _require_train()
    from novacron_ml.core.settings import load_settings
    from training.planner import plan_all

    settings = load_settings()
    settings = settings.model_copy(update={"capacity": _capacity_settings(args, settings)})
    histories = _histories(args, settings)
    if args.resource:
        histories = [h for h in histories if h.resource in set(args.resource)]
    if not histories:
        raise ValueError("no series to plan")
    bar = _bar(len(histories), "plan")

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    try:
        plans, problems = plan_all(histories, settings, progress=progress)
    finally:
        bar.close()
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    generated = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return settings, plans, problems, generated


def _print_plans(plans: list[Any], settings: Any = None) -> None:
    from novacron_ml.app.console import table
    from training.capacity_report import accuracy_summary

    rows = []
    for p in plans:
        days = p.days_to_exhaustion
        rows.append(
            [
                p.key,
                p.urgency or "-",
                "-" if days is None else f"{days:.1f}",
                f"{float(p.history[-1]):.4g}",
                "-" if p.capacity is None else f"{p.capacity:.4g}",
                p.model,
            ]
        )
    print(table(rows, ["series", "urgency", "days left", "current", "capacity", "model"]))
    counts = Counter(p.urgency for p in plans if p.urgency)
    print(
        "urgency: "
        + ", ".join(f"{u} {counts.get(u, 0)}" for u in ("URGENT", "HIGH", "MEDIUM", "LOW"))
    )
    country = settings.capacity.holidays_country if settings is not None else None

    def f(x: Any, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    summary = [
        [r["resource"], r["series"], f(r["accuracy"]), f(r["holiday_accuracy"]),
         r["holiday_hours"], f(r["coverage"], 3)]
        for r in accuracy_summary(plans, country)
    ]  # fmt: skip
    print("out-of-sample CV of the plan's forecasts (accuracy = 100 - MAPE):")
    print(
        table(
            summary,
            ["resource", "series", "accuracy %", "holiday acc. %", "holiday h", "coverage"],
        )
    )


def cmd_plan(args: argparse.Namespace) -> int:
    """One plan, or with --every H a plan every H hours (the daily refresh) until interrupted."""
    if args.metrics_port is not None:
        from novacron_ml.core.metrics import initialise_capacity, serve_metrics
        from novacron_ml.core.settings import load_settings

        serve_metrics(args.metrics_port, load_settings().observability.metrics_bind)
        initialise_capacity()
    if not args.every:
        try:
            rc = _counted_plan(args)
        finally:
            pushed = _push(args)
        return rc or pushed
    while True:
        started = time.monotonic()
        try:
            rc = _counted_plan(args)
        except Exception as exc:  # no hourly data yet, Kafka away...: say so, try at the next slot
            print(f"capacity plan: {type(exc).__name__}: {exc}", file=sys.stderr)
            rc = 1
        rc = rc or _push(args)
        wait = max(0.0, args.every * 3600.0 - (time.monotonic() - started))
        print(f"plan done (exit {rc}); next in {wait / 3600:.2f} h (Ctrl-C stops)", flush=True)
        try:
            time.sleep(wait)
        except KeyboardInterrupt:
            return 0


def _push(args: argparse.Namespace) -> int:
    """With --pushgateway: the planner's gauges pushed there (0), or one line and 1."""
    if not args.pushgateway:
        return 0
    from novacron_ml.core.metrics import push_capacity

    try:
        push_capacity(args.pushgateway)
    except OSError as exc:  # URLError, connection refused, timeout
        print(f"capacity plan: could not push to {args.pushgateway}: {exc}", file=sys.stderr)
        return 1
    print(f"pushed the planner's gauges to {args.pushgateway} (job novacron-capacity)")
    return 0


def _counted_plan(args: argparse.Namespace) -> int:
    """`_plan_once`, counted in novacron_capacity_plans_total{outcome} (a plan that raises or
    plans nothing failed)."""
    from novacron_ml.core import metrics

    rc = 1
    try:
        rc = _plan_once(args)
    finally:
        metrics.CAPACITY_PLANS.labels(outcome="ok" if rc == 0 else "failed").inc()
        if rc == 0:
            metrics.CAPACITY_LAST_PLAN.set(time.time())
    return rc


def _previous_forecasts(settings: Any, wait_s: float) -> dict[str, dict[str, Any]]:
    """The latest earlier plan per series, replayed from capacity.forecasts (compacted)."""
    from novacron_ml.core import kafka as kafka_io
    from training.planner import latest_records

    records = []
    for r in kafka_io.iter_topic(
        settings.kafka.bootstrap_servers, settings.topics.capacity_forecasts, wait_s
    ):
        try:
            records.append(json.loads(r.value))
        except ValueError:
            continue  # not ours to judge: the plan is scored against its own records only
    return latest_records(records)


def _divergences(plans: list[Any], previous: dict[str, Any], min_hours: int) -> dict[str, Any]:
    from training.planner import HourlyHistory, divergence

    out = {}
    for p in plans:
        if p.key in previous:
            history = HourlyHistory(p.cluster, p.resource, p.history_t, p.history)
            try:
                d = divergence(previous[p.key], history, min_hours)
            except (KeyError, TypeError, ValueError) as exc:  # a record not of our making
                print(f"previous plan of {p.key} not scored: {exc!r}", file=sys.stderr)
                continue
            if d is not None:
                out[p.key] = d
    return out


def _print_divergences(divergences: dict[str, Any], threshold: float = 0.15) -> None:
    if not divergences:
        print("previous plan vs what happened since: nothing to score yet")
        return
    wapes = sorted(d.wape for d in divergences.values())
    over = sorted(k for k, d in divergences.items() if d.wape > threshold)
    hours = min(d.hours for d in divergences.values())
    print(
        f"previous plan vs what happened since ({len(wapes)} series, >= {hours} h each):"
        f" divergence median {wapes[len(wapes) // 2]:.1%}, max {wapes[-1]:.1%};"
        f" over {threshold:.0%}: {', '.join(over) if over else 'none'}"
    )


def _plan_once(args: argparse.Namespace) -> int:
    from novacron_ml.core import kafka as kafka_io
    from training.planner import alert_record, export_metrics, forecast_record

    started = time.monotonic()
    settings, plans, problems, generated = _plan(args)
    _print_plans(plans, settings)
    divergences: dict[str, Any] = {}
    if not args.no_publish:
        bootstrap = settings.kafka.bootstrap_servers
        t = settings.topics
        topics = [t.capacity_forecasts, t.capacity_alerts]
        kafka_io.ensure_topics(bootstrap, topics, compacted=topics)
        previous = _previous_forecasts(settings, args.wait)
        divergences = _divergences(plans, previous, settings.capacity.divergence_min_hours)
        _print_divergences(divergences)
        fc = []
        for p in plans:
            record = forecast_record(p, generated)
            if p.key in divergences:
                record["previous_plan"] = divergences[p.key].record()
            fc.append((p.key.encode(), json.dumps(record).encode()))
        al = [
            (p.key.encode(), json.dumps(alert_record(p, generated)).encode())
            for p in plans
            if p.capacity is not None
        ]
        kafka_io.produce(bootstrap, t.capacity_forecasts, fc)
        kafka_io.produce(bootstrap, t.capacity_alerts, al)
        print(
            f"published {len(fc)} forecasts -> {t.capacity_forecasts}, "
            f"{len(al)} alerts -> {t.capacity_alerts}"
        )
    export_metrics(plans, divergences, len(problems), time.monotonic() - started)
    if args.report:
        from training.capacity_report import write_report

        cap = settings.capacity
        index = write_report(plans, args.report, problems, cap.holidays_country, cap.interval)
        print(f"report: {index}")
    if args.json:
        Path(args.json).write_text(
            json.dumps([alert_record(p, generated) for p in plans], indent=2)
        )
    return 0 if plans else 1


def cmd_report(args: argparse.Namespace) -> int:
    from training.capacity_report import write_report

    settings, plans, problems, _generated = _plan(args)
    _print_plans(plans, settings)
    cap = settings.capacity
    print(f"report: {write_report(plans, args.out, problems, cap.holidays_country, cap.interval)}")
    return 0 if plans else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import table
    from training.capacity import compare_reports

    reports = {}
    for path in args.reports:
        try:
            reports[path.stem] = json.loads(path.read_text())["overall"]
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a capacity backtest report ({exc})") from None
    out = compare_reports(reports)
    names = list(reports)
    rows = [
        [row, *(f"{v:.3f}" if v is not None else "-" for v in vals.values()),
         f"{out['mean'][row]:.3f}", f"{out['worst'][row]:.3f}"]
        for row, vals in out["relative"].items()
    ]  # fmt: skip
    print("MASE relative to SeasonalNaive (mean over each data set's series; < 1 is better)")
    print(table(rows, ["model or rule", *names, "mean", "worst"]))
    held = [[h["held_out"], h["chosen"], f"{h['relative']:.3f}"] for h in out["leave_one_out"]]
    print("leave one data set out: the best row on the others, scored on the held-out one")
    print(table(held, ["held out", "chosen on the others", "relative MASE there"]))
    print(f"mean over held-out data sets: {out['leave_one_out_mean']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    _require_train()
    from training.planner import write_hourly_csv

    start = time.perf_counter()
    from novacron_ml.app.capacity import simulated_hourly_records
    from training.planner import histories_from_records

    records = simulated_hourly_records(args.days, args.hosts, args.clusters, args.seed)
    histories = histories_from_records(records)
    if args.resource:
        histories = [h for h in histories if h.resource in set(args.resource)]
    n = write_hourly_csv(args.out, histories, wide=args.wide)
    print(
        f"wrote {n} hourly points of {len(histories)} series to {args.out}"
        f" ({time.perf_counter() - start:.1f} s)"
    )
    return 0


def scale_args(p: argparse.ArgumentParser, unit: str) -> None:
    p.add_argument(
        "--workers", type=int, help=f"parallel {unit} (default: capacity.workers, 0 = per core)"
    )
    p.add_argument(
        "--engine",
        choices=("dask", "processes"),
        help="dask (a LocalCluster, the default) or a local process pool (capacity.engine)",
    )
    p.add_argument(
        "--scheduler",
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (capacity.scheduler; "
        "docs/CAPACITY.md#scale)",
    )


def register(sub: Any) -> None:
    cap = sub.add_parser(
        "capacity",
        help="capacity planning: backtest, plan, report, simulate (needs the train extra)",
        description="Forecast resource usage with Prophet and statistical baselines, date "
        "capacity exhaustion and rank it by urgency (settings group `capacity`).",
    )
    cs = cap.add_subparsers(dest="capacity_command", required=True, metavar="ACTION")

    p = cs.add_parser(
        "backtest",
        help="rolling-origin CV of Prophet, SeasonalNaive, AutoETS and MSTL on CSV files",
        description="For every CSV and value column: rolling-origin cross-validation "
        "(--windows origins, --horizon steps apart) of each model; writes MASE (seasonal "
        "naive scale), sMAPE, accuracy = 100 - MAPE and the coverage of the calibrated "
        "interval per file, model and overall, plus every selection rule out of sample (its "
        "weights for a window come from earlier windows only; the planner's rule is marked). "
        "Bad input gets a one-line error naming the file.",
    )
    csv_series_args(p)
    p.add_argument("--windows", type=int, default=6, help="rolling origins (6; first is warm-up)")
    p.add_argument("--aggregate", type=float, help="average into buckets of this many seconds")
    p.add_argument("--models", nargs="+", help="subset of prophet seasonal_naive auto_ets mstl")
    p.add_argument("--season", type=int, help="season length in steps (default: daily)")
    p.add_argument("--level", type=float, default=0.95, help="interval level (0.95)")
    p.add_argument("--holidays", default="US", help="holiday country for Prophet (US)")
    p.add_argument(
        "--uncertainty-samples", type=int, default=100, help="Prophet trend samples (100)"
    )
    p.add_argument("--changepoints", type=int, default=10, help="Prophet changepoints (10)")
    scale_args(p, "series")
    writes(p, "json")
    p.add_argument(
        "--fast",
        action="store_true",
        help="the planner's fast path: SeasonalNaive and daily-season MSTL only",
    )
    p.set_defaults(func=cmd_backtest)

    p = cs.add_parser(
        "compare",
        help="models and selection rules across backtest reports, leave one data set out",
        description="Read `capacity backtest --json` reports (one per data set) and print each "
        "model's and rule's MASE relative to SeasonalNaive per data set, the mean and worst, "
        "and a leave-one-data-set-out check: the row that is best on the other data sets, "
        "scored on the held-out one (what choosing a rule on our data is worth elsewhere).",
    )
    p.add_argument("reports", nargs="+", type=Path, help="backtest JSON reports")
    p.add_argument("--json", help="also write the table here")
    writes(p, "json")
    p.set_defaults(func=cmd_compare)

    def source_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--csv",
            type=Path,
            help="hourly history CSV (timestamp,cluster,resource,"
            "value) instead of replaying topics.hourly",
        )
        p.add_argument("--resource", action="append", help="only these resources (repeatable)")
        scale_args(p, "series")
        p.add_argument(
            "--fast",
            action="store_true",
            help="statistical models for every series, Prophet only where a maintenance window"
            " applies (capacity.fast)",
        )
        p.add_argument(
            "--selection",
            help="how candidates become one forecast (capacity.selection: shrink, select,"
            " median, mean, weighted, select_ensemble or a model name)",
        )
        p.add_argument("--wait", type=float, default=30, help="seconds to wait for Kafka (30)")

    p = cs.add_parser(
        "plan",
        help="the daily plan: forecast every series, publish capacity.forecasts/alerts",
        description="Replay the hourly aggregates (topics.hourly) or read --csv, choose a "
        "model per series by CV, forecast capacity.horizon_days with a calibrated interval, "
        "date the exhaustion and publish forecasts and urgency alerts to Kafka.",
    )
    source_args(p)
    p.add_argument("--no-publish", action="store_true", help="print only, publish nothing")
    p.add_argument(
        "--every",
        type=float,
        metavar="HOURS",
        help="re-plan every HOURS (24: the daily refresh) from the latest metrics.hourly,"
        " until interrupted; a failed plan is reported and retried at the next slot",
    )
    p.add_argument("--report", type=Path, help="also write the HTML/PNG report here")
    p.add_argument("--json", help="also write the alert records as JSON")
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics here (novacron_capacity_*: forecasts, time to"
        " exhaustion, the previous plan's divergence; observability.metrics_bind, loopback by"
        " default), for as long as the command runs: use with --every",
    )
    p.add_argument(
        "--pushgateway",
        metavar="URL",
        help="after each plan, push the same gauges to this Prometheus Pushgateway (e.g."
        " http://127.0.0.1:9091): a plan run from cron has no process left to scrape",
    )
    writes(p, "json", "report")
    p.set_defaults(func=cmd_plan)

    p = cs.add_parser(
        "report",
        help="write the planner's report: a plot per resource and an urgency table (HTML)",
    )
    source_args(p)
    p.add_argument("--out", type=Path, required=True, help="directory for index.html and PNGs")
    writes(p, "out")
    p.set_defaults(func=cmd_report)

    p = cs.add_parser(
        "simulate",
        help="write the simulated fleet's hourly history as CSV (via the detect flow)",
    )
    p.add_argument("--out", type=Path, required=True, help="CSV to write")
    p.add_argument("--days", type=float, default=60, help="simulated days (60)")
    p.add_argument("--hosts", type=int, default=6, help="hosts (6)")
    p.add_argument("--clusters", type=int, default=2, help="clusters (2)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (7)")
    p.add_argument("--resource", action="append", help="only these resources (repeatable)")
    p.add_argument(
        "--wide", action="store_true", help="one column per cluster/resource (for backtest)"
    )
    writes(p, "out")
    p.set_defaults(func=cmd_simulate)
