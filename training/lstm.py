"""The LSTM performance forecaster: dataset, model, training, ONNX export (needs torch).

Model (the seed's architecture, configurable): a stacked bidirectional LSTM over the last
`input_len` steps (value + time-of-day channels), additive attention over its outputs, batch
normalisation and dropout, and a linear head that predicts the next `horizon` steps as
corrections to the last value. Normalisation lives inside the graph: each input window is
scaled by its own mean and standard deviation, floored at `std_floor` (fitted on the training
windows), and the output is scaled back; so the exported ONNX model takes raw values and
serves any series scale, and the manifest records the floor and the method.

Training: Adam, ReduceLROnPlateau, early stopping on the validation loss (restoring the best
weights), seeded; chronological splits are the caller's (see `chronological_split`). Each batch
is split across `workers` threads (one per core by default), each running the forward and
backward of its part on one intra-op thread against a replica that shares the weights; their
gradients are summed in a fixed order and one Adam step is taken: the LSTM's small matrices
leave a second intra-op thread on one batch nearly idle, two parts keep both cores busy (1.28x
the windows/s on 2 cores, docs/BENCHMARKS.md). Dropout masks come from a seeded generator
per part, so a run is reproducible for a given seed and number of workers (batch norm
normalises each part by its own statistics, as data-parallel training does; its running
statistics are the parts' mean).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from operators.forecast.model import FORECASTER_INPUTS, forecaster_inputs

REL_FLOOR = 0.01
"""The per-window scale is at least 1% of the window's |mean| (flat series stay stable)."""
Z_CLIP = 20.0
"""Normalised inputs are clipped to +-20 (a spike must not saturate the LSTM)."""


@dataclass(frozen=True)
class LSTMConfig:
    input_len: int = 48
    horizon: int = 12
    hidden: int = 32
    layers: int = 3
    bidirectional: bool = True
    attention: bool = True
    batch_norm: bool = True
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 5
    lr_factor: float = 0.5
    lr_patience: int = 2
    seed: int = 0
    threads: int = 0
    """torch threads in all (0: all cores)."""
    workers: int = 0
    """Data-parallel threads per batch (0: one per thread above, each part >= 64 windows)."""
    max_train_windows: int = 200_000
    """Most recent training windows kept (older ones dropped), bounding time and memory."""


