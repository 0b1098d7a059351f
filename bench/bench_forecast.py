"""LSTM forecaster costs (issue 5): inference per event in the flow, ONNX Runtime per forecast
by batch size, and training throughput on CPU.

1. The detect flow over the same simulated events with the forecaster off and on, in one run
   (one Bytewax worker; the River and Isolation Forest tiers off in both, see LEAN_DETECTOR):
   the difference, per event, is the forecaster's amortised cost.
2. The served ONNX model alone (1 intra-op thread, as in the flow) at batch sizes 1, 64, 512.
3. With --architectures: untrained exports of three architectures timed alone in ORT at
   batch 512 (what choosing the served model's size costs; needs torch).
4. Training: epochs over N random windows with the default (seed) architecture, and with
   --architectures also the served 1 x 32 one; prints windows/s and the time one epoch over
   1 million windows takes at that rate (`--train-windows 1000000` measures it directly).
   With --train-baseline, the default (one data-parallel thread per core) alternated with one
   thread doing whole batches, --train-reps times each, medians and their ratio.

    python bench/bench_forecast.py [--hours 2] [--train-windows 100000] [--json OUT]
    python bench/bench_forecast.py --training-only --train-baseline --train-reps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import numpy as np
from bytewax.testing import run_main

from dataflows.detect import build_flow
from dataflows.io import CallbackSink, simulator_source
from novacron_ml.core.manifest import DEFAULT_FORECASTER
from novacron_ml.core.settings import load_settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from operators.forecast.model import forecaster_inputs, load_forecaster

LEAN_DETECTOR = {"river": False, "iforest_models": ""}
"""The flow's River and Isolation Forest tiers off for the on/off comparison: they cost
~300 µs per window whether the forecaster runs or not, and their run-to-run noise on this VM
(±25 % of ~110 µs per event) would bury the forecaster's few µs."""


def flow_rate(sim: FleetSimulator, forecast: bool) -> tuple[float, int]:
    settings = load_settings(
        forecast={"enabled": forecast}, ingest={"max_event_age_s": 0}, detector=LEAN_DETECTOR
    )
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


SERVED = {"layers": 1, "bidirectional": False, "attention": False}
"""The served model's architecture (models/onnx/lstm_forecaster) over the defaults."""


def training_rate(n_windows: int, epochs: int, **arch: Any) -> float:
    import torch

    from training.lstm import LSTMConfig, train

    cfg = LSTMConfig(max_epochs=epochs, patience=epochs + 1, max_train_windows=n_windows, **arch)
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
    p.add_argument("--reps", type=int, default=3, help="flow runs per mode, alternated (3)")
    p.add_argument("--architectures", action="store_true", help="also time 3 architectures")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--training-only", action="store_true", help="skip the flow and ORT parts")
    p.add_argument(
        "--train-baseline", action="store_true",
        help="alternate the default training with one thread doing whole batches (workers=1)",
    )  # fmt: skip
    p.add_argument("--train-reps", type=int, default=1, help="training runs per variant (1)")
    args = p.parse_args()
    out: dict[str, Any] = {"machine": platform.processor() or platform.machine()}
    if not args.training_only:
        out.update(inference(args))
    variants = {"default": {}, **({"workers=1": {"workers": 1}} if args.train_baseline else {})}
    train_rates: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(args.train_reps):
        names = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in names:
            train_rates[name].append(
                training_rate(args.train_windows, args.epochs, **variants[name])
            )
            print(f"  training run {i + 1}, {name}: {train_rates[name][-1]:,.0f} windows/s")
    rate = float(np.median(train_rates["default"]))
    from training.lstm import cores  # what training resolves its threads from (affinity)

    print(
        f"training, seed architecture (3 x 32 bi + attention): {rate:,.0f} windows/s on "
        f"{cores()} cores -> one epoch over 1M windows {1_000_000 / rate / 60:.1f} min"
    )
    if args.train_baseline:
        base = float(np.median(train_rates["workers=1"]))
        print(
            f"training, one thread on whole batches (workers=1): {base:,.0f} windows/s -> "
            f"{1_000_000 / base / 60:.1f} min; default / workers=1 = {rate / base:.2f}"
        )
    out.update(train_windows_per_s=rate, train_runs=train_rates)
    if args.architectures:
        served_rate = training_rate(args.train_windows, args.epochs, **SERVED)
        print(
            f"training, served architecture (1 x 32): {served_rate:,.0f} windows/s -> one "
            f"epoch over 1M windows {1_000_000 / served_rate / 60:.1f} min"
        )
        out["train_windows_per_s_served"] = served_rate
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


def inference(args: argparse.Namespace) -> dict[str, Any]:
    """Parts 1-3: the forecaster's cost in the flow and in ONNX Runtime."""
    sim = FleetSimulator(FleetConfig(duration_s=args.hours * 3600, anomalies_per_host_per_hour=0))
    flow_rate(FleetSimulator(FleetConfig(duration_s=600)), True)  # warm-up: imports, session
    # off/on alternated (off on on off off on ...): runs later in a process are slower on this
    # VM, so a fixed order would bias the difference; the medians are compared
    rates: dict[bool, list[float]] = {False: [], True: []}
    for i in range(args.reps):
        for forecast in (False, True) if i % 2 == 0 else (True, False):
            rates[forecast].append(flow_rate(sim, forecast)[0])
    off, on = float(np.median(rates[False])), float(np.median(rates[True]))
    added_us = (1 / on - 1 / off) * 1e6
    print(
        f"{sim.n_events:,} events, 1 worker, median of {args.reps}: forecaster off "
        f"{off:,.0f} ev/s, on {on:,.0f} ev/s"
    )
    print(f"forecaster cost per event (amortised): {added_us:.2f} us")
    costs = ort_costs()
    for b, us in costs.items():
        print(f"ONNX Runtime, 1 thread, batch {b:>3}: {us:8.1f} us per series forecast")
    if args.architectures:
        for name, us in architecture_costs().items():
            print(f"untrained {name:<40} {us:7.1f} us per series forecast (batch 512)")
    return {
        "events": sim.n_events,
        "flow_eps_runs": {"off": rates[False], "on": rates[True]},
        "flow_off_eps": off,
        "flow_on_eps": on,
        "forecast_cost_us_per_event": added_us,
        "ort_us_per_forecast": costs,
    }


if __name__ == "__main__":
    main()
