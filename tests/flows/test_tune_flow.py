"""The tuning flow in process: the closed loop with the simulator (the demo), and settings
read from `dwcp.config` (an operator's, and a malformed one to the dead letters)."""

from __future__ import annotations

from typing import Any

import msgspec
from bytewax.testing import run_main

from dataflows.io import CallbackSink, MessageSource
from dataflows.tune import build_flow, tuner_context
from novacron_ml.app.tune_demo import (
    ClosedLoop,
    host_rows,
    html_page,
    run_tune_demo,
    violations,
)
from novacron_ml.core.deadletter import DeadLetter, Reason
from novacron_ml.core.settings import Settings
from novacron_ml.core.simulator import FleetConfig, FleetSimulator
from novacron_ml.core.tuning import KnobSetting, Recommendation


def test_closed_loop_improves_canary_hosts_and_leaves_the_control_group() -> None:
    settings = Settings(tune={"mode": "apply", "canary_fraction": 0.5})
    fleet = FleetConfig(hosts=6, clusters=2, duration_s=3 * 3600, step_s=10)
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
    assert changes == len(applied) > 0
    page = html_page(result)  # one plot per host; a mark per change and per traffic switch
    switches = sum(t.switch_ms is not None for t in result.loop.trace.values())
    assert page.count("<svg") == 6 and page.count("<polygon") == changes + switches
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
    config_msgs = [
        (b"host-000", msgspec.json.encode(operator)),
        (b"host-001", b'{"host": 1}'),
        (b"host-001", msgspec.json.encode(off_grid)),  # level 4 is not on the grid
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
    assert [(d.reason, d.key) for d in dead] == [(Reason.BAD_SETTING, b"host-001")] * 2
    assert "hde_level=4 is not one of" in dead[1].detail
    recs = [i for i in out if isinstance(i, Recommendation)]
    first = {r.host: r for r in reversed(recs)}
    assert first["host-000"].knob == "hde_level" and first["host-000"].old == 9
    assert first["host-001"].old in (3, 64, 17)  # the default
    assert not any(isinstance(i, KnobSetting) for i in out)  # dry-run publishes no settings
