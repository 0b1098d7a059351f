"""Offline training (installed with the `train` extra): trains models, exports them to ONNX into
`models/onnx/` and refreshes Prophet forecasts. The streaming runtime never imports this package.

Here: the LSTM forecaster (`lstm.py`, `forecast_eval.py`), the capacity planner
(`capacity.py`, `planner.py`, `capacity_report.py`), shared CSV loading and metrics
(`series_io.py`, `metrics.py`) and feature matrices (`features.py`).
"""

SIM_START = "2026-01-05T00:00:00Z"
"""Fixed start (a Monday) of the simulated training data, so every training is reproducible
(here, not in `training.features`, so the CLI's parsers name it without importing numpy)."""
