"""A NAB scorer written from the published method (Lavin & Ahmad 2015; numenta/NAB docs).

Per file: the first 15 % of rows (at most 750) are probationary and not scored. Each labelled
window scores its best detection: a detection at relative position p in the window
(p = −(right − i + 1) / width, from −1 at the left edge towards 0 at the right edge) is worth
tp · S(p) / S(−1) with S(p) = 2·sigmoid(−5p) − 1; a window without detection costs −fn.
A detection outside windows costs fp · S(d), d = |i − right of the previous window| /
(that window's width − 1), or −fp before the first window (S = −1 for d > 3). A row is a
detection when its anomaly score ≥ the threshold; one threshold is chosen for the whole corpus
by sweeping every distinct score, and the corpus score is normalised so that a detector that
never fires scores 0 and a perfect one 100.

Per-row contributions (`FileScore.row_scores`) follow NAB's results files: a false positive's
cost on its row, each window's outcome (best detection, or −fn) on the window's first row,
0 elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROBATION_FRACTION = 0.15
PROBATION_MAX_ROWS = 750


@dataclass(frozen=True)
class Profile:
    name: str
    tp: float
    fp: float
    fn: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 0.11, 1.0),
    Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def load_profiles(path: str | Path) -> tuple[Profile, ...]:
    """Profiles from NAB's config/profiles.json."""
    raw = json.loads(Path(path).read_text())
    return tuple(
        Profile(name, float(c["tpWeight"]), float(c["fpWeight"]), float(c["fnWeight"]))
        for name, body in raw.items()
        for c in [body["CostMatrix"]]
    )


def scaled_sigmoid(position: float) -> float:
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(n: int) -> int:
    return int(min(math.floor(PROBATION_FRACTION * n), PROBATION_MAX_ROWS))


@dataclass
class FileRows:
    """One data file prepared for scoring under one profile."""

    name: str
    scores: np.ndarray
    sweep: np.ndarray
    """Each row's worth if it were a detection (weighted by the profile)."""
    window: np.ndarray
    """Window number per row, -1 outside windows, -2 probationary."""


def prepare(
    name: str,
    scores: Sequence[float] | np.ndarray,
    windows: Sequence[tuple[int, int]],
    profile: Profile,
) -> FileRows:
    """Sweep scores and window membership of one file (windows as inclusive row ranges)."""
    n = len(scores)
    sweep = np.zeros(n)
    window = np.full(n, -1, np.int64)
    prev_right: int | None = None
    prev_width = 0.0
    spans = sorted(windows)
    k = 0
    i = 0
    while i < n:
        if k < len(spans) and i == spans[k][0]:
            left, right = spans[k]
            width = float(right - left + 1)
            for j in range(left, min(right, n - 1) + 1):
                sweep[j] = scaled_sigmoid(-(right - j + 1) / width) * profile.tp / MAX_TP
                window[j] = k
            prev_right, prev_width = right, width
            i = right + 1
            k += 1
            continue
        if prev_right is None:
            sweep[i] = -1.0 * profile.fp
        else:
            sweep[i] = scaled_sigmoid(abs(prev_right - i) / (prev_width - 1)) * profile.fp
        i += 1
    window[: probation_rows(n)] = -2
    return FileRows(name, np.asarray(scores, np.float64), sweep, window)


def _window_keys(files: Sequence[FileRows]) -> list[tuple[int, int]]:
    return [(f, int(w)) for f, rows in enumerate(files) for w in np.unique(rows.window) if w >= 0]


def sweep_thresholds(files: Sequence[FileRows], fn_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds in descending order, corpus raw score when detecting score ≥ threshold)."""
    windows = _window_keys(files)
    best = dict.fromkeys(windows, -fn_weight)
    scored = [
        (rows.scores[m], rows.sweep[m], rows.window[m], f)
        for f, rows in enumerate(files)
        for m in [rows.window != -2]
    ]
    scores = np.concatenate([s[0] for s in scored]) if scored else np.zeros(0)
    sweep = np.concatenate([s[1] for s in scored]) if scored else np.zeros(0)
    wins = np.concatenate([s[2] for s in scored]) if scored else np.zeros(0, np.int64)
    owner = np.concatenate([np.full(len(s[0]), s[3]) for s in scored]) if scored else np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    total = sum(best.values())
    fp_total = 0.0
    thresholds = [1.1]
    results = [total]
    current = 1.1
    for idx in order.tolist():
        s = float(scores[idx])
        if s != current:
            thresholds.append(s)
            results.append(total + fp_total)
            current = s
        w = int(wins[idx])
        if w < 0:
            fp_total += float(sweep[idx])
        else:
            key = (int(owner[idx]), w)
            value = float(sweep[idx])
            if value > best[key]:
                total += value - best[key]
                best[key] = value
        results[-1] = total + fp_total
    return np.array(thresholds), np.array(results)


@dataclass
class FileScore:
    name: str
    raw: float
    row_scores: np.ndarray
    tp: int
    fp: int
    fn: int


@dataclass
class CorpusScore:
    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    files: list[FileScore] = field(default_factory=list)

    @property
    def score(self) -> float:
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_file(rows: FileRows, threshold: float, profile: Profile) -> FileScore:
    detected = (rows.scores >= threshold) & (rows.window != -2)
    row_scores = np.zeros(len(rows.scores))
    fp_rows = detected & (rows.window == -1)
    row_scores[fp_rows] = rows.sweep[fp_rows]
    tp = fn = 0
    raw = float(rows.sweep[fp_rows].sum())
    for w in np.unique(rows.window[rows.window >= 0]).tolist():
        members = rows.window == w
        hits = members & detected
        first = int(np.flatnonzero(members)[0])
        if hits.any():
            value = float(rows.sweep[hits].max())
            tp += 1
        else:
            value = -profile.fn
            fn += 1
        row_scores[first] = value
        raw += value
    return FileScore(rows.name, raw, row_scores, tp, int(fp_rows.sum()), fn)


def score_corpus(
    data: Sequence[tuple[str, Sequence[float] | np.ndarray, Sequence[tuple[int, int]]]],
    profile: Profile,
    threshold: float | None = None,
) -> CorpusScore:
    """Score (name, anomaly scores, window row ranges) files; sweep the threshold if None."""
    files = [prepare(name, scores, windows, profile) for name, scores, windows in data]
    if threshold is None:
        thresholds, results = sweep_thresholds(files, profile.fn)
        threshold = float(thresholds[int(np.argmax(results))])
    per_file = [score_file(rows, threshold, profile) for rows in files]
    n_windows = len(_window_keys(files))
    return CorpusScore(
        profile=profile.name,
        threshold=threshold,
        raw=sum(f.raw for f in per_file),
        null=-profile.fn * n_windows,
        perfect=profile.tp * n_windows,
        files=per_file,
    )
