"""`novacron-ml nab`: the detect flow over NAB-style CSV files, and their NAB score.

Every `DIR/<category>/<name>.csv` (columns `timestamp,value`) runs through the production
dataflow (`dataflows.detect.build_flow`) in event-time mode, fed from the file, with windows
one sampling step long so that each row gets its own anomaly score. The step is inferred from
the data (the median spacing of timestamps); nothing depends on file or category names.
Output: `OUT/<category>/<detector>_<name>.csv` with `timestamp,value,anomaly_score,alert`, one
row per valid input row, in input order: `anomaly_score` is the probability the production alert
decision fired on (its cooldown applied), `alert` is 1 where it raised an alert, `opened` 1 where
that alert opened an episode (what a receiver is notified of).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import msgspec
import numpy as np

from dataflows.inprocess import run_in_process
from dataflows.io import MessageSource
from novacron_ml.app.nab import PROFILES, CorpusScore, Profile, score_corpus
from novacron_ml.app.plots import SeriesPlot, html_report
from novacron_ml.core.schema import WireEvent
from novacron_ml.core.settings import Settings

TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


@dataclass
class SeriesFile:
    path: Path
    timestamps: list[str]
    ts_ms: np.ndarray
    values: np.ndarray
    problems: list[str]


def _parse_time(text: str) -> int | None:
    for fmt in TIME_FORMATS:
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    return None


def read_series(path: Path) -> SeriesFile:
    """Valid rows of a `timestamp,value` CSV; problems are reported with file and line."""
    stamps: list[str] = []
    ts: list[int] = []
    values: list[float] = []
    problems: list[str] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
            problems.append(f"{path}:1: expected a 'timestamp,value' header, got {header}")
            return SeriesFile(path, [], np.zeros(0, np.int64), np.zeros(0), problems)
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 2:
                problems.append(f"{path}:{line_no}: expected 2 columns, got {len(row)}")
                continue
            when = _parse_time(row[0].strip())
            if when is None:
                problems.append(f"{path}:{line_no}: unparseable timestamp {row[0]!r}")
                continue
            try:
                value = float(row[1])
            except ValueError:
                problems.append(f"{path}:{line_no}: unparseable value {row[1]!r}")
                continue
            if not np.isfinite(value):
                problems.append(f"{path}:{line_no}: value {row[1]!r} is not finite")
                continue
            stamps.append(row[0].strip())
            ts.append(when)
            values.append(value)
    return SeriesFile(path, stamps, np.array(ts, np.int64), np.array(values), problems)


def infer_step_s(ts_ms: np.ndarray) -> int:
    """The sampling step in whole seconds: the median positive spacing."""
    gaps = np.diff(ts_ms)
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return 60
    return max(1, round(float(np.median(gaps)) / 1000))


def settings_for_step(step_s: int, base: Settings | None = None) -> Settings:
    """Detect-flow settings for a historical series sampled every `step_s` seconds."""
    base = base or Settings()
    bucket_s = step_s * max(1, round(600 / step_s))
    lookback_s = max(step_s * 288, bucket_s)
    return base.model_copy(
        update={
            "window": base.window.model_copy(
                update={"length_s": float(step_s), "slide_s": None, "allowed_lateness_s": 0.0}
            ),
            "features": base.features.model_copy(
                update={
                    "step_s": float(step_s),
                    "lookback_s": float(lookback_s),
                    "bucket_s": float(bucket_s),
                    "shards": 1,
                }
            ),
            "ingest": base.ingest.model_copy(
                update={"max_event_age_s": 0.0, "max_event_future_s": 0.0}
            ),
            # A week of history as the baseline, and no scale floor relative to the median:
            # NAB series range from flat lines to counters, so a share of the median distorts
            # them; the series' resolution floors the scale instead.
            "detector": base.detector.model_copy(
                update={
                    "history_windows": min(10_000, max(60, 7 * 86_400 // step_s)),
                    "relative_floor": 0.0,
                    # Every row of a NAB file (at most ~22,000) stays searchable and ranked.
                    "novelty_history": 25_000,
                    "calibration_history": 25_000,
                    # One series per file: no host has a load proxy, so the load-residual
                    # tier could score nothing (and would log that it cannot).
                    "load_threshold": 0.0,
                    # Only rows' probabilities are written: tiers outside it need not run.
                    "river": "river" in base.detector.probability_tiers,
                    "iforest_models": base.detector.iforest_models
                    if "iforest" in base.detector.probability_tiers
                    else "",
                }
            ),
        }
    )


def score_series(series: SeriesFile, base: Settings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row, from the detect flow run over the file: the decision's anomaly probability in
    [0, 1]; and 1.0 where it raised an alert, 2.0 where that alert opened an episode (0.0
    elsewhere)."""
    if len(series.ts_ms) == 0:
        return np.zeros(0), np.zeros(0)
    step_s = infer_step_s(series.ts_ms)
    settings = settings_for_step(step_s, base)
    enc = msgspec.json.Encoder()
    messages = [
        (b"", enc.encode(WireEvent(int(t), "series", "nab", "value", float(v))))
        for t, v in zip(series.ts_ms.tolist(), series.values.tolist(), strict=True)
    ]
    run = run_in_process(
        settings,
        MessageSource(lambda: iter(messages), 2000),
        emit_scores=True,
        flow_id="novacron_nab",
    )
    by_window = {item.start_ms: item for item in run.scores}
    step_ms = step_s * 1000
    starts = ((series.ts_ms // step_ms) * step_ms).tolist()
    found = [by_window.get(int(s)) for s in starts]
    return (
        np.array([0.0 if w is None else w.anomaly_score for w in found]),
        np.array([0.0 if w is None or not w.alert else 2.0 if w.opened else 1.0 for w in found]),
    )


@dataclass
class NabRun:
    files: list[tuple[str, SeriesFile, np.ndarray]]
    """(category/name, the file, the decision's probability per row)."""
    problems: list[str]
    alerts: dict[str, np.ndarray] = field(default_factory=dict)
    """Per file: 1.0 on the rows where the decision raised an alert, 2.0 where it opened an
    episode, 0.0 elsewhere."""


def run_directory(
    data: Path,
    out: Path,
    detector: str = "novacron",
    base: Settings | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> NabRun:
    """Score every DIR/<category>/<name>.csv and write the NAB results files."""
    paths = sorted(p for p in data.glob("*/*.csv") if p.is_file())
    if not paths:
        raise FileNotFoundError(f"no CSV files found as {data}/<category>/<name>.csv")
    files = []
    alerts: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for i, path in enumerate(paths, 1):
        key = f"{path.parent.name}/{path.name}"
        if progress is not None:
            progress(i, len(paths), key)
        series = read_series(path)
        problems.extend(series.problems)
        scores, alerts[key] = score_series(series, base)
        target = out / path.parent.name / f"{detector}_{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["timestamp", "value", "anomaly_score", "alert", "opened"])
            for stamp, value, score, alert in zip(
                series.timestamps,
                series.values.tolist(),
                scores.tolist(),
                alerts[key].tolist(),
                strict=True,
            ):
                writer.writerow(
                    [stamp, repr(value), f"{score:.6f}", int(alert >= 1), int(alert >= 2)]
                )
        files.append((key, series, scores))
    return NabRun(files, problems, alerts)


def window_rows(series: SeriesFile, windows: list[list[str]]) -> list[tuple[int, int]]:
    """Label windows (timestamp pairs) as inclusive row ranges of the file."""
    out = []
    for start, end in windows:
        lo, hi = _parse_time(start[:19]), _parse_time(end[:19])
        if lo is None or hi is None:
            continue
        inside = np.flatnonzero((series.ts_ms >= lo) & (series.ts_ms <= hi))
        if len(inside):
            out.append((int(inside[0]), int(inside[-1])))
    return out


def score_run(
    run: NabRun, labels: Path, profiles: tuple[Profile, ...] = PROFILES
) -> list[CorpusScore]:
    """NAB scores of a run against a combined_windows.json label file."""
    data = _labelled(run, labels)
    return [score_corpus(data, profile) for profile in profiles]


def score_alerts(
    run: NabRun, labels: Path, profiles: tuple[Profile, ...] = PROFILES, opened: bool = False
) -> list[CorpusScore]:
    """NAB scores of the alerts themselves at the shipped firing level, no threshold swept:
    what users receive. A row that alerted scores 1; with `opened`, only the rows whose
    alert opened an episode (the notifications: later alerts of an episode update it)."""
    level = 1.5 if opened else 0.5
    data = [
        (key, run.alerts[key], rows) for key, _, rows in _labelled(run, labels) if key in run.alerts
    ]
    return [score_corpus(data, profile, threshold=level) for profile in profiles]


@dataclass
class HeldOut:
    """A leave-one-category-out NAB score: each category scored at the threshold swept on
    the others, the raw scores summed and normalised over the whole corpus."""

    score: float
    thresholds: dict[str, float]
    """Per held-out category: the threshold chosen on the other categories."""


def leave_one_category_out(run: NabRun, labels: Path, profile: Profile) -> HeldOut | None:
    """None when the files are in fewer than two categories (nothing to hold out)."""
    data = _labelled(run, labels)
    categories = sorted({key.split("/")[0] for key, _, _ in data})
    if len(categories) < 2:
        return None
    raw = null = perfect = 0.0
    thresholds = {}
    for category in categories:
        rest = [item for item in data if item[0].split("/")[0] != category]
        part = [item for item in data if item[0].split("/")[0] == category]
        thresholds[category] = score_corpus(rest, profile).threshold
        held = score_corpus(part, profile, threshold=thresholds[category])
        raw, null, perfect = raw + held.raw, null + held.null, perfect + held.perfect
    score = 100.0 * (raw - null) / (perfect - null) if perfect > null else float("nan")
    return HeldOut(score, thresholds)


def score_by_category(
    run: NabRun, labels: Path, profile: Profile
) -> list[tuple[str, int, int, CorpusScore]]:
    """(category, files, label windows, score) per top-level directory holding label windows,
    the threshold swept within each: where a score comes from (reporting only; the detector
    never sees names)."""
    data = _labelled(run, labels)
    out = []
    for category in sorted({key.split("/")[0] for key, _, _ in data}):
        part = [item for item in data if item[0].split("/")[0] == category]
        n_windows = sum(len(rows) for _, _, rows in part)
        if n_windows:
            out.append((category, len(part), n_windows, score_corpus(part, profile)))
    return out


def _labelled(run: NabRun, labels: Path) -> list[tuple[str, np.ndarray, list[tuple[int, int]]]]:
    windows = json.loads(labels.read_text())
    return [
        (key, scores, window_rows(series, windows.get(key, [])))
        for key, series, scores in run.files
    ]


def plot_rows(values: np.ndarray, width: int = 900) -> np.ndarray:
    """Row indices to draw a long series at `width` pixels: each bucket's first, minimum and
    maximum rows, so spikes survive the thinning."""
    n = len(values)
    if n <= 3 * width:
        return np.arange(n)
    edges = np.linspace(0, n, width + 1).astype(np.int64)
    keep: list[int] = []
    for lo, hi in pairwise(edges.tolist()):
        if hi > lo:
            part = values[lo:hi]
            keep += [lo, lo + int(np.argmin(part)), lo + int(np.argmax(part))]
    return np.unique(np.array([*keep, n - 1]))


def report_html(run: NabRun, labels: Path, result: CorpusScore) -> str:
    """One plot per file (biggest losses first): the values, the label windows shaded, and
    the rows whose score reaches the profile's threshold as triangles."""
    by_name = {f.name: f for f in result.files}
    plots = []
    for (key, series, scores), (_, _, label_rows) in sorted(
        zip(run.files, _labelled(run, labels), strict=True),
        key=lambda pair: by_name[pair[0][0]].raw if pair[0][0] in by_name else 0.0,
    ):
        rows = plot_rows(series.values)
        fired = np.flatnonzero(scores >= result.threshold)
        f = by_name.get(key)
        title = (
            key
            if f is None
            else (
                f"{key}: raw {f.raw:+.3f}; windows detected {f.tp}, missed {f.fn}; "
                f"false positives {f.fp}"
            )
        )
        plots.append(
            SeriesPlot(
                title,
                series.ts_ms[rows].tolist(),
                series.values[rows].tolist(),
                [
                    (int(series.ts_ms[a]), int(series.ts_ms[b]), "NAB label window")
                    for a, b in label_rows
                ],
                [],
                [
                    (
                        int(series.ts_ms[i]),
                        float(series.values[i]),
                        f"score {scores[i]:.4f} at {series.timestamps[i]}",
                    )
                    for i in fired
                ],
            )
        )
    summary = [
        f"{result.profile} profile: NAB score {result.score:.2f}, threshold {result.threshold:.4f}",
        f"{len(run.files)} files, biggest losses first (each file's first 15 % is probation: "
        "detections there are not scored)",
    ]
    return html_report(
        "novacron-ml nab",
        summary,
        plots,
        legend="Line: the file's values. Shaded: NAB label window. Triangles: rows whose "
        "anomaly score reaches the threshold (hover for the score and time).",
    )


def print_problems(problems: list[str], limit: int = 20) -> None:
    for line in problems[:limit]:
        print(f"skipped: {line}", file=sys.stderr)
    if len(problems) > limit:
        print(f"skipped: ... and {len(problems) - limit} more rows", file=sys.stderr)
