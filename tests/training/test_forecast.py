"""LSTM forecaster: training, ONNX parity, the manifest, serving in the flow, forecast-eval."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bytewax.testing import run_main  # noqa: E402

from dataflows.detect import build_flow  # noqa: E402
from dataflows.io import CallbackSink, simulator_source  # noqa: E402
from novacron_ml.cli import main  # noqa: E402
from novacron_ml.core.features import FEATURE_INDEX, N_FEATURES, FeatureWindow  # noqa: E402
from novacron_ml.core.manifest import read_manifest  # noqa: E402
from novacron_ml.core.schema import Alert, parse_rfc3339_ms  # noqa: E402
from novacron_ml.core.settings import load_settings  # noqa: E402
from novacron_ml.core.simulator import FleetConfig, FleetSimulator  # noqa: E402
from operators.forecast.forecaster import ForecastConfig, SeriesForecast, SeriesForecaster  # noqa: E402
from operators.forecast.model import OnnxForecaster, forecaster_inputs  # noqa: E402
from training.lstm import (  # noqa: E402
    Forecaster,
    LSTMConfig,
    _loss,
    _Stepper,
    chronological_split,
    dropout_mask,
    export_onnx,
    predict,
    train,
    windows,
)

TINY = LSTMConfig(input_len=16, horizon=4, hidden=8, layers=2, max_epochs=3, batch_size=64)


def _sine(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = 1_767_225_600.0 + np.arange(n) * 300.0
    y = 10 + 3 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 0.1, n)
    return t, y


def _trained(cfg: LSTMConfig = TINY) -> Forecaster:
    t, y = _sine()
    tr, va, _ = chronological_split(len(y), cfg.input_len, cfg.horizon)
    xt, yt = windows(y, t, cfg.input_len, cfg.horizon, tr)
    xv, yv = windows(y, t, cfg.input_len, cfg.horizon, va)
    return train(xt, yt, xv, yv, cfg).model


def test_split_is_chronological_without_leakage() -> None:
    tr, va, te = chronological_split(1000, 20, 5)
    assert tr.max() + 5 <= va.min()  # training targets end before validation targets begin
    assert va.max() + 5 <= 700  # validation targets stay inside the first 70 %
    assert te.min() == 700 and te.max() == 1000 - 5


def test_untrained_model_is_the_persistence_forecast() -> None:
    model = Forecaster(TINY, std_floor=1e-6).eval()
    t, y = _sine(200)
    x, _ = windows(y, t, TINY.input_len, TINY.horizon, np.arange(20, 30))
    out = predict(model, x)
    np.testing.assert_allclose(out, np.repeat(x[:, -1:, 0], TINY.horizon, axis=1), rtol=1e-6)


def test_training_beats_persistence_on_a_smooth_cycle() -> None:
    cfg = replace(TINY, max_epochs=15, patience=15)
    t, y = _sine(3000)
    tr, va, te = chronological_split(len(y), cfg.input_len, cfg.horizon)
    xt, yt = windows(y, t, cfg.input_len, cfg.horizon, tr)
    xv, yv = windows(y, t, cfg.input_len, cfg.horizon, va)
    result = train(xt, yt, xv, yv, cfg)
    xs, ys = windows(y, t, cfg.input_len, cfg.horizon, te)
    mae = np.mean(np.abs(predict(result.model, xs) - ys))
    persistence = np.mean(np.abs(np.repeat(xs[:, -1:, 0], cfg.horizon, axis=1) - ys))
    assert result.best_epoch > 0 and mae < 0.9 * persistence
    again = train(xt, yt, xv, yv, cfg)  # seeded: the same run gives the same weights
    assert again.history == result.history


def test_batch_parts_sum_to_the_whole_batch_gradient() -> None:
    # without batch norm and dropout a batch's gradient does not depend on how it is split
    cfg = replace(TINY, batch_norm=False, dropout=0.0)
    t, y = _sine(400)
    x, yy = windows(y, t, cfg.input_len, cfg.horizon, np.arange(20, 120))
    xt, yt, w = torch.from_numpy(x), torch.from_numpy(yy), torch.linspace(0.5, 2, 100)
    model = Forecaster(cfg, 1e-3)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # not the zero start: all grads flow
    model.train()
    whole = torch.autograd.grad(_loss(model, xt, yt, w), list(model.parameters()))
    stepper = _Stepper(model, workers=3, threads_each=1, seed=0)
    try:
        loss = stepper.gradients(xt, yt, w)
    finally:
        stepper.close()
    assert loss == pytest.approx(float(_loss(model, xt, yt, w).detach()), rel=1e-5)
    for g, p in zip(whole, model.parameters(), strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_parallel_training_is_reproducible_and_learns() -> None:
    cfg = replace(TINY, workers=2, max_epochs=4, patience=4)
    t, y = _sine(2000)
    tr, va, _ = chronological_split(len(y), cfg.input_len, cfg.horizon)
    xt, yt = windows(y, t, cfg.input_len, cfg.horizon, tr)
    xv, yv = windows(y, t, cfg.input_len, cfg.horizon, va)
    first, again = (train(xt, yt, xv, yv, cfg) for _ in range(2))
    assert first.config.workers == 2 and first.best_epoch > 0
    assert again.history == first.history
    for name, value in first.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[name], value, rtol=0, atol=0)
    single = train(xt, yt, xv, yv, replace(cfg, workers=1))
    assert single.history != first.history  # the number of parts is part of the recipe


def test_dropout_mask_rate_and_scale() -> None:
    rng = np.random.default_rng(0)
    out = dropout_mask(torch.ones(1000, 1000), 0.1, rng)
    assert float((out == 0).float().mean()) == pytest.approx(0.1, abs=0.002)
    assert float(out.mean()) == pytest.approx(1.0, abs=0.003)  # inverted: the mean is kept
    again = dropout_mask(torch.ones(1000, 1000), 0.1, np.random.default_rng(0))
    assert torch.equal(out, again)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnx_matches_torch(tmp_path: Path, batch: int) -> None:
    model = _trained()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t, y = _sine(400, seed=batch)
    x, _ = windows(y * (1 + batch), t, TINY.input_len, TINY.horizon, np.arange(20, 20 + batch))
    expected = predict(model, x)
    (got,) = session.run(None, {"window": x})
    assert got.shape == (batch, TINY.horizon)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _train_cli(tmp_path: Path) -> Path:
    rc = main(
        [
            "forecast-train", "--out", str(tmp_path), "--name", "tiny", "--sim-hours", "4",
            "--sim-hosts", "2", "--input-len", "16", "--horizon", "4", "--hidden", "8",
            "--layers", "2", "--epochs", "2", "--report", str(tmp_path / "report"),
        ]
    )  # fmt: skip
    assert rc == 0
    return tmp_path / "tiny" / "1" / "manifest.json"  # registered: version 1, the champion


def test_forecast_train_writes_a_checked_model_and_manifest(tmp_path: Path) -> None:
    manifest_path = _train_cli(tmp_path)
    m = read_manifest(manifest_path)
    assert m.kind == "lstm_forecaster" and m.input_len == 16 and m.horizon == 4
    assert m.feature_order == ["value", "time_of_day_sin", "time_of_day_cos"]
    assert m.command.startswith("novacron-ml forecast-train") and len(m.sha256) == 64
    assert 0 <= m.metrics["test"]["within_5pct"] <= 1
    assert (tmp_path / "report" / "loss.png").stat().st_size > 1000
    served = OnnxForecaster(manifest_path)
    x = forecaster_inputs(np.full((3, 16), 0.5), np.arange(48).reshape(3, 16) * 60.0)
    assert served.predict(x).shape == (3, 4)
    onnx_file = manifest_path.parent / "tiny.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="does not match the manifest"):
        OnnxForecaster(manifest_path)


def test_tiny_model_is_served_in_the_flow(tmp_path: Path) -> None:
    manifest_path = _train_cli(tmp_path)
    hours = 1.5
    sim = FleetSimulator(
        FleetConfig(
            hosts=2, clusters=1, duration_s=hours * 3600, seed=3,
            start_ms=int(time.time() // 60 * 60_000) - int(hours * 3_600_000),
            anomalies_per_host_per_hour=0.0,
        )
    )  # fmt: skip
    settings = load_settings(
        forecast={"enabled": True, "model": str(manifest_path), "slo": {"cpu_util": 0.2}},
        topics={"forecasts": "metrics.forecasts"},
    )
    out: list[object] = []
    run_main(
        build_flow(settings, simulator_source(sim), CallbackSink(out.extend), kafka_output=False)
    )
    forecasts = [o for o in out if isinstance(o, SeriesForecast)]
    series = {f.series for f in forecasts}
    assert len(series) == 2 * 10  # every series, once it has 16 windows of history
    assert all(len(f.forecast) == 4 and np.isfinite(f.forecast).all() for f in forecasts)
    # one-step forecasts of CPU against the next window's actual mean: a served, sane model
    actual: dict[tuple[str, int], list[float]] = {}
    for ev in sim.events():
        if ev.metric == "cpu_util":
            actual.setdefault((ev.host, ev.ts_ms - ev.ts_ms % 60_000), []).append(ev.value)
    errors = []
    for f in forecasts:
        if f.series.endswith("/cpu_util"):
            host = f.series.split("/")[1]
            nxt = actual.get((host, parse_rfc3339_ms(f.window_end)))
            if nxt:
                errors.append(abs(f.forecast[0] - np.mean(nxt)) / np.mean(nxt))
    assert len(errors) > 100 and np.median(errors) < 0.1
    slo_alerts = [o for o in out if isinstance(o, Alert) and o.detector == "lstm_slo"]
    # simulated CPU runs ~0.4-0.6: a 0.2 "SLO" is already breached, so no forecast crossing
    assert not slo_alerts


def test_slo_and_residual_alerts() -> None:
    class Persistence:
        input_len, horizon = 4, 3

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.repeat(x[:, -1:, 0], 3, axis=1) * np.array([1.0, 1.1, 1.3])

    def window(i: int, value: float) -> FeatureWindow:
        f = np.zeros(N_FEATURES)
        f[FEATURE_INDEX["mean"]], f[FEATURE_INDEX["count"]] = value, 12
        return FeatureWindow("c/h/latency_p99_ms", i * 60_000, (i + 1) * 60_000, f)

    fc = SeriesForecaster(
        ForecastConfig(step_ms=60_000, min_residuals=5, slo={"latency_p99_ms": 120.0}), 4
    )
    model = Persistence()
    out = []
    for i in range(12):
        out += fc.add([window(i, 100.0 + (i % 2))], model)
    slo = [o for o in out if isinstance(o, Alert)]
    assert len(slo) == 1 and slo[0].detector == "lstm_slo"  # 100 * 1.3 > 120, once
    assert slo[0].type == "latency_spike" and slo[0].score == 3.0  # crossing at step 3
    spike = fc.add([window(12, 400.0)], model)
    (residual,) = [o for o in spike if isinstance(o, Alert) and o.detector == "lstm_residual"]
    assert residual.type == "prediction_error" and residual.expected == pytest.approx(101.0)
    assert fc.add([window(20, 100.0)], model) == []  # a gap restarts the history
    fc.add(
        [
            FeatureWindow(
                "c/h2/cpu_util", 2 * 86_400_000, 2 * 86_400_000 + 60_000, window(0, 1).features
            )
        ],
        model,
    )
    assert fc.prune() == 1 and list(fc.series) == ["c/h2/cpu_util"]  # silent for > 1 day


def test_forecast_eval_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t, y = _sine(900)
    csv = tmp_path / "s.csv"
    csv.write_text(
        "time,load\n" + "".join(f"{a - t[0]:.0f},{b:.4f}\n" for a, b in zip(t, y, strict=True))
    )
    out = tmp_path / "fe.json"
    args = [
        "forecast-eval", "--csv", str(csv), "--time-column", "time", "--value-column", "load",
        "--horizon", "6", "--json", str(out), "--input-len", "16", "--hidden", "8",
        "--layers", "1", "--epochs", "2", "--quiet", "--force",
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    f = report["files"][str(csv)]
    assert f["train_rows"] == 630 and f["test_origins"] == 900 - 630 - 6 + 1
    for model in ("lstm", "seasonal_naive", "ewma"):
        assert set(f[model]) >= {"mase", "smape", "rmse", "mae", "r2", "mape", "within_5pct"}
        assert len(f[model]["by_step"]["mase"]) == 6
    assert report["overall"]["lstm"]["mase"] is not None
    # per-file training of two files, with the plots
    other = tmp_path / "other.csv"
    other.write_text(csv.read_text().replace(",", ",1").replace("time,1load", "time,load"))
    plots = tmp_path / "plots"
    assert main([*args[:3], str(other), *args[3:], "--per-file", "--report", str(plots)]) == 0
    report = json.loads(out.read_text())
    assert set(report["files"]) == {str(csv), str(other)} and report["training"] == "per file"
    for png in ("loss.png", "mase_by_step.png"):
        assert (plots / png).stat().st_size > 5000
    capsys.readouterr()
    short = tmp_path / "short.csv"
    short.write_text("time,load\n0,1\n60,2\n120,3\n")
    assert main([*args[:2], str(short), *args[3:]]) == 2  # bad input
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(short) in err and "too short" in err
    assert main([*args[:6], "nope", *args[7:]]) == 2
    assert "no column 'nope'" in capsys.readouterr().err
    assert main([*args, "--workers", "-1"]) == 2
    assert "--workers must be 0" in capsys.readouterr().err
    # the report records the resolved threads and workers (a run's recipe)
    assert report["config"]["workers"] >= 1 and report["config"]["threads"] >= 1


def test_windows_batched_together_are_each_checked_and_kept_out_of_learning() -> None:
    class Persistence:
        input_len, horizon = 4, 2

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.repeat(x[:, -1:, 0], 2, axis=1)

    def window(i: int, value: float) -> FeatureWindow:
        f = np.zeros(N_FEATURES)
        f[FEATURE_INDEX["mean"]], f[FEATURE_INDEX["count"]] = value, 12
        return FeatureWindow("c/h/cpu_util", i * 60_000, (i + 1) * 60_000, f)

    fc = SeriesForecaster(ForecastConfig(step_ms=60_000, min_residuals=5), 4)
    values = [0.5 + 0.01 * (i % 3) for i in range(20)] + [0.9, 0.9] + [0.51] * 5
    out = fc.add([window(i, v) for i, v in enumerate(values)], Persistence())  # one batch
    alerts = [o for o in out if isinstance(o, Alert)]
    # both anomalous windows alert (each against a forecast from the windows before it), and
    # the return to 0.51 does not: the spike never entered the model's inputs
    assert [a.window_start for a in alerts] == [
        "1970-01-01T00:20:00.000Z",
        "1970-01-01T00:21:00.000Z",
    ]
    assert len([o for o in out if isinstance(o, SeriesForecast)]) == len(values) - 3
