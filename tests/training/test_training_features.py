"""training/ sees exactly the features the flow serves, on public data (NAB)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
import pytest
from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.io import CallbackSink, MessageSource
from novacron_ml.core.features import FEATURE_NAMES, FeatureWindow
from novacron_ml.core.schema import WireEvent
from novacron_ml.core.settings import Settings
from training.features import feature_matrix

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab" / "data"
NAB_FILE = DATA / "realAWSCloudwatch" / "ec2_cpu_utilization_24ae8d.csv"


def load(path: Path) -> tuple[list[int], list[float]]:
    ts, values = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            when = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            ts.append(int(when.timestamp() * 1000))
            values.append(float(row["value"]))
    return ts, values


@pytest.mark.skipif(not NAB_FILE.exists(), reason="shared NAB data not present")
def test_offline_matrix_equals_what_the_flow_publishes() -> None:
    ts, values = load(NAB_FILE)
    settings = Settings(
        window={"length_s": 1800, "allowed_lateness_s": 0},
        features={"step_s": 300, "lookback_s": 6 * 3600, "bucket_s": 1800},
        ingest={"max_event_age_s": 0},
        topics={"features": "f"},
    )
    starts, matrix = feature_matrix(ts, values, settings.feature_config())
    assert matrix.shape == (len(starts), len(FEATURE_NAMES)) and len(starts) > 600
    assert np.isfinite(matrix).all()

    messages = [
        (b"", msgspec.json.encode(WireEvent(t, "series", "offline", "value", v)))
        for t, v in zip(ts, values, strict=True)
    ]
    out: list[object] = []
    flow = build_flow(
        settings,
        MessageSource(lambda: iter(messages)),
        CallbackSink(out.extend),
        kafka_output=False,
    )
    run_main(flow)
    served = sorted((w for w in out if isinstance(w, FeatureWindow)), key=lambda w: w.start_ms)
    assert [w.start_ms for w in served] == starts.tolist()
    assert np.array_equal(np.stack([w.features for w in served]), matrix)


def test_out_of_order_input_is_refused_offline() -> None:
    with pytest.raises(ValueError, match="out of time order"):
        feature_matrix([*range(0, 700_000, 5000), 1000], [1.0] * 141)
