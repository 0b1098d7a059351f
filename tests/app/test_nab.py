"""The NAB scorer against NAB's own results files, and the `novacron-ml nab` command."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from novacron_ml.app.nab import MAX_TP, PROFILES, load_profiles, score_corpus
from novacron_ml.app.nab_runner import plot_rows

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
needs_nab = pytest.mark.skipif(not (NAB / "results").exists(), reason="shared NAB data absent")


def official_results() -> tuple[list[tuple[str, list[float], list[tuple[int, int]]]], dict]:
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    data, per_row = [], {}
    for path in sorted((NAB / "results" / "windowedGaussian").glob("*/*.csv")):
        key = f"{path.parent.name}/{path.name.removeprefix('windowedGaussian_')}"
        with path.open() as f:
            rows = list(csv.DictReader(f))
        stamps = [r["timestamp"] for r in rows]
        spans = [(stamps.index(a[:19]), stamps.index(b[:19])) for a, b in windows.get(key, [])]
        data.append((key, [float(r["anomaly_score"]) for r in rows], spans))
        per_row[key] = {
            p.name: np.array([float(r[f"S(t)_{p.name}"]) for r in rows]) for p in PROFILES
        }
    return data, per_row


@needs_nab
def test_scorer_reproduces_nab_row_by_row_and_the_split_score() -> None:
    data, per_row = official_results()
    assert len(data) == 41 and sum(len(w) for _, _, w in data) == 64
    assert load_profiles(NAB / "config" / "profiles.json") == PROFILES
    for profile in PROFILES:
        # the results files were scored at the official corpus threshold
        fixed = score_corpus(data, profile, threshold=1.0)
        for f in fixed.files:
            assert np.allclose(f.row_scores, per_row[f.name][profile.name], atol=1e-9), f.name
    swept = score_corpus(data, PROFILES[0])
    assert round(swept.score, 2) == 41.42


def test_scorer_extremes() -> None:
    spans = [(500, 540), (800, 820)]
    n = 1000
    never = score_corpus([("f", np.zeros(n), spans)], PROFILES[0])
    assert never.score == pytest.approx(0.0)
    perfect = np.zeros(n)
    perfect[[500, 800]] = 1.0
    assert score_corpus([("f", perfect, spans)], PROFILES[0]).score == pytest.approx(100.0)
    late = np.zeros(n)
    late[[540, 820]] = 1.0  # last row of each window: position -1/width, barely positive
    worth = [(2 / (1 + math.exp(-5 / w)) - 1) / MAX_TP for w in (41, 21)]
    expected = 100 * (sum(worth) + 2) / 4
    assert score_corpus([("f", late, spans)], PROFILES[0]).score == pytest.approx(expected)
    fp = np.zeros(n)
    fp[300] = 1.0  # before the first window: costs fp = 0.11, no window found
    assert score_corpus([("f", fp, spans)], PROFILES[0]).score == pytest.approx(0.0)  # swept off


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))


def series_rows(n: int, seed: int, spike_at: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    base = np.datetime64("2015-03-01T00:00:00")
    values = 10 + rng.normal(0, 0.1, n)
    values[spike_at : spike_at + 3] += 8
    stamps = [str(base + np.timedelta64(300 * i, "s")).replace("T", " ") for i in range(n)]
    return list(zip(stamps, [f"{v:.4f}" for v in values], strict=True))


def run_nab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "novacron_ml.cli", "nab", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_nab_command_writes_one_scored_row_per_valid_row(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    rows = series_rows(700, 1, 600)
    bad = [*rows[:10], ("not a time", "1.0"), ("2015-03-01 00:55:00", "abc"), *rows[10:]]
    write_csv(data / "alpha" / "one.csv", bad)
    write_csv(data / "beta" / "two.csv", series_rows(700, 1, 600))  # same data, other names
    labels = tmp_path / "windows.json"
    window = [f"{rows[590][0]}.000000", f"{rows[620][0]}.000000"]
    labels.write_text(json.dumps({"alpha/one.csv": [window], "beta/two.csv": [window]}))
    result = run_nab(
        "--data",
        str(data),
        "--out",
        str(out),
        "--labels",
        str(labels),
        "--detector",
        "nc",
        "--per-file",
        "--json",
        str(tmp_path / "scores.json"),
        "--plots",
        str(tmp_path / "nab.html"),
    )
    assert result.returncode == 0, result.stderr
    assert "one.csv:12: unparseable timestamp" in result.stderr
    assert "one.csv:13: unparseable value" in result.stderr
    assert "standard" in result.stdout and "NAB score" in result.stdout
    assert "per file, standard profile" in result.stdout
    for name in ("alpha/one.csv", "beta/two.csv"):
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(name))
        assert line.split()[1] == "1"  # one window in each file
    for category in ("alpha", "beta"):  # per directory: one file, one window each
        line = next(ln for ln in result.stdout.splitlines() if ln.startswith(category + " "))
        assert line.split()[1:3] == ["1", "1"]
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert set(saved) == {
        "standard",
        "reward_low_FP_rate",
        "reward_low_FN_rate",
        "leave_one_category_out",
    }
    assert "episodes opened" in result.stdout and "leave one category out" in result.stdout
    # two categories: each is scored at the threshold swept on the other
    assert set(saved["leave_one_category_out"]) == {"score", "alpha", "beta"}
    files = saved["standard"]["files"]
    assert set(files) == {"alpha/one.csv", "beta/two.csv"}
    assert files["alpha/one.csv"] == files["beta/two.csv"]  # same data, same outcome
    assert files["alpha/one.csv"]["tp"] + files["alpha/one.csv"]["fn"] == 1
    page = (tmp_path / "nab.html").read_text()
    assert page.count("<svg") == 2 and "alpha/one.csv: raw" in page
    assert page.count("label: NAB label window") == 2  # one shaded window per file
    one = list(csv.DictReader((out / "alpha" / "nc_one.csv").open()))
    two = list(csv.DictReader((out / "beta" / "nc_two.csv").open()))
    assert list(one[0]) == ["timestamp", "value", "anomaly_score", "alert", "opened"]
    assert len(one) == len(two) == 700
    assert [r["timestamp"] for r in one] == [t for t, _ in rows]
    scores = np.array([float(r["anomaly_score"]) for r in one])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert [r["anomaly_score"] for r in one] == [
        r["anomaly_score"] for r in two
    ]  # names don't matter
    assert scores[600:603].max() > np.percentile(scores[320:590], 99)  # the spike stands out
    alerted = [i for i, r in enumerate(one) if r["alert"] == "1"]
    assert alerted and all(600 <= i < 610 for i in alerted)  # the decision alerts on it alone
    assert [i for i, r in enumerate(one) if r["opened"] == "1"] == alerted[:1]  # one episode


def test_plot_rows_thin_a_long_series_but_keep_its_spikes() -> None:
    values = np.sin(np.arange(20_000) / 50.0)
    values[12_345] = 40.0
    values[777] = -40.0
    rows = plot_rows(values, width=300)
    assert len(rows) <= 3 * 300 + 1 and rows[0] == 0 and rows[-1] == len(values) - 1
    assert {777, 12_345} <= set(rows.tolist()) and (np.diff(rows) > 0).all()
    assert (plot_rows(values[:500], width=300) == np.arange(500)).all()  # short: every row


def test_nab_per_file_and_plots_need_labels(tmp_path: Path) -> None:
    write_csv(tmp_path / "data" / "alpha" / "one.csv", series_rows(50, 1, 40))
    result = run_nab(
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "out"),
        "--plots",
        str(tmp_path / "nab.html"),
    )
    assert result.returncode != 0
    assert "need --labels" in result.stderr and "Traceback" not in result.stderr


def test_one_category_is_scored_without_a_leave_one_out_line(tmp_path: Path) -> None:
    rows = series_rows(700, 2, 600)
    write_csv(tmp_path / "data" / "alpha" / "one.csv", rows)
    labels = tmp_path / "windows.json"
    window = [f"{rows[590][0]}.000000", f"{rows[620][0]}.000000"]
    labels.write_text(json.dumps({"alpha/one.csv": [window]}))
    result = run_nab(
        "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--labels", str(labels)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "episodes opened" in result.stdout and "leave one category out" not in result.stdout
