"""Self-contained HTML reports with inline SVG plots (no plotting library in the runtime)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from novacron_ml.core.schema import Alert, parse_rfc3339_ms, rfc3339_ms

_SEVERITY = {"low": "#1f77b4", "medium": "#ff7f0e", "high": "#d62728", "critical": "#7b0000"}


@dataclass
class SeriesPlot:
    series: str
    times_ms: list[int]
    values: list[float]
    labels: list[tuple[int, int, str]]
    """(start, end, type) of labelled anomalies on this series."""
    alerts: list[Alert]
    marks: list[tuple[int, float, str]] = field(default_factory=list)
    """Other points to mark (time, value, tooltip): e.g. a backtest's detections."""


def svg(plot: SeriesPlot, width: int = 900, height: int = 220) -> str:
    """One series: line of window means, labelled spans shaded, alerts as dots, marks as
    triangles."""
    pad_l, pad_r, pad_t, pad_b = 60, 10, 20, 30
    if not plot.times_ms:
        return "<p>no data</p>"
    t0, t1 = min(plot.times_ms), max(plot.times_ms)
    lo, hi = min(plot.values), max(plot.values)
    if hi == lo:
        hi, lo = hi + 1, lo - 1
    span_t = max(t1 - t0, 1)

    def x(t: int) -> float:
        return pad_l + (t - t0) / span_t * (width - pad_l - pad_r)

    def y(v: float) -> float:
        return pad_t + (hi - v) / (hi - lo) * (height - pad_t - pad_b)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    parts.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>')
    for start, end, kind in plot.labels:
        left, right = x(max(start, t0)), x(min(end, t1))
        parts.append(
            f'<rect x="{left:.1f}" y="{pad_t}" width="{max(right - left, 1):.1f}" '
            f'height="{height - pad_t - pad_b}" fill="#d62728" fill-opacity="0.15">'
            f"<title>label: {html.escape(kind)}</title></rect>"
        )
    points = " ".join(
        f"{x(t):.1f},{y(v):.1f}" for t, v in zip(plot.times_ms, plot.values, strict=True)
    )
    parts.append(f'<polyline points="{points}" fill="none" stroke="#333" stroke-width="1.2"/>')
    for a in plot.alerts:
        t = parse_rfc3339_ms(a.window_start)
        colour = _SEVERITY.get(a.severity, "#000")
        title = html.escape(f"{a.type} {a.severity} z={a.score:+.1f} at {a.window_start}")
        parts.append(
            f'<circle cx="{x(t):.1f}" cy="{y(a.value):.1f}" r="4" fill="{colour}">'
            f"<title>{title}</title></circle>"
        )
    for t, v, tip in plot.marks:
        cx, cy = x(t), y(v)
        parts.append(
            f'<polygon points="{cx - 5:.1f},{cy - 9:.1f} {cx + 5:.1f},{cy - 9:.1f} {cx:.1f},'
            f'{cy - 1:.1f}" fill="#ff7f0e" stroke="#000" stroke-width="0.5">'
            f"<title>{html.escape(tip)}</title></polygon>"
        )
    parts.append(
        f'<text x="{pad_l}" y="14" font-size="12" font-family="sans-serif">'
        f"{html.escape(plot.series)}</text>"
        f'<text x="4" y="{y(hi) + 4:.0f}" font-size="10" font-family="sans-serif">{hi:.4g}</text>'
        f'<text x="4" y="{y(lo):.0f}" font-size="10" font-family="sans-serif">{lo:.4g}</text>'
        f'<text x="{pad_l}" y="{height - 8}" font-size="10" font-family="sans-serif">'
        f"{rfc3339_ms(t0)}</text>"
        f'<text x="{width - pad_r - 150}" y="{height - 8}" font-size="10" '
        f'font-family="sans-serif">{rfc3339_ms(t1)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


LEGEND = "Line: window mean. Shaded: labelled anomaly. Dots: alerts (colour = severity)."


def html_report(
    title: str, summary: Sequence[str], plots: Sequence[SeriesPlot], legend: str = LEGEND
) -> str:
    body = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:20px} pre{background:#f6f6f6;padding:8px}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<pre>" + html.escape("\n".join(summary)) + "</pre>",
        f"<p>{html.escape(legend)}</p>",
    ]
    for plot in plots:
        body.append(f"<h3>{html.escape(plot.series)}</h3>{svg(plot)}")
    body.append("</body></html>")
    return "\n".join(body)
