"""Ground-truth anomaly labels: what the simulator injected, what evaluations score against."""

from __future__ import annotations

import msgspec


class AnomalyLabel(msgspec.Struct, frozen=True, omit_defaults=True):
    """Ground truth for one injected anomaly (one JSON line in the labels file)."""

    anomaly_id: str
    type: str
    host: str
    cluster: str
    metrics: list[str]
    start_ms: int
    end_ms: int
    shape: str | None = None
    """The hard scenario's shape (`shift`, `ramp`, `variance`, `cycle`); None: the default
    scenario's large step."""
    root: str | None = None
    """The metric that moved first (the hard scenario: the others follow it)."""


def write_labels(labels: list[AnomalyLabel], path: str) -> None:
    """Write labels as JSON lines."""
    enc = msgspec.json.Encoder()
    with open(path, "wb") as f:
        for label in labels:
            f.write(enc.encode(label) + b"\n")


def read_labels(path: str) -> list[AnomalyLabel]:
    dec = msgspec.json.Decoder(AnomalyLabel)
    with open(path, "rb") as f:
        return [dec.decode(line) for line in f if line.strip()]
