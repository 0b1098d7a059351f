"""Offline training (installed with the `train` extra): trains models, exports them to ONNX into
`models/onnx/` and refreshes Prophet forecasts. The streaming runtime never imports this package.

Nothing is trained yet: the foundation's statistical tier needs no model. The LSTM forecaster,
Isolation Forest and capacity planner land here (see the open issues).
"""
