"""`novacron-ml capacity report`: one PNG per series (history, forecast, calibrated interval,
capacity line, exhaustion date) and an index.html with the urgency table."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.planner import URGENCIES, SeriesPlan

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


def write_report(plans: Sequence[SeriesPlan], out: Path, problems: Sequence[str] = ()) -> Path:
    """Write OUT/index.html and one OUT/<cluster>_<resource>.png per plan; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
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
configured days, LOW otherwise. MASE: rolling-origin CV of the chosen model.</p>
<table><tr><th>cluster</th><th>resource</th><th>urgency</th><th>exhaustion (UTC)</th>
<th>days</th><th>current</th><th>capacity</th><th>model</th><th>CV MASE</th></tr>
{"".join(rows)}</table>
{f"<h2>Skipped</h2><ul>{problem_html}</ul>" if problems else ""}
{"".join(figures)}
</body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index
