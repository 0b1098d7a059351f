"""LSTM forecaster costs (issue 5): inference per event in the flow, ONNX Runtime per forecast
by batch size, and training throughput on CPU.

1. The detect flow over the same simulated events with the forecaster off and on, in one run
   (one Bytewax worker): the difference, per event, is the forecaster's amortised cost.
2. The served ONNX model alone (1 intra-op thread, as in the flow) at batch sizes 1, 64, 512.
3. With --architectures: untrained exports of three architectures timed alone in ORT at
   batch 512 (what choosing the served model's size costs; needs torch).
4. Training: epochs over N random windows with the default architecture; prints windows/s
   and the time one epoch over 1 million windows takes at that rate (`--train-windows
   1000000` measures it directly).

    python bench/bench_forecast.py [--hours 2] [--train-windows 100000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
from bytewax.testing import run_main

from dataflows.detect import build_flow
from novacron_ml.models import DEFAULT_FORECASTER, forecaster_inputs, load_forecaster
from novacron_ml.settings import load_settings
from novacron_ml.simulator import FleetConfig, FleetSimulator
from novacron_ml.sources import CallbackSink, simulator_source


def flow_rate(sim: FleetSimulator, forecast: bool) -> tuple[float, int]:
    settings = load_settings(forecast={"enabled": forecast}, ingest={"max_event_age_s": 0})
    outputs = 0

    def count(items: list[Any]) -> None:
        nonlocal outputs
        outputs += len(items)

    flow = build_flow(settings, simulator_source(sim), CallbackSink(count), kafka_output=False)
    start = time.perf_counter()
    run_main(flow)
    return sim.n_events / (time.perf_counter() - start), outputs


def ort_costs(batches: tuple[int, ...] = (1, 64, 512), reps: int = 50) -> dict[int, float]:
    model = load_forecaster(str(DEFAULT_FORECASTER))
    rng = np.random.default_rng(0)
    out = {}
    for b in batches:
        x = forecaster_inputs(
            rng.uniform(0.3, 0.6, (b, model.input_len)),
            np.arange(b * model.input_len).reshape(b, model.input_len) * 60.0,
        )
        model.predict(x)
        start = time.perf_counter()
        for _ in range(reps):
            model.predict(x)
        out[b] = (time.perf_counter() - start) / reps / b * 1e6
    return out


def architecture_costs(batch: int = 512, reps: int = 20) -> dict[str, float]:
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    import onnxruntime as ort

    from training.lstm import Forecaster, LSTMConfig, export_onnx

    base = LSTMConfig()
    variants = {
        "3x32 bidirectional + attention (seed)": base,
        "2x16 bidirectional + attention": replace(base, layers=2, hidden=16),
        "1x32 unidirectional (served)": replace(
            base, layers=1, bidirectional=False, attention=False
        ),
    }
    out = {}
    x = np.random.default_rng(0).random((batch, base.input_len, 3), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in variants.items():
            path = Path(tmp) / "m.onnx"
            export_onnx(Forecaster(cfg, 1e-6), path)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            session.run(None, {"window": x})
            start = time.perf_counter()
            for _ in range(reps):
                session.run(None, {"window": x})
            out[name] = (time.perf_counter() - start) / reps / batch * 1e6
    return out


def training_rate(n_windows: int, epochs: int) -> float:
    import torch

    from training.lstm import LSTMConfig, train

    cfg = LSTMConfig(max_epochs=epochs, patience=epochs + 1)
    rng = np.random.default_rng(0)
    t = np.arange(n_windows * 2, dtype=np.float64) * 60.0
    base = np.sin(t / 3600.0) + rng.normal(0, 0.05, len(t))
    starts = rng.integers(0, len(t) - cfg.input_len - cfg.horizon, n_windows)
    idx = starts[:, None] + np.arange(cfg.input_len)[None, :]
    x = forecaster_inputs(base[idx], t[idx])
    y = base[starts[:, None] + cfg.input_len + np.arange(cfg.horizon)[None, :]].astype(np.float32)
    n_val = max(2, n_windows // 20)
    start = time.perf_counter()
    train(x[n_val:], y[n_val:], x[:n_val], y[:n_val], cfg)
    seconds = time.perf_counter() - start
    del torch
    return epochs * n_windows / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--hours", type=float, default=2.0, help="simulated hours (12 hosts, 5 s)")
    p.add_argument("--train-windows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--architectures", action="store_true", help="also time 3 architectures")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    sim = FleetSimulator(FleetConfig(duration_s=args.hours * 3600, anomalies_per_host_per_hour=0))
    flow_rate(FleetSimulator(FleetConfig(duration_s=600)), True)  # warm-up: imports, session
    off, _ = flow_rate(sim, False)
    on, _ = flow_rate(sim, True)
    added_us = (1 / on - 1 / off) * 1e6
    print(f"{sim.n_events:,} events, 1 worker: forecaster off {off:,.0f} ev/s, on {on:,.0f} ev/s")
    print(f"forecaster cost per event (amortised): {added_us:.2f} us")
    costs = ort_costs()
    for b, us in costs.items():
        print(f"ONNX Runtime, 1 thread, batch {b:>3}: {us:8.1f} us per series forecast")
    if args.architectures:
        for name, us in architecture_costs().items():
            print(f"untrained {name:<40} {us:7.1f} us per series forecast (batch 512)")
    rate = training_rate(args.train_windows, args.epochs)
    print(
        f"training: {rate:,.0f} windows/s on {os.cpu_count()} cores -> one epoch over 1M "
        f"windows {1_000_000 / rate / 60:.1f} min"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": platform.processor() or platform.machine(),
                    "events": sim.n_events,
                    "flow_off_eps": off,
                    "flow_on_eps": on,
                    "forecast_cost_us_per_event": added_us,
                    "ort_us_per_forecast": costs,
                    "train_windows_per_s": rate,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