class Forecaster(nn.Module):
    def __init__(self, cfg: LSTMConfig, std_floor: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.std_floor = float(std_floor)
        width = cfg.hidden * (2 if cfg.bidirectional else 1)
        # one module per layer so the dropout between them draws from `dropout_rng`
        self.lstm = nn.ModuleList(
            nn.LSTM(
                input_size=len(FORECASTER_INPUTS) if i == 0 else width,
                hidden_size=cfg.hidden,
                batch_first=True,
                bidirectional=cfg.bidirectional,
            )
            for i in range(cfg.layers)
        )
        self.attn = nn.Linear(width, 1) if cfg.attention else None
        self.norm: nn.Module = nn.BatchNorm1d(width) if cfg.batch_norm else nn.Identity()
        self.head = nn.Linear(width, cfg.horizon)
        # start as the persistence forecast (every step = the last value): training can only
        # improve on it, and early stopping keeps it if it does not
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.dropout_rng: np.random.Generator | None = None
        """Dropout masks' source in training (`train` seeds one per part; None: torch's)."""

    def dropout(self, t: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cfg.dropout <= 0:
            return t
        if self.dropout_rng is None:
            return nn.functional.dropout(t, self.cfg.dropout, True)
        return dropout_mask(t, self.cfg.dropout, self.dropout_rng)

    def scale(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window location and scale: std, floored at 1% of |mean| and at std_floor."""
        mean = values.mean(dim=1, keepdim=True)
        std = values.std(dim=1, keepdim=True)
        std = torch.maximum(std, REL_FLOOR * mean.abs())
        return mean, torch.clamp(std, min=self.std_floor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = x[:, :, 0]
        mean, std = self.scale(values)
        z = torch.clamp((values - mean) / std, -Z_CLIP, Z_CLIP)
        h_in = torch.cat([z.unsqueeze(-1), x[:, :, 1:]], dim=-1)
        out = h_in
        for i, layer in enumerate(self.lstm):
            out, _ = layer(self.dropout(out) if i else out)
        if self.attn is not None:
            weights = torch.softmax(self.attn(out).squeeze(-1), dim=1)
            ctx = (weights.unsqueeze(-1) * out).sum(dim=1)
        else:
            ctx = out[:, -1]
        delta = self.head(self.dropout(self.norm(ctx)))
        return values[:, -1:] + std * delta


def dropout_mask(t: torch.Tensor, p: float, rng: np.random.Generator) -> torch.Tensor:
    """Inverted dropout with a mask from `rng`: 16 random bits per element, the rate rounded to
    1/65536. Cheaper than torch's bernoulli_, whose CPU generator draws one number at a time,
    and seeded per part so threads do not share one stream."""
    drop = round(p * 65536)
    bits = np.frombuffer(rng.bytes(2 * t.numel()), dtype=np.uint16).reshape(t.shape)
    keep = torch.from_numpy(bits >= drop)
    return t * keep * (65536 / (65536 - drop))


# -- data ---------------------------------------------------------------------------------------
def windows(
    values: np.ndarray, t_s: np.ndarray, input_len: int, horizon: int, origins: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, input_len, 3) ending before each origin and targets (N, horizon) from it."""
    origins = np.asarray(origins, dtype=np.int64)
    idx = origins[:, None] + np.arange(-input_len, 0)[None, :]
    x = forecaster_inputs(values[idx], t_s[idx])
    tgt = origins[:, None] + np.arange(horizon)[None, :]
    y = values[np.minimum(tgt, len(values) - 1)].astype(np.float32)
    return x, y


def chronological_split(
    n: int, input_len: int, horizon: int, train_frac: float = 0.7, val_frac: float = 0.15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origins for train, validation (both inside the first `train_frac` of the series, the
    validation ones last, targets never past the boundary) and test (targets in the rest)."""
    n_train = int(n * train_frac)
    last_train_origin = n_train - horizon  # targets end at n_train - 1
    all_train = np.arange(input_len, last_train_origin + 1)
    n_val = max(1, int(len(all_train) * val_frac))
    # a gap of `horizon` between the two so validation targets never overlap training targets
    train = all_train[: max(0, len(all_train) - n_val - horizon)]
    val = all_train[len(all_train) - n_val :]
    test = np.arange(max(n_train, input_len), n - horizon + 1)
    return train, val, test


def fit_std_floor(x_train: np.ndarray) -> float:
    """A floor for the per-window std: 5% of the median window std of the training windows."""
    stds = x_train[:, :, 0].std(axis=1)
    med = float(np.median(stds)) if len(stds) else 0.0
    scale = float(np.median(np.abs(x_train[:, :, 0]))) if len(stds) else 1.0
    return max(0.05 * med, 1e-6 * max(scale, 1.0), 1e-9)


# -- training -----------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model: Forecaster
    config: LSTMConfig
    std_floor: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    train_windows: int = 0
    val_windows: int = 0


def _weights(w: np.ndarray | None, n: int) -> torch.Tensor:
    if w is None:
        return torch.ones(n)
    return torch.from_numpy(np.asarray(w, dtype=np.float32))


def series_weight(train_values: np.ndarray, n_windows: int) -> np.ndarray:
    """Per-window loss weights of one series: 1 / the std of its training values."""
    scale = float(np.std(train_values)) or float(np.mean(np.abs(train_values))) or 1.0
    return np.full(n_windows, 1.0 / scale, dtype=np.float32)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def resolve(cfg: LSTMConfig) -> LSTMConfig:
    """`threads` and `workers` as training will use them on this machine (0 resolved)."""
    if cfg.threads < 0 or cfg.workers < 0:
        raise ValueError(f"threads ({cfg.threads}) and workers ({cfg.workers}) must be >= 0")
    threads = cfg.threads or cores()
    return replace(
        cfg, threads=threads, workers=cfg.workers or max(1, min(threads, cfg.batch_size // 64))
    )


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: LSTMConfig,
    *,
    w_train: np.ndarray | None = None,
    w_val: np.ndarray | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train on (x_train, y_train), early-stop on (x_val, y_val) (`best_epoch` 0: nothing
    beat the persistence forecast the model starts as). `w_*`: per-window loss weights
    (`series_weight`; default 1). The result's config is `resolve(cfg)`."""
    _seed(cfg.seed)
    cfg = resolve(cfg)
    threads, workers = cfg.threads, cfg.workers
    torch.set_num_threads(threads)
    if len(x_train) > cfg.max_train_windows:
        keep = slice(len(x_train) - cfg.max_train_windows, None)
        x_train, y_train = x_train[keep], y_train[keep]
        w_train = None if w_train is None else w_train[keep]
    if len(x_train) < 2:
        raise ValueError(f"{len(x_train)} training windows: the series is too short")
    floor = fit_std_floor(x_train)
    model = Forecaster(cfg, floor)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.lr_factor, patience=cfg.lr_patience
    )
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val)
    wt = _weights(w_train, len(xt))
    wv = _weights(w_val, len(xv))
    rng = np.random.default_rng(cfg.seed)
    result = TrainResult(model, cfg, floor, train_windows=len(xt), val_windows=len(xv))
    # epoch 0 is the persistence forecast the model starts as
    best = evaluate_loss(model, xv, yv, wv, cfg.batch_size * 4) if len(xv) else math.inf
    best_state, bad_epochs = copy.deepcopy(model.state_dict()), 0
    step = _Stepper(model, workers, max(1, threads // workers), cfg.seed)
    start = time.perf_counter()
    try:
        for epoch in range(1, cfg.max_epochs + 1):
            model.train()
            order = torch.from_numpy(rng.permutation(len(xt)))
            total, seen = 0.0, 0
            for i in range(0, len(order), cfg.batch_size):
                batch = order[i : i + cfg.batch_size]
                if len(batch) < 2:  # batch norm needs two
                    continue
                loss = step.gradients(xt[batch], yt[batch], wt[batch])
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total += loss * len(batch)
                seen += len(batch)
            step.sync_buffers()
            val = evaluate_loss(model, xv, yv, wv, cfg.batch_size * 4) if len(xv) else total / seen
            sched.step(val)
            row = {
                "epoch": epoch,
                "train_loss": total / max(seen, 1),
                "val_loss": val,
                "lr": opt.param_groups[0]["lr"],
            }
            result.history.append(row)
            if progress is not None:
                progress(epoch, row)
            if val < best - 1e-6:
                best, best_state, bad_epochs = val, copy.deepcopy(model.state_dict()), 0
                result.best_epoch = epoch
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    break
    finally:
        step.close()
    model.load_state_dict(best_state)
    model.eval()
    model.dropout_rng = None
    result.seconds = time.perf_counter() - start
    return result


class _Stepper:
    """Gradients of one batch, split into parts computed in parallel threads (data parallel
    within one process: the LSTM kernels release the GIL). Part i runs on replica i, which
    shares the model's weights and has its own batch-norm buffers and dropout generator."""

    def __init__(self, model: Forecaster, workers: int, threads_each: int, seed: int) -> None:
        self.replicas = [model]
        for _ in range(workers - 1):
            replica = copy.deepcopy(model)
            for mine, shared in zip(replica.parameters(), model.parameters(), strict=True):
                mine.data = shared.data
            self.replicas.append(replica)
        for i, replica in enumerate(self.replicas):
            replica.dropout_rng = np.random.default_rng([seed, i])
        self.params = [list(r.parameters()) for r in self.replicas]
        self.pool: ThreadPoolExecutor | None = None
        if workers > 1:
            main_threads = torch.get_num_threads()
            ready = threading.Barrier(workers)
            self.pool = ThreadPoolExecutor(
                workers, "lstm-train", initializer=torch.set_num_threads, initargs=(threads_each,)
            )
            # the barrier makes the pool start every thread now (each sets its own threads)
            list(self.pool.map(lambda _: ready.wait(), range(workers)))
            torch.set_num_threads(main_threads)  # the main thread's count (validation)

    def _part(
        self, i: int, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, n: int
    ) -> tuple[float, tuple[torch.Tensor, ...]]:
        replica = self.replicas[i]
        replica.train()
        loss = _loss(replica, x, y, w) * (len(x) / n)
        return float(loss.detach()), torch.autograd.grad(loss, self.params[i])

    def gradients(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
        """Set the model's gradients of the batch's mean loss; returns that loss."""
        n = len(x)
        parts = min(len(self.replicas), n // 2)  # batch norm needs two windows per part
        bounds = np.linspace(0, n, parts + 1).astype(int)
        args = [
            (i, x[a:b], y[a:b], w[a:b], n) for i, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        if self.pool is None or parts == 1:
            done = [self._part(*a) for a in args]
        else:
            done = list(self.pool.map(lambda a: self._part(*a), args))
        for j, param in enumerate(self.params[0]):
            grad = done[0][1][j]
            for _, grads in done[1:]:
                grad = grad + grads[j]
            param.grad = grad
        return sum(loss for loss, _ in done)

    def sync_buffers(self) -> None:
        """Batch-norm running statistics: the parts' mean, in every replica."""
        if len(self.replicas) == 1:
            return
        named = [dict(r.named_buffers()) for r in self.replicas]
        for name, buf in named[0].items():
            if buf.is_floating_point():
                mean = torch.stack([b[name] for b in named]).mean(dim=0)
                for b in named:
                    b[name].copy_(mean)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _loss(model: Forecaster, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, each window weighted by 1 / its series' scale: aligned with MAE
    and MASE, and every series weighs the same whatever its unit."""
    return torch.mean(torch.abs(model(x) - y) * w[:, None])


@torch.no_grad()
def evaluate_loss(
    model: Forecaster, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, batch: int
) -> float:
    model.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        sl = slice(i, i + batch)
        total += float(_loss(model, x[sl], y[sl], w[sl])) * len(x[sl])
    return total / max(len(x), 1)


@torch.no_grad()
def predict(model: Forecaster, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.empty((0, model.cfg.horizon), dtype=np.float32)


# -- export -------------------------------------------------------------------------------------
def export_onnx(model: Forecaster, path: Path) -> None:
    """Single-file ONNX (weights embedded), dynamic batch dimension, opset 17."""
    import warnings

    model.eval()
    dummy = torch.zeros(2, model.cfg.input_len, len(FORECASTER_INPUTS))
    dummy[:, :, 0] = torch.linspace(0, 1, model.cfg.input_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["window"],
            output_names=["forecast"],
            dynamic_axes={"window": {0: "batch"}, "forecast": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def architecture(cfg: LSTMConfig) -> dict[str, Any]:
    keys = ("input_len", "horizon", "hidden", "layers", "bidirectional", "attention")
    arch = {k: v for k, v in asdict(cfg).items() if k in (*keys, "batch_norm", "dropout")}
    arch["training"] = {k: v for k, v in asdict(cfg).items() if k not in arch}
    return arch
