"""Double DQN for the knob-tuning environments (issue 21 (2); docs/TUNING.md#dqn).

The seed's sizes are the defaults: hidden layers [256, 256], a 100,000-transition replay
buffer, ε decaying linearly to 0.01, a target network synchronised every `target_every`
steps, Double DQN targets (the online network picks the next action, the target network
values it). Actions are "raise or lower one knob one step of its grid" plus "keep".

The environment here is `KnobEnv`: a wrapper that turns a measured environment (the
compression table) into states, actions and rewards:

- state: each knob's position on its grid in [0, 1], the traffic mix (share per payload
  kind), the last observation (log ratio, log speed, and the reward relative to the default
  configuration's — not to the grid-best, which a deployed tuner cannot know) and the link
  speed (log10 MB/s / 4);
- reward: the change of the measured reward relative to the default configuration's, so an
  episode's return is how much better than the default the policy ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from novacron_ml.core.tuning import ACTIONS, STATE_NAMES, apply_action, policy_state
from training.tuning.compression import (
    CHUNK_KIB,
    DEFAULT_CONFIG,
    LEVELS,
    MIXES,
    WINDOW_LOGS,
    CompressionEnv,
    CompressionTable,
)


@dataclass
class DQNConfig:
    hidden: tuple[int, ...] = (256, 256)
    buffer: int = 100_000
    episodes: int = 1000
    steps: int = 500
    batch: int = 64
    gamma: float = 0.9
    lr: float = 5e-4
    eps_start: float = 1.0
    eps_end: float = 0.01
    eps_decay_steps: int = 50_000
    target_every: int = 500
    learn_every: int = 1
    warmup: int = 1_000
    double: bool = True
    seed: int = 0


class KnobEnv:
    """Raise/lower one knob per decision on a measured compression table."""

    def __init__(
        self,
        table: CompressionTable,
        *,
        mixes: Sequence[str] = tuple(MIXES),
        link_mb_s: float = 125.0,
        seed: int = 0,
        switch_every: int | None = None,
        env: CompressionEnv | None = None,
        links: Sequence[float] = (),
    ) -> None:
        self.links = list(links)
        self.env = env or CompressionEnv(table, mixes[0], link_mb_s=link_mb_s, seed=seed)
        self.mixes = list(mixes)
        self.rng = np.random.default_rng(seed)
        self.axes = [sorted({c[i] for c in self.env.configs}) for i in range(3)]
        self.switch_every = switch_every
        self.n_actions = 2 * len(self.axes) + 1
        self.state_dim = len(STATE_NAMES)
        self.config: tuple[int, ...] = DEFAULT_CONFIG
        self.t = 0
        self.last: dict[str, float] = {}

    def _baseline(self) -> float:
        return self.env.measure(DEFAULT_CONFIG, noise=False)["reward"]

    def state(self) -> np.ndarray:
        obs = self.last or {"ratio": 1.0, "compress_mb_s": 1.0, "reward": self._baseline()}
        return np.array(
            policy_state(
                self.config,
                self.env.mix,
                obs["ratio"],
                obs["compress_mb_s"],
                obs["reward"] / self._baseline() - 1.0,
                self.env.link_mb_s,
                self.axes,
            ),
            dtype=np.float32,
        )

    def reset(self, mix: str | None = None) -> np.ndarray:
        self.env.mix_name = mix or self.mixes[int(self.rng.integers(len(self.mixes)))]
        if self.links:  # training: a link speed per episode, so the policy learns it matters
            self.env.link_mb_s = float(self.links[int(self.rng.integers(len(self.links)))])
        self.config = DEFAULT_CONFIG
        self.t = 0
        self.last = self.env.measure(self.config)
        return self.state()

    def apply(self, action: int) -> tuple[int, ...]:
        """The configuration an action leads to (bounded by each knob's grid)."""
        return apply_action(self.config, action, self.axes)

    def step(self, action: int) -> tuple[np.ndarray, float]:
        self.t += 1
        if self.switch_every and self.t % self.switch_every == 0:
            others = [m for m in self.mixes if m != self.env.mix_name]
            self.env.mix_name = others[int(self.rng.integers(len(others)))]
        self.config = self.apply(action)
        self.last = self.env.measure(self.config)
        return self.state(), self.last["reward"] / self._baseline() - 1.0


def _mlp(state_dim: int, n_actions: int, hidden: Sequence[int]) -> Any:
    from torch import nn

    layers: list[Any] = []
    prev = state_dim
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, n_actions))
    return nn.Sequential(*layers)


@dataclass
class TrainReport:
    episode_returns: list[float] = field(default_factory=list)
    configs: list[tuple[int, ...]] = field(default_factory=list)
    """The configuration at the end of each episode."""
    seconds: float = 0.0
    steps: int = 0
    states: np.ndarray | None = None
    """A uniform sample (at most REFERENCE_ROWS) of the replay buffer's states at the end:
    the inputs the policy learned from, its manifest's drift reference."""


