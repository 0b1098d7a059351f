"""novacron-ml: streaming ML for distributed infrastructure (Bytewax dataflows over Kafka)."""

from __future__ import annotations

__version__ = "0.1.0"
