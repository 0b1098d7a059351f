"""The tuning flow in process: the closed loop with the simulator (the demo), and settings
read from `dwcp.config` (an operator's, and a malformed one to the dead letters)."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import msgspec
from bytewax.operators import StatefulLogic
from bytewax.testing import run_main

from dataflows.io import CallbackSink, MessageSource
from dataflows.tune import HostLogic, build_flow, host_logic_builder, tuner_context
from novacron_ml.app.tune_demo import (
    ClosedLoop,
    cluster_rows,
    host_rows,
    html_page,
    run_tune_demo,
    violations,
)
from novacron_ml.core import metrics as obs
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.metrics import counter_value
from novacron_ml.core.schema import MetricEvent
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from novacron_ml.core.tuning import (
    DEFAULT_CONFIG,
    BandwidthSetting,
    ConsensusSetting,
    KnobSetting,
    Recommendation,
)
from operators.tuning import envmodel


def test_closed_loop_improves_canary_hosts_and_leaves_the_control_group() -> None:
    settings = Settings(tune={"mode": "apply", "canary_fraction": 0.5})
    fleet = FleetConfig(hosts=6, clusters=3, duration_s=3 * 3600, step_s=10)
    result = run_tune_demo(settings, fleet, tuner_context(settings), quiet=True)
    assert violations(result) == [] and not result.loop.dead_letters
    rows = host_rows(result)
    canary = [float(r[4]) for r in rows if r[2] == "yes"]  # type: ignore[arg-type]
    control = [float(r[4]) for r in rows if r[2] == "no"]  # type: ignore[arg-type]
    assert canary and control
    assert min(canary) >= 0 and sum(canary) / len(canary) > 0.05
    assert control == [0.0] * len(control)
    # what the hosts reported (observed, with the speed's measured noise), not the table
    moved = [float(r[8]) for r in rows if r[3] != "3/64/17"]  # type: ignore[arg-type]
    assert moved and min(moved) > 0.03
    assert all(abs(float(r[8])) < 0.02 for r in rows if r[2] == "no")  # type: ignore[arg-type]
    changes = sum(len(t.changes) for t in result.loop.trace.values())
    applied = [r for r in result.loop.recommendations if r.allowed and r.action == "change"]
    assert changes == sum(r.subsystem == "compression" for r in applied) > 0
    # consensus, per cluster (clusters 0 and 1 in the 50 % canary, 2 the control)
    clusters = {r[0]: r for r in cluster_rows(result)}
    assert [clusters[c][1] for c in sorted(clusters)] == ["yes", "yes", "no"]
    for name in ("cluster-0", "cluster-1"):  # cost: the table's and the one reported
        _, _, setting, default, reached, _, last30, _, p99_last, _ = clusters[name]
        assert setting != "400/1/5" and reached < 0.2 * default and last30 < 0.2 * default
        assert p99_last < 300  # ms; the default's is ~650
    control = clusters["cluster-2"]
    assert control[2] == "400/1/5" and control[6] > 0.5 * control[3]
    cluster_changes = sum(len(c.changes) for c in result.loop.clusters.values())
    moves = [r for r in result.loop.recommendations if r.allowed and r.subsystem == "consensus"]
    assert cluster_changes == len(moves) > 0  # changes and reverts
    assert all(r.cluster and not r.host for r in moves)
    page = html_page(result)  # one plot per host and cluster; a mark per change and switch
    switches = sum(t.switch_ms is not None for t in result.loop.trace.values())
    assert page.count("<svg") == 6 + 3
    assert page.count("<polygon") == changes + cluster_changes + switches
    assert "\x1b[" not in page and "guardrail checks   0 violations" in page


def test_settings_come_from_dwcp_config_and_bad_ones_are_dead_letters() -> None:
    settings = Settings(tune={"mode": "dry-run", "canary_fraction": 1.0})
    ctx = tuner_context(settings)
    fleet = FleetConfig(hosts=2, clusters=1, duration_s=1800, step_s=10)
    sim = FleetSimulator(fleet)
    loop = ClosedLoop(sim, ctx, 1.0, report_setting=False)  # dwcp.config is the truth here
    sim.hook = loop.hook
    operator = KnobSetting(
        host="host-000", hde_level=9, hde_chunk_kib=64, hde_window_log=17, version=5
    )
    off_grid = KnobSetting(host="host-001", hde_level=4, hde_chunk_kib=64, hde_window_log=17)
    pba = BandwidthSetting(
        host="host-000", pba_window=96, pba_confidence=0.95, pba_update_interval=3
    )
    acp = ConsensusSetting(
        cluster="cluster-0", acp_timeout_ms=200, acp_batch=16, acp_quorum=3, version=2
    )
    config_msgs = [
        (b"host-000", msgspec.json.encode(operator)),
        (b"host-001", b'{"host": 1}'),
        (b"host-001", msgspec.json.encode(off_grid)),  # level 4 is not on the grid
        (b"consensus/cluster-0", msgspec.json.encode(acp)),
        (
            b"consensus/cluster-0",
            b'{"cluster": "cluster-0", "acp_timeout_ms": 200, "acp_batch": 3, "acp_quorum": 3}',
        ),  # batch 3 is not on the grid
        (b"bandwidth/host-000", msgspec.json.encode(pba)),
        (
            b"bandwidth/host-001",
            b'{"host": "host-001", "pba_window": 7, "pba_confidence": 0.9, '
            b'"pba_update_interval": 6}',
        ),  # a window of 7 samples is not on the grid
    ]
    out: list[Any] = []
    flow = build_flow(
        settings,
        MessageSource(lambda: sim.messages("json"), 100),
        CallbackSink(out.extend),
        kafka_output=False,
        config_source=MessageSource(lambda: iter(config_msgs), 10),
        ctx=ctx,
    )
    run_main(flow)
    dead = [i for i in out if isinstance(i, DeadLetter)]
    assert [(d.reason, d.key) for d in dead] == [(Reason.BAD_SETTING, b"host-001")] * 2 + [
        (Reason.BAD_SETTING, b"consensus/cluster-0"),
        (Reason.BAD_SETTING, b"bandwidth/host-001"),
    ]
    assert "pba_window=7 is not one of" in dead[3].detail
    assert "hde_level=4 is not one of" in dead[1].detail
    assert "acp_batch=3 is not one of" in dead[2].detail
    consensus = [i for i in out if isinstance(i, Recommendation) and i.subsystem == "consensus"]
    assert consensus and {(r.host, r.cluster) for r in consensus} == {("", "cluster-0")}
    assert (consensus[0].knob, consensus[0].old) in {
        ("acp_timeout_ms", 200), ("acp_batch", 16), ("acp_quorum", 3)
    }  # fmt: skip
    recs = [i for i in out if isinstance(i, Recommendation)]
    first = {r.host: r for r in reversed(recs) if r.subsystem == "compression"}
    assert first["host-000"].knob == "hde_level" and first["host-000"].old == 9
    assert first["host-001"].old in (3, 64, 17)  # the default
    assert not any(isinstance(i, KnobSetting) for i in out)  # dry-run publishes no settings


def _minutes(logic: HostLogic, minutes: int, t0: int, mix: str = "telemetry") -> list[object]:
    """Feed a host's logic `minutes` of telemetry traffic on 1 Gbit/s, one input batch a
    minute, its throughput as the table says its current setting performs."""
    table = logic.context().table
    weights = envmodel.normalised(envmodel.MIXES[mix], table.kinds)
    out: list[object] = []
    for m in range(minutes):
        config = logic.tuner.config if logic.tuner else DEFAULT_CONFIG
        reward = envmodel.measure_mix(table, weights, config, 125.0)["reward"]
        batch = [
            MetricEvent(t0 + (m * 6 + i) * 10_000, "h", "c", name, value)
            for i in range(6)
            for name, value in (("throughput_mbps", 8 * reward), ("link_mbps", 1000.0),
                                *((f"payload_share_{k.replace('-', '_')}", w)
                                  for k, w in weights.items()))
        ]  # fmt: skip
        items, discard = logic.on_item(batch)
        assert discard is StatefulLogic.RETAIN
        out += items
    return out


def test_a_silent_host_is_compacted_then_forgotten_and_its_snapshot_resumes() -> None:
    ctx = tuner_context(Settings(tune={"mode": "apply", "canary_fraction": 1.0}))
    now = [1_000.0]
    build = host_logic_builder(lambda: ctx, 60.0, 600.0)
    logic = HostLogic(lambda: ctx, 60.0, 600.0, clock=lambda: now[0])
    out = _minutes(logic, 5, 1_700_000_000_000)
    tuner = logic.tuner
    assert tuner is not None and any(isinstance(i, KnobSetting) for i in out)
    assert tuner.config != DEFAULT_CONFIG and tuner.guard is not None and tuner.version == 1
    # a snapshot is a copy (later steps do not change it) and survives pickling
    snap = pickle.loads(pickle.dumps(logic.snapshot()))
    resumed = build(snap)
    assert resumed.tuner is not None and resumed.tuner is not tuner
    assert resumed.tuner.guard is not None and vars(resumed.tuner.guard) == vars(tuner.guard)
    assert dataclasses.replace(resumed.tuner, guard=None) == dataclasses.replace(tuner, guard=None)
    assert resumed.notify_at() == logic.notify_at()

    compacted = counter_value(obs.TUNING_HOSTS_IDLE, outcome="compacted")
    dropped = counter_value(obs.TUNING_HOSTS_IDLE, outcome="dropped")
    now[0] += 59
    assert logic.on_notify() == ([], StatefulLogic.RETAIN) and logic.tuner is tuner  # not yet
    now[0] += 2
    assert logic.on_notify() == ([], StatefulLogic.RETAIN)
    kept = logic.tuner
    assert kept is not None and kept is not tuner
    assert (kept.config, kept.version, kept.reverted) == (tuner.config, 1, tuner.reverted)
    assert kept.guard is None and kept.sums == {} and kept.next_decision_ms is None
    assert logic.notify_at().timestamp() == 1_000.0 + 600.0  # 600 s after it was last heard
    assert counter_value(obs.TUNING_HOSTS_IDLE, outcome="compacted") == compacted + 1
    # it returns: tuned from where it stands, its next settings carry on the version
    back = _minutes(logic, 4, 1_700_000_900_000)
    assert not logic.compact
    assert all(s.version > 1 for s in back if isinstance(s, KnobSetting))
    now[0] += 61
    logic.on_notify()
    assert logic.compact
    now[0] += 600
    assert logic.on_notify() == ([], StatefulLogic.DISCARD)
    assert counter_value(obs.TUNING_HOSTS_IDLE, outcome="dropped") == dropped + 1

    # a host that was never changed (dry-run) has nothing worth keeping: dropped at once
    dry = tuner_context(Settings(tune={"mode": "dry-run", "canary_fraction": 1.0}))
    quiet = HostLogic(lambda: dry, 60.0, 600.0, clock=lambda: now[0])
    _minutes(quiet, 5, 1_700_000_000_000)
    now[0] += 61
    assert quiet.on_notify() == ([], StatefulLogic.DISCARD)


def test_each_record_is_keyed_by_what_it_tunes() -> None:
    from dataflows.tune import encode_tuning

    topics = Settings().topics
    encode = encode_tuning(topics)
    common: dict[str, Any] = {"ts": "2026-12-06T00:00:00Z", "knob": "k", "old": 1, "new": 2,
                              "allowed": True, "guardrail": "passed", "mode": "apply"}  # fmt: skip
    host = Recommendation(host="h1", cluster="c1", **common)
    pba = Recommendation(host="h1", cluster="c1", subsystem="bandwidth", **common)
    acp = Recommendation(host="", cluster="c1", subsystem="consensus", **common)
    setting = BandwidthSetting(host="h1", pba_window=6, pba_confidence=0.5, pba_update_interval=1)
    keys = [(m.key, m.topic) for m in map(encode, [host, pba, acp, setting])]
    assert keys == [
        (b"h1", topics.optimizer_actions),
        (b"bandwidth/h1", topics.optimizer_actions),
        (b"consensus/c1", topics.optimizer_actions),
        (b"bandwidth/h1", topics.dwcp_config),
    ]


def test_the_settings_at_start_reach_each_loop_before_its_first_decision() -> None:
    """`dwcp.config` read to its end before the flow starts (`settings_at_start`): a host
    that never reports the setting it runs is tuned from its operator's setting even when
    the config stream has not delivered it (here: no config stream at all)."""
    from bytewax.connectors.kafka import KafkaSourceMessage

    from dataflows.tune import settings_at_start

    def msg(key: bytes, value: bytes, offset: int) -> KafkaSourceMessage[bytes, bytes]:
        return KafkaSourceMessage(key, value, topic="dwcp.config", partition=0, offset=offset)

    old = KnobSetting(host="host-000", hde_level=5, hde_chunk_kib=64, hde_window_log=17,
                      version=4)  # fmt: skip
    new = msgspec.structs.replace(old, hde_level=9, version=5)
    stale = msgspec.structs.replace(old, hde_level=1, version=3)
    records = [msg(b"host-000", msgspec.json.encode(s), i) for i, s in enumerate([old, new])]
    records += [msg(b"host-000", msgspec.json.encode(stale), 2), msg(b"host-001", b"junk", 3)]
    initial = settings_at_start(records)
    assert initial == {"host-000": new}  # the highest version; junk skipped, not fatal

    settings = Settings(tune={"mode": "dry-run", "canary_fraction": 1.0})
    ctx = tuner_context(settings)
    sim = FleetSimulator(FleetConfig(hosts=2, clusters=1, duration_s=1800, step_s=10))
    loop = ClosedLoop(sim, ctx, 1.0, report_setting=False)
    sim.hook = loop.hook
    out: list[Any] = []
    flow = build_flow(settings, MessageSource(lambda: sim.messages("json"), 100),
                      CallbackSink(out.extend), kafka_output=False, ctx=ctx,
                      initial_settings=initial)  # fmt: skip
    run_main(flow)
    recs = [i for i in out if isinstance(i, Recommendation) and i.subsystem == "compression"]
    first = {r.host: r for r in reversed(recs)}
    assert first["host-000"].knob == "hde_level" and first["host-000"].old == 9
    assert first["host-001"].old in DEFAULT_CONFIG  # nothing at start: the default
