"""Operator feedback on alerts (`alerts.feedback`): applied to the alert's series.

A false positive widens that series' alert threshold (×1.25 per report, at most ×4) and
teaches its baseline the reported value, so the same level stops alerting; a true positive
narrows a widened threshold back (÷1.25, never below the configured one). Feedback is keyed
by series, so it reaches the same state as the series' windows;
`operators.detection.series.apply_series_feedback` applies this and carries the verdict to
the other tiers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from novacron_ml.core.deadletter import DeadLetter, Reason
from operators.detection.robust_z import RobustZDetector

WIDEN = 1.25
MAX_SCALE = 4.0

SeriesKey = Annotated[str, msgspec.Meta(pattern=r"^[^/]+/[^/]+/.+$", max_length=400)]


class Verdict(enum.StrEnum):
    FALSE_POSITIVE = "false_positive"
    TRUE_POSITIVE = "true_positive"


class Feedback(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operator verdict, as JSON on the feedback topic (docs/MESSAGES.md)."""

    alert_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    verdict: Verdict
    series: SeriesKey
    """`cluster/host/metric` of the alert."""
    value: float | None = None
    """The alerted window's value, learned into the baseline on a false positive."""


_DECODE = msgspec.json.Decoder(Feedback)


def parse_feedback(payload: bytes | None, key: bytes | None, source: str) -> Feedback | DeadLetter:
    try:
        return _DECODE.decode(payload or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return DeadLetter(Reason.BAD_FEEDBACK, str(exc), payload or b"", key, source)


def apply_feedback(detector: RobustZDetector, feedback: Feedback) -> None:
    if feedback.verdict is Verdict.FALSE_POSITIVE:
        detector.threshold_scale = min(detector.threshold_scale * WIDEN, MAX_SCALE)
        if feedback.value is not None:
            detector.learn(feedback.value, anomalous=False)
    else:
        detector.threshold_scale = max(detector.threshold_scale / WIDEN, 1.0)


MAX_PENDING = 16
"""Verdicts kept for a series the flow has no state for, at most (the rest: dead letters)."""


@dataclass
class PendingVerdicts:
    """Verdicts for a series with no detection state yet: a few bytes, not a series' state.

    A flow that starts afresh reads the feedback topic from the beginning, so verdicts may
    arrive before their series' first window; they wait here and are applied when it arrives.
    A series that does not arrive within the idle TTL (or by the end of a bounded run), and a
    verdict past `MAX_PENDING`, go to the DLQ as `unknown_series`: a verdict for a series the
    flow never sees creates no state (it once made a whole series' state, ~215 KB each)."""

    since_s: float
    """Wall clock of the first verdict (seconds)."""
    verdicts: list[Feedback] = field(default_factory=list)


def unknown_series_letter(feedback: Feedback, why: str) -> DeadLetter:
    return DeadLetter(
        Reason.UNKNOWN_SERIES,
        f"no detection state for series {feedback.series}: {why}; the verdict was not applied",
        msgspec.json.encode(feedback),
        feedback.alert_id.encode(),
    )
