"""Terminal rendering of alerts and summaries (colour only on a TTY)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from novacron_ml.core.schema import Alert, score_text

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
        f"{score_text(alert)}{probability}{top}"
        + (
            f"  since {alert.onset.replace('T', ' ')[:19]}"
            if alert.onset and alert.onset < alert.window_start
            else ""
        )
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


class Progress:
    """Progress of a long command on stderr: one line redrawn on a terminal (at most every
    `every_tty_s`), a plain line every `every_s` otherwise (logs stay readable)."""

    def __init__(
        self, label: str, total: int | None = None, unit: str = "events", every_s: float = 10.0
    ) -> None:
        import time

        self.label, self.total, self.unit = label, total, unit
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else every_s
        self._clock = time.monotonic
        self.start = self._last = self._clock()
        self.done_units = 0

    def update(self, done: int) -> None:
        self.done_units = done
        now = self._clock()
        if now - self._last < self.every:
            return
        self._last = now
        line = self._line(now)
        if self.tty:
            print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done_units / elapsed
        part = f"{self.done_units:,}"
        if self.total:
            pct = 100 * self.done_units / self.total
            left = (self.total - self.done_units) / rate if rate else 0
            part += f" of {self.total:,} ({pct:.0f} %, ~{left:.0f} s left)"
        return f"{self.label}: {part} {self.unit}, {rate:,.0f}/s, {elapsed:.0f} s"

    def close(self) -> None:
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
