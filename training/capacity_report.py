"""`novacron-ml capacity report`: one PNG per series (history, forecast, calibrated interval,
capacity line, exhaustion date) and an index.html with the urgency table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.metrics import mean_defined
from training.planner import URGENCIES, SeriesPlan

RESOURCE_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CPU", ("cpu",)),
    ("memory", ("mem", "ram", "swap")),
    ("network", ("net", "bandwidth", "_rx", "_tx", "bytes_recv", "bytes_sent")),
    ("storage", ("disk", "storage", "filesystem", "fs_", "volume", "iops", "_io")),
    ("request rate", ("request", "req_", "http", "rps", "qps")),
)
"""The seed's resource groups, matched on the resource (metric) name, first match wins."""


def resource_kind(resource: str) -> str:
    name = resource.lower()
    for kind, needles in RESOURCE_KINDS:
        if any(n in name for n in needles):
            return kind
    return "other"


def _accuracy(y: np.ndarray, yhat: np.ndarray) -> float | None:
    """100 - MAPE over the points with a non-zero actual (None if there is none)."""
    keep = y != 0
    if not keep.any():
        return None
    return float(100.0 - 100.0 * np.mean(np.abs((y[keep] - yhat[keep]) / y[keep])))


def holiday_mask(t_s: np.ndarray, country: str | None) -> np.ndarray:
    """True where the UTC date of t is a public holiday of `country` (none: all False)."""
    if not country or len(t_s) == 0 or not np.isfinite(t_s).all():
        return np.zeros(len(t_s), dtype=bool)
    import holidays  # Prophet's own dependency

    days = (np.asarray(t_s, dtype=np.float64) // 86_400).astype("datetime64[D]")
    years = sorted({int(str(d)[:4]) for d in (days.min(), days.max())})
    cal = holidays.country_holidays(country, years=range(years[0], years[-1] + 1))
    dates = np.array(sorted(cal), dtype="datetime64[D]")
    return np.isin(days, dates)


def accuracy_summary(
    plans: Sequence[SeriesPlan], holidays_country: str | None = None
) -> list[dict[str, object]]:
    """The seed's accuracy table from the plan's own out-of-sample CV: per resource kind and
    overall, accuracy = 100 - MAPE (mean over series), the same on holiday hours only, the
    measured coverage of the calibrated interval, and the series counted."""
    rows: dict[str, dict[str, list[float | None]]] = {}
    for plan in plans:
        if plan.cv_points is None:
            continue
        t, y, yhat = plan.cv_points
        hol = holiday_mask(t, holidays_country)
        cov = plan.cv.get("selection", {}).get("coverage")
        for kind in (resource_kind(plan.resource), "overall"):
            r = rows.setdefault(kind, {"acc": [], "hol": [], "cov": [], "hol_n": []})
            r["acc"].append(_accuracy(y, yhat))
            r["hol"].append(_accuracy(y[hol], yhat[hol]) if hol.any() else None)
            r["hol_n"].append(float(hol.sum()))
            r["cov"].append(cov)
    order = [k for k, _ in RESOURCE_KINDS] + ["other", "overall"]
    out = []
    for kind in order:
        if kind not in rows:
            continue
        r = rows[kind]
        out.append(
            {
                "resource": kind,
                "series": len(r["acc"]),
                "accuracy": mean_defined(r["acc"]),
                "holiday_accuracy": mean_defined(r["hol"]),
                "holiday_hours": int(sum(v or 0 for v in r["hol_n"])),
                "coverage": mean_defined(r["cov"]),
            }
        )
    return out


_COLOURS = {"URGENT": "#c0392b", "HIGH": "#e67e22", "MEDIUM": "#f1c40f", "LOW": "#27ae60"}


def _dates(t_s: np.ndarray) -> np.ndarray:
    return (np.asarray(t_s, dtype=np.float64) * 1000).astype("datetime64[ms]")


def plot_plan(plan: SeriesPlan, path: Path, history_days: float = 28.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    keep = plan.history_t >= plan.history_t[-1] - history_days * 86_400.0
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    ax.plot(
        _dates(plan.history_t[keep]), plan.history[keep], color="#34495e", lw=1, label="history"
    )
    ft = _dates(plan.forecast_t)
    ax.plot(ft, plan.mean, color="#2980b9", lw=1.2, label=f"forecast ({plan.model})")
    ax.fill_between(ft, plan.lo, plan.hi, color="#2980b9", alpha=0.2, label="calibrated interval")
    if plan.capacity is not None:
        ax.axhline(plan.capacity, color="#c0392b", ls="--", lw=1, label="capacity")
    if plan.exhaustion_s is not None:
        when = datetime.fromtimestamp(plan.exhaustion_s, UTC)
        ax.axvline(
            float(mdates.date2num(when)), color=_COLOURS.get(plan.urgency or "", "#7f8c8d"), lw=1.5
        )
        ax.annotate(
            f"exhaustion {when:%Y-%m-%d %H:%M} UTC ({plan.urgency})",
            (float(mdates.date2num(when)), plan.capacity or 0.0),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )
    ax.set_title(f"{plan.cluster} / {plan.resource}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(x: object, digits: int = 2) -> str:
    return "-" if x is None else f"{float(x):.{digits}f}"  # type: ignore[arg-type]


def write_report(
    plans: Sequence[SeriesPlan],
    out: Path,
    problems: Sequence[str] = (),
    holidays_country: str | None = None,
    level: float = 0.95,
) -> Path:
    """Write OUT/index.html and one OUT/<cluster>_<resource>.png per plan; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    acc_rows = "".join(
        f"<tr><td>{html.escape(str(r['resource']))}</td><td>{r['series']}</td>"
        f"<td>{_fmt(r['accuracy'])}</td><td>{_fmt(r['holiday_accuracy'])}"
        f" ({r['holiday_hours']} h)</td><td>{_fmt(r['coverage'], 3)}</td></tr>"
        for r in accuracy_summary(plans, holidays_country)
    )
    rank = {u: i for i, u in enumerate(URGENCIES)}
    ordered = sorted(
        plans,
        key=lambda p: (rank.get(p.urgency or "", 9), p.days_to_exhaustion or 1e9, p.key),
    )
    rows, figures = [], []
    for plan in ordered:
        name = f"{plan.cluster}_{plan.resource}.png".replace("/", "_")
        plot_plan(plan, out / name)
        days = plan.days_to_exhaustion
        when = (
            datetime.fromtimestamp(plan.exhaustion_s, UTC).strftime("%Y-%m-%d %H:%M")
            if plan.exhaustion_s is not None
            else "beyond horizon"
            if plan.capacity is not None
            else "no capacity set"
        )
        colour = _COLOURS.get(plan.urgency or "", "#bdc3c7")
        cv = plan.cv.get("selection", {})
        mase = cv.get("mase")
        rows.append(
            "<tr>"
            f"<td>{html.escape(plan.cluster)}</td><td>{html.escape(plan.resource)}</td>"
            f"<td style='background:{colour}'>{plan.urgency or '-'}</td>"
            f"<td>{when}</td><td>{'' if days is None else f'{days:.1f}'}</td>"
            f"<td>{float(plan.history[-1]):.4g}</td>"
            f"<td>{'' if plan.capacity is None else f'{plan.capacity:.4g}'}</td>"
            f"<td>{plan.model}</td><td>{'' if mase is None else f'{mase:.3f}'}</td>"
            "</tr>"
        )
        figures.append(f"<h3>{html.escape(plan.key)}</h3><img src='{name}' width='900'>")
    problem_html = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>novacron-ml capacity plan</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>
<h1>Capacity plan</h1><p>Generated {generated}. Exhaustion: the first forecast hour whose
upper interval bound reaches the capacity. Urgency: URGENT / HIGH / MEDIUM within the
configured days, LOW otherwise. MASE: rolling-origin CV of the plan's forecast rule.</p>
<h2>Forecast accuracy (out of sample)</h2><p>From each series' rolling-origin CV, scored
exactly as the plan forecasts (capacity.selection): accuracy = 100 &minus; MAPE, mean over
series; holiday: the same on the CV hours that fall on a public holiday of
{html.escape(holidays_country or "no country")}; coverage: the share of CV hours inside the
calibrated {level:.0%} interval.</p>
<table><tr><th>resource</th><th>series</th><th>accuracy %</th><th>holiday accuracy %</th>
<th>interval coverage</th></tr>{acc_rows}</table>
<h2>Exhaustion</h2>
<table><tr><th>cluster</th><th>resource</th><th>urgency</th><th>exhaustion (UTC)</th>
<th>days</th><th>current</th><th>capacity</th><th>model</th><th>CV MASE</th></tr>
{"".join(rows)}</table>
{f"<h2>Skipped</h2><ul>{problem_html}</ul>" if problems else ""}
{"".join(figures)}
</body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index
