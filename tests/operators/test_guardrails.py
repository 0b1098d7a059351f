"""Guardrails: every check blocks what it should, in order, and a regression is reverted
after two bad intervals (not one)."""

from __future__ import annotations

from operators.tuning.guardrails import Estimate, GuardrailConfig, Guardrails, in_canary

CURRENT = Estimate(throughput=100.0, throughput_sd=1.0, p99=50.0, p99_sd=1.0)
BETTER = Estimate(throughput=120.0, throughput_sd=2.0, p99=45.0, p99_sd=1.0)


def _canary_host(inside: bool, fraction: float = 0.5) -> str:
    return next(f"h{i}" for i in range(1000) if in_canary(f"h{i}", fraction) == inside)


def test_checks_in_order() -> None:
    g = Guardrails(GuardrailConfig(bounds={"level": (1, 12)}, canary_fraction=0.5))
    host = _canary_host(True)
    assert g.decide(host, "level", 3, 19, 0, CURRENT, BETTER).guardrail.startswith("bounds")
    outside = _canary_host(False)
    assert g.decide(outside, "level", 3, 5, 0, CURRENT, BETTER).guardrail.startswith("canary")
    ok = g.decide(host, "level", 3, 5, 0, CURRENT, BETTER)
    assert ok.allowed and ok.guardrail.startswith("passed")
    g.applied_change(host, "level", 3, 5, 0, CURRENT)
    v = g.decide(host, "level", 5, 7, 300, CURRENT, BETTER)
    assert not v.allowed and v.guardrail.startswith("cooldown: 300 s left")
    assert g.decide(host, "level", 5, 7, 600, CURRENT, BETTER).allowed
    assert g.blocked == {"bounds": 1, "canary": 1, "cooldown": 1}


def test_safe_set_uses_confidence_bounds() -> None:
    g = Guardrails(GuardrailConfig(canary_fraction=1.0))
    # a mean 2 % better but so uncertain its lower bound is 10 % below: refused
    shaky = Estimate(throughput=102.0, throughput_sd=8.0, p99=50.0, p99_sd=0.0)
    v = g.decide("a", "level", 3, 5, 0, CURRENT, shaky)
    assert not v.allowed and v.guardrail.startswith("safe set: throughput")
    slow = Estimate(throughput=130.0, throughput_sd=0.0, p99=54.0, p99_sd=2.0)  # ucb 57.3 > 55
    v = g.decide("a", "level", 3, 5, 0, CURRENT, slow)
    assert not v.allowed and v.guardrail.startswith("safe set: p99")
    near = Estimate(throughput=96.0, throughput_sd=0.0, p99=54.0, p99_sd=0.0)  # within both
    assert g.decide("a", "level", 3, 5, 0, CURRENT, near).allowed


def test_revert_after_two_bad_intervals_only() -> None:
    g = Guardrails(GuardrailConfig(canary_fraction=1.0))
    g.applied_change("a", "level", 3, 9, 0, CURRENT)
    assert g.observe("a", 60, throughput=90.0, p99=50.0) is None  # one bad interval
    assert g.observe("a", 120, throughput=99.0, p99=50.0) is None  # recovered: count resets
    assert g.observe("a", 180, throughput=99.0, p99=56.0) is None  # p99 past 10 %: one
    assert g.observe("a", 240, throughput=99.0, p99=58.0) == ("level", 9, 3)  # two: revert
    assert g.reverts == 1 and g.observe("a", 300, 10.0, 500.0) is None  # nothing to revert


def test_canary_is_stable_and_near_its_fraction() -> None:
    hosts = [f"host-{i}" for i in range(5000)]
    share = sum(in_canary(h, 0.1) for h in hosts) / len(hosts)
    assert 0.08 < share < 0.12
    assert [in_canary(h, 0.1) for h in hosts[:50]] == [in_canary(h, 0.1) for h in hosts[:50]]