REFERENCE_ROWS = 20_000


def train(
    make_env: Callable[[int], Any],
    cfg: DQNConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[Any, TrainReport]:
    """Train the Q-network on `make_env(seed)` (a `KnobEnv`, or anything with its `reset`,
    `step(action)`, `state_dim`, `n_actions` and `config`, e.g. `gridq.GridKnobEnv`);
    returns it (torch, eval mode) and the per-episode report."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.seed)
    q = _mlp(env.state_dim, env.n_actions, cfg.hidden)
    target = _mlp(env.state_dim, env.n_actions, cfg.hidden)
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=cfg.lr)
    n = cfg.buffer
    s_buf = np.zeros((n, env.state_dim), np.float32)
    s2_buf = np.zeros((n, env.state_dim), np.float32)
    a_buf = np.zeros(n, np.int64)
    r_buf = np.zeros(n, np.float32)
    size = ptr = steps = 0
    report = TrainReport()
    start = time.perf_counter()
    for episode in range(cfg.episodes):
        s = env.reset()
        ret = 0.0
        for _ in range(cfg.steps):
            eps = max(cfg.eps_end, cfg.eps_start - (cfg.eps_start - cfg.eps_end) * steps
                      / cfg.eps_decay_steps)  # fmt: skip
            if rng.random() < eps:
                a = int(rng.integers(env.n_actions))
            else:
                with torch.no_grad():
                    a = int(q(torch.from_numpy(s)[None]).argmax(1).item())
            s2, r = env.step(a)
            s_buf[ptr], a_buf[ptr], r_buf[ptr], s2_buf[ptr] = s, a, r, s2
            ptr = (ptr + 1) % n
            size = min(size + 1, n)
            s = s2
            ret += r
            steps += 1
            if size >= cfg.warmup and steps % cfg.learn_every == 0:
                idx = rng.integers(0, size, cfg.batch)
                sb, ab = torch.from_numpy(s_buf[idx]), torch.from_numpy(a_buf[idx])
                rb, s2b = torch.from_numpy(r_buf[idx]), torch.from_numpy(s2_buf[idx])
                with torch.no_grad():
                    if cfg.double:
                        a2 = q(s2b).argmax(1, keepdim=True)
                        nxt = target(s2b).gather(1, a2).squeeze(1)
                    else:
                        nxt = target(s2b).max(1).values
                    y = rb + cfg.gamma * nxt  # a tuning task never ends: no terminal flag
                pred = q(sb).gather(1, ab[:, None]).squeeze(1)
                loss = F.smooth_l1_loss(pred, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if steps % cfg.target_every == 0:
                target.load_state_dict(q.state_dict())
        report.episode_returns.append(ret / cfg.steps)
        report.configs.append(env.config)
        if progress is not None:
            progress(episode + 1, cfg.episodes, ret / cfg.steps)
    report.seconds = time.perf_counter() - start
    report.steps = steps
    keep = np.random.default_rng(cfg.seed + 1).permutation(size)[:REFERENCE_ROWS]
    report.states = s_buf[np.sort(keep)].copy()
    q.eval()
    return q, report


class PolicyTuner:
    """A trained policy as a tuner in `training.tuning.tuners.run`: greedy actions from a
    Q-function (torch module or an ONNX session through `q_values`)."""

    name = "dqn"

    def __init__(self, q_values: Callable[[np.ndarray], np.ndarray], knob_env: KnobEnv) -> None:
        self.q_values = q_values
        self.kenv = knob_env

    def propose(self) -> tuple[int, ...]:
        action = int(np.argmax(self.q_values(self.kenv.state()[None])[0]))
        return self.kenv.apply(action)

    def observe(self, config: tuple[int, ...], reward: float) -> None:
        self.kenv.config = config  # the ratio is exact; the speed's noise is in the reward
        self.kenv.last = {**self.kenv.env.measure(config, noise=False), "reward": reward}


def torch_q_values(q: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def values(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return q(torch.from_numpy(np.asarray(states, np.float32))).numpy()

    return values


def as_tuner_factory(
    q_values: Callable[[np.ndarray], np.ndarray],
) -> Callable[[CompressionEnv, int], PolicyTuner]:
    """`make_tuner(..., policy=...)`: the policy acting on the evaluation's environment."""

    def make(env: CompressionEnv, seed: int) -> PolicyTuner:
        return PolicyTuner(q_values, KnobEnv(env.table, env=env, seed=seed))

    return make


def export_policy(
    q: Any,
    out_dir: Path,
    name: str,
    *,
    cfg: DQNConfig,
    report: TrainReport,
    table: CompressionTable,
    command: str,
    metrics: dict[str, Any],
) -> Path:
    """The compression policy: `<name>.onnx` (input `state` (batch, len(STATE_NAMES)),
    output `q` (batch, actions)) and its manifest in the registry format, with a golden
    input; returns the manifest."""
    return export_q_network(
        q,
        out_dir,
        name,
        subsystem="compression",
        normalisation={
            "method": "training.tuning.dqn.KnobEnv.state: knob grid positions in [0, 1], "
            "payload mix shares, log ratio / 3, log MB/s / 8, reward / default's - 1, "
            "log10 link MB/s / 4",
            "actions": list(ACTIONS),
            "grids": {
                "level": list(LEVELS),
                "chunk_kib": list(CHUNK_KIB),
                "window_log": list(WINDOW_LOGS),
            },
        },
        training_data={"table": table.meta, "episodes": cfg.episodes, "steps": cfg.steps},
        cfg=cfg,
        report=report,
        command=command,
        metrics=metrics,
    )


def export_q_network(
    q: Any,
    out_dir: Path,
    name: str,
    *,
    subsystem: str,
    normalisation: dict[str, Any],
    training_data: dict[str, Any],
    cfg: DQNConfig,
    report: TrainReport,
    command: str,
    metrics: dict[str, Any],
) -> Path:
    """Any knob policy's Q-network to ONNX with its registry manifest (golden input); the
    input layout and actions are the subsystem's (`novacron_ml.core.tuning.layout`). Registered
    as the model's next version (`novacron_ml.core.registry.register`): the champion when it
    has none, else the challenger. Returns the new version's manifest."""
    from novacron_ml.core.registry import staging
    from novacron_ml.core.tuning import layout

    state_names, action_names = layout(subsystem)
    with staging(out_dir) as scratch:
        return _export_q(q, scratch / f"{name}.onnx", out_dir, name, state_names, action_names,
                         subsystem, normalisation, training_data, metrics, cfg, report,
                         command)  # fmt: skip


def _export_q(q: Any, path: Path, out_dir: Path, name: str, state_names: Sequence[str],
              action_names: Sequence[str], subsystem: str, normalisation: dict[str, Any],
              training_data: dict[str, Any], metrics: dict[str, Any], cfg: DQNConfig,
              report: Any, command: str) -> Path:  # fmt: skip
    import warnings
    from datetime import UTC, datetime

    import onnxruntime as ort
    import torch

    from novacron_ml.core.manifest import ModelManifest, sha256_of
    from novacron_ml.core.registry import register
    from operators.drift import reference_of
    from operators.serving import Signature, make_golden

    states = getattr(report, "states", None)  # the replay buffer's sample (drift reference)

    rng = np.random.default_rng(0)
    golden = rng.uniform(0, 1, (4, len(state_names))).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            q,
            (torch.from_numpy(golden),),
            str(path),
            input_names=["state"],
            output_names=["q"],
            dynamic_axes={"state": {0: "batch"}, "q": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    signature = Signature(input_dims=(len(state_names),), output="q",
                          output_dims=(len(action_names),))  # fmt: skip
    manifest = ModelManifest(
        name=name,
        kind="dqn_policy",
        version="1",
        file=path.name,
        sha256=sha256_of(path),
        created_at=datetime.now(UTC).isoformat(),
        command=command,
        feature_order=list(state_names),
        input_len=len(state_names),
        horizon=0,
        step_s=0.0,
        normalisation={**normalisation, "subsystem": subsystem, "actions": list(action_names)},
        training_data=training_data,
        metrics=metrics,
        architecture={
            "hidden": list(cfg.hidden),
            "training": {k: v for k, v in asdict(cfg).items() if k != "hidden"},
            "seconds": round(report.seconds, 1),
        },
        framework={"torch": str(torch.__version__), "onnxruntime": str(ort.__version__)},
        golden=make_golden(path, signature, golden),
        reference=None if states is None else reference_of(states, state_names),
    )
    manifest_path, _alias = register(out_dir, path, manifest)
    return manifest_path


def open_q_values(manifest_path: Path, subsystem: str) -> Callable[[np.ndarray], np.ndarray]:
    """A knob policy's ONNX export as q_values(states), opened as the runtime opens it
    (`operators.tuning.policy.OnnxPolicy`: layout, sha256, shapes, golden output)."""
    from operators.tuning.policy import OnnxPolicy

    return OnnxPolicy(manifest_path, subsystem).q_values


def onnx_q_values(manifest_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The exported policy as q_values(states), opened as the runtime opens it (sha256,
    state layout, shapes, golden output: `operators.tuning.policy.OnnxPolicy`)."""
    from operators.tuning.policy import OnnxPolicy

    return OnnxPolicy(manifest_path).q_values
