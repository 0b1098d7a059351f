"""Bytewax dataflows: wiring only; the logic lives in `operators/`."""
