"""Alert construction: the one place an `Alert` is made from a scored window.

Every detector that alerts (the per-series decision, the forecaster's residual and SLO
alerts) builds its alert here, so labels, times and the deterministic id are filled the same
way for all of them (the schema is `novacron_ml.core.schema.Alert`, docs/MESSAGES.md).
"""

from __future__ import annotations

from novacron_ml.core.features import FeatureWindow
from novacron_ml.core.schema import (
    Alert,
    AnomalyType,
    Contribution,
    Severity,
    alert_id_for,
    rfc3339_ms,
    series_labels,
    split_series_key,
)


def window_alert(
    window: FeatureWindow,
    kind: AnomalyType,
    severity: Severity,
    *,
    value: float,
    expected: float,
    score: float,
    detector: str,
    id_kind: str | None = None,
    probability: float | None = None,
    tiers: dict[str, float] | None = None,
    explanation: list[Contribution] | None = None,
    onset_ms: int | None = None,
) -> Alert:
    """The alert for `window` of its series. `id_kind` (default: the type) goes into the
    alert id, so detectors that may fire on the same window get distinct ids. `onset_ms`: the
    estimated start of the deviation (decision alerts; `Alert.onset`)."""
    cluster, host, metric = split_series_key(window.series)
    return Alert(
        alert_id=alert_id_for(window.series, window.start_ms, id_kind or kind.value),
        type=kind.value,
        severity=severity.value,
        host=host,
        cluster=cluster,
        metric=metric,
        window_start=rfc3339_ms(window.start_ms),
        window_end=rfc3339_ms(window.end_ms),
        value=value,
        expected=expected,
        score=score,
        detector=detector,
        probability=probability,
        tiers=tiers,
        explanation=explanation,
        labels=series_labels(window.series),
        onset=None if onset_ms is None else rfc3339_ms(onset_ms),
    )
