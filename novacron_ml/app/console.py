"""Terminal rendering of alerts and summaries (colour only on a TTY)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from novacron_ml.core.schema import Alert

_SEVERITY_COLOUR = {"low": "36", "medium": "33", "high": "31", "critical": "1;41"}


def use_colour() -> bool:
    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


def paint(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if use_colour() else text


def alert_line(alert: Alert) -> str:
    when = alert.window_start.replace("T", " ")[:19]
    severity = paint(f"{alert.severity.upper():<8}", _SEVERITY_COLOUR.get(alert.severity, "0"))
    if alert.status == "resolved":
        until = (alert.ends_at or alert.window_end).replace("T", " ")[:19]
        when = (alert.episode_start or alert.window_start).replace("T", " ")[:19]
        return (
            f"{when}  {paint('RESOLVED', '32')} {alert.type:<20} {alert.cluster}/{alert.host:<10} "
            f"{alert.metric:<30} episode ended {until}"
        )
    probability = "" if alert.probability is None else f" p={alert.probability:.2f}"
    top = ""
    if alert.explanation:
        c = alert.explanation[0]
        top = f"  top: {c.feature} {c.value:.4g} vs {c.baseline:.4g}"
    return (
        f"{when}  {severity} {alert.type:<20} {alert.cluster}/{alert.host:<10} "
        f"{alert.metric:<30} value={alert.value:<10.4g} expected={alert.expected:<10.4g} "
        f"{alert.detector}={alert.score:+.1f}{probability}{top}"
        + (f"  [suppressed: {alert.suppressed_by}]" if alert.suppressed_by else "")
    )


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
