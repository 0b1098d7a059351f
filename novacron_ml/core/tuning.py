"""The auto-optimizer's contract, shared by training (`training/tuning`) and the runtime
(`operators/tuning`): the HDE knobs and their grids, the policy's state layout and actions
(docs/TUNING.md). A policy exported with another layout is refused when it is opened."""

from __future__ import annotations

LEVELS: tuple[int, ...] = (1, 2, 3, 5, 7, 9, 12, 15, 19)
CHUNK_KIB: tuple[int, ...] = (16, 64, 256, 1024)
WINDOW_LOGS: tuple[int, ...] = (12, 15, 17, 20)
DEFAULT_CONFIG: tuple[int, int, int] = (3, 64, 17)
"""zstd's own default level, a common 64 KiB transfer chunk, a 128 KiB window."""
KNOBS: tuple[str, ...] = ("hde_level", "hde_chunk_kib", "hde_window_log")
GRIDS: tuple[tuple[int, ...], ...] = (LEVELS, CHUNK_KIB, WINDOW_LOGS)
PAYLOAD_KINDS: tuple[str, ...] = (
    "metrics-json",
    "metrics-json-array",
    "metrics-line",
    "csv",
    "source",
    "models",
    "vm-pages",
)
STATE_NAMES: tuple[str, ...] = (
    *(f"knob_{k}" for k in KNOBS),
    *(f"mix_{k}" for k in PAYLOAD_KINDS),
    "obs_log_ratio",
    "obs_log_speed",
    "obs_reward_vs_default",
    "link_log_mb_s",
)
"""The policy's input, in order (the ONNX manifest's `feature_order`)."""
ACTIONS: tuple[str, ...] = (
    *(f"{k}_{d}" for k in KNOBS for d in ("down", "up")),
    "keep",
)
"""Action i: knob i // 2 one grid step down (even) or up (odd); the last keeps all."""


def apply_action(
    config: tuple[int, ...],
    action: int,
    grids: tuple[tuple[int, ...], ...] | list[list[int]] = GRIDS,
) -> tuple[int, ...]:
    """The setting an action leads to, bounded by each knob's grid."""
    if action == len(ACTIONS) - 1:
        return config
    knob, up = divmod(action, 2)
    axis = list(grids[knob])
    j = min(max(axis.index(config[knob]) + (1 if up else -1), 0), len(axis) - 1)
    return tuple(axis[j] if i == knob else v for i, v in enumerate(config))
