"""Kafka topic names: the one definition used by dataflows, producers, tests and training.

Every name can be overridden in settings (`NOVACRON_TOPICS_METRICS=...`); these are the
defaults and the documented meaning of each topic.
"""

from __future__ import annotations

METRICS = "metrics"
"""Raw metric events in any of the three wire formats (see docs/MESSAGES.md)."""

METRICS_DLQ = "metrics.dlq"
"""Dead letters: original bytes, with `novacron.reason` and `novacron.detail` headers."""

ALERTS = "alerts"
"""Alert JSON (`novacron_ml.schema.Alert`), keyed by the deterministic `alert_id`."""

INCIDENTS = "incidents"
"""Incident JSON (`novacron_ml.schema.Incident`): a host's overlapping alert episodes with
their probable cause, keyed by `incident_id`."""

METRICS_FEATURES = "metrics.features"
"""Optional (`NOVACRON_TOPICS_FEATURES`): per-window feature vectors and host cross features."""

ALERTS_FEEDBACK = "alerts.feedback"
METRICS_HOURLY = "metrics.hourly"
OPTIMIZER_ACTIONS = "optimizer.actions"
"""The tuning flow's recommendations (`novacron_ml.core.tuning.Recommendation`), keyed by host."""
DWCP_CONFIG = "dwcp.config"
"""Each host's HDE setting (`novacron_ml.core.tuning.KnobSetting`), keyed by host; compacted.
The tuning flow reads it, and writes it in apply mode."""
CAPACITY_FORECASTS = "capacity.forecasts"
CAPACITY_ALERTS = "capacity.alerts"
