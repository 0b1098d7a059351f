"""Offline training (installed with the `train` extra): trains models, exports them to ONNX into
`models/onnx/` and refreshes Prophet forecasts. The streaming runtime never imports this package.

Here: the LSTM forecaster (`lstm.py`, `forecast_eval.py`), the capacity planner
(`capacity.py`, `planner.py`, `capacity_report.py`), shared CSV loading and metrics
(`series_io.py`, `metrics.py`) and feature matrices (`features.py`).
"""
