"""Guardrails between the tuning policy and a fleet (issue 21 (3); docs/TUNING.md#guardrails).

A recommendation (host, knob, old -> new) is allowed only if every check passes, in order:

1. bounds: the new value is within the knob's configured bounds;
2. canary: the host is in the canary fraction (a stable hash of its name), so a bad policy
   touches few hosts first;
3. cooldown: the host's last change is at least `cooldown_s` ago (one change per cooldown);
4. safe set: the environment model's *lower* confidence bound of the new setting's throughput
   is within `throughput_margin` (5 %) of the current throughput, and the *upper* bound of
   its p99 latency within `p99_margin` (10 %) of the current p99.

After a change is applied and has had `settle_s` to take effect, `observe` compares each
interval's observed throughput and p99 with the values before the change; when either
regresses past its margin for `revert_after` (2) consecutive intervals, it returns the revert
(back to the old value). Pure logic: the tuning flow keeps one `Guardrails` per host (in the
host's state, `operators.tuning.tuner.HostTuner`) and publishes its verdicts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

Z_95 = 1.6448536269514722
"""One-sided 95 % normal quantile: the confidence bounds of the safe set."""


@dataclass(frozen=True)
class GuardrailConfig:
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    cooldown_s: float = 600.0
    canary_fraction: float = 0.1
    throughput_margin: float = 0.05
    p99_margin: float = 0.10
    revert_after: int = 2
    settle_s: float = 120.0
    """Intervals ending sooner than this after a change are not judged: a setting takes a
    while to reach the host, and an interval that began before it did measures the old one."""


@dataclass(frozen=True)
class Estimate:
    """What the environment model expects of a setting (mean and standard deviation)."""

    throughput: float
    throughput_sd: float
    p99: float
    p99_sd: float

    def throughput_lcb(self) -> float:
        return self.throughput - Z_95 * self.throughput_sd

    def p99_ucb(self) -> float:
        return self.p99 + Z_95 * self.p99_sd


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    guardrail: str
    """`passed: bounds, canary, cooldown, safe set` or the first check that failed, why."""


@dataclass
class _Applied:
    knob: str
    old: float
    new: float
    at_s: float
    throughput: float
    p99: float
    bad: int = 0


def in_canary(host: str, fraction: float) -> bool:
    """Stable across restarts and workers: crc32 of the host name."""
    return zlib.crc32(host.encode()) / 2**32 < fraction


class Guardrails:
    def __init__(self, cfg: GuardrailConfig) -> None:
        self.cfg = cfg
        self.last_change: dict[str, float] = {}
        self.applied: dict[str, _Applied] = {}
        self.reverts = 0
        self.blocked: dict[str, int] = {}

    def decide(
        self,
        host: str,
        knob: str,
        old: float,
        new: float,
        now_s: float,
        current: Estimate,
        candidate: Estimate,
    ) -> Verdict:
        verdict = self._check(host, knob, new, now_s, current, candidate)
        if not verdict.allowed:
            name = verdict.guardrail.split(":")[0]
            self.blocked[name] = self.blocked.get(name, 0) + 1
        return verdict

    def _check(
        self,
        host: str,
        knob: str,
        new: float,
        now_s: float,
        current: Estimate,
        candidate: Estimate,
    ) -> Verdict:
        cfg = self.cfg
        lo, hi = cfg.bounds.get(knob, (float("-inf"), float("inf")))
        if not lo <= new <= hi:
            return Verdict(False, f"bounds: {knob}={new:g} outside [{lo:g}, {hi:g}]")
        if not in_canary(host, cfg.canary_fraction):
            return Verdict(False, f"canary: {host} is not in the {cfg.canary_fraction:.0%} canary")
        last = self.last_change.get(host)
        if last is not None and now_s - last < cfg.cooldown_s:
            left = cfg.cooldown_s - (now_s - last)
            return Verdict(False, f"cooldown: {left:.0f} s left since the last change")
        floor = (1 - cfg.throughput_margin) * current.throughput
        if candidate.throughput_lcb() < floor:
            return Verdict(
                False,
                f"safe set: throughput lower bound {candidate.throughput_lcb():.4g} < "
                f"{floor:.4g} ({1 - cfg.throughput_margin:.0%} of current)",
            )
        ceiling = (1 + cfg.p99_margin) * current.p99
        if candidate.p99_ucb() > ceiling:
            return Verdict(
                False,
                f"safe set: p99 upper bound {candidate.p99_ucb():.4g} > {ceiling:.4g} "
                f"({1 + cfg.p99_margin:.0%} of current)",
            )
        return Verdict(True, "passed: bounds, canary, cooldown, safe set")

    def applied_change(
        self, host: str, knob: str, old: float, new: float, now_s: float, current: Estimate
    ) -> None:
        """Record a change that was applied (apply mode), with the metrics before it."""
        self.last_change[host] = now_s
        self.applied[host] = _Applied(knob, old, new, now_s, current.throughput, current.p99)

    def observe(
        self, host: str, now_s: float, throughput: float, p99: float
    ) -> tuple[str, float, float] | None:
        """One interval's observed metrics of a host; `(knob, new, old)` to revert when the
        change regressed past a margin for `revert_after` intervals in a row."""
        a = self.applied.get(host)
        if a is None or now_s - a.at_s < self.cfg.settle_s:
            return None
        cfg = self.cfg
        worse = (
            throughput < (1 - cfg.throughput_margin) * a.throughput
            or p99 > (1 + cfg.p99_margin) * a.p99
        )
        a.bad = a.bad + 1 if worse else 0
        if a.bad < cfg.revert_after:
            return None
        del self.applied[host]
        self.last_change[host] = now_s
        self.reverts += 1
        return a.knob, a.new, a.old


def interval_due(next_ms: int | None, ts_ms: int, interval_s: float) -> tuple[int, bool]:
    """A tuning loop's decision clock in event time: (the next decision's time, whether one
    is due now). The first decision comes two intervals after the first event (a full one of
    observations, and time for the loop's `dwcp.config` record, read from the start, to
    arrive); then one per interval, skipped intervals not made up."""
    step = int(interval_s * 1000)
    if next_ms is None:
        return ts_ms + 2 * step, False
    if ts_ms < next_ms:
        return next_ms, False
    while next_ms <= ts_ms:
        next_ms += step
    return next_ms, True


def adopts(source: str, version: int, config: object, known_version: int, known: object) -> bool:
    """Whether a loop takes a `dwcp.config` record's setting: not its own apply-mode record
    coming back (`optimizer` or `revert` at a version it already holds: the loop knows more,
    e.g. that the host never took it), not an older one, and not the setting it has."""
    own = source in ("optimizer", "revert") and version <= known_version
    return not own and version >= known_version and config != known
