"""The auto-optimizer's compression environment (real zstd runs) and the tuners' harness."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("zstandard")
pytest.importorskip("optuna")

from training.tuning.compression import (
    Cell,
    CompressionEnv,
    CompressionTable,
    compress_chunked,
    measure_grid,
    payload_corpus,
    reward,
)
from training.tuning.evaluate import evaluate
from training.tuning.tuners import HillClimb, OptunaBO, RandomSearch, run


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return payload_corpus(size=256 * 1024)


def test_payloads_are_real_bytes_of_every_kind(corpus: dict[str, bytes]) -> None:
    assert set(corpus) >= {"metrics-json", "metrics-json-array", "metrics-line", "source",
                           "models", "vm-pages"}  # fmt: skip
    assert all(len(v) == 256 * 1024 for v in corpus.values())
    assert corpus["metrics-line"].startswith(b"cpu_util,host=") or b"host=" in corpus[
        "metrics-line"][:200]  # fmt: skip
    assert b'"metric"' in corpus["metrics-json"][:300]
    data = corpus["source"]
    frames = compress_chunked(data, 3, 64, 17)
    assert len(frames) == 4  # 256 KiB in 64 KiB chunks, each an independent frame
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    assert b"".join(dctx.decompress(f) for f in frames) == data


def test_measured_cells_behave_like_zstd(corpus: dict[str, bytes]) -> None:
    configs = [(1, 256, 17), (19, 256, 17), (9, 256, 12), (9, 256, 17)]
    noise = np.random.default_rng(0).bytes(256 * 1024)  # already-compressed data
    t = measure_grid({"source": corpus["source"], "random": noise}, configs, repeats=2)
    src_fast, src_small = t.cell("source", (1, 256, 17)), t.cell("source", (19, 256, 17))
    assert src_small.ratio > src_fast.ratio > 2  # text compresses, more with a higher level
    assert src_fast.compress_mb_s > 3 * src_small.compress_mb_s  # and level 19 is far slower
    assert t.cell("source", (9, 256, 17)).ratio > t.cell("source", (9, 256, 12)).ratio
    assert t.cell("random", (19, 256, 17)).ratio < 1.01  # nothing to find
    size = sum(len(f) for f in compress_chunked(corpus["source"], 1, 256, 17))
    assert src_fast.ratio == pytest.approx(len(corpus["source"]) / size)
    assert t.meta["repeats"] == 2 and t.meta["zstd"]


def _toy_table() -> CompressionTable:
    """A hand-made table: ratio rises with level, speed falls; the best level depends on
    the kind (json compresses well, so a high level pays; pages do not)."""
    cells = {}
    for kind, level, chunk, wlog in itertools.product(
        ("metrics-json", "vm-pages"), (1, 3, 9, 19), (16, 64, 256), (12, 17)
    ):
        json = kind == "metrics-json"
        ratio = (4.0 * (1 + 0.3 * level) if json else 1.6 * (1 + 0.01 * level)) * (
            1.1 if chunk == 256 else 1.0) * (1.05 if wlog == 17 else 1.0)  # fmt: skip
        speed = 800.0 / (1 + 0.1 * level)
        cells[CompressionTable.key(kind, (level, chunk, wlog))] = Cell(
            ratio, speed, 0.03 * speed, 1500.0, 10.0
        )
    return CompressionTable(cells, {"toy": True})


def test_env_reward_mix_switch_and_best() -> None:
    t = _toy_table()
    assert reward(2.0, 100.0, 100.0) == pytest.approx(1 / (1 / 100 + 1 / 200))
    env = CompressionEnv(t, "telemetry", schedule={3: "migration"}, seed=1)
    assert set(env.mix) == {"metrics-json"}  # only the kinds the table has
    best_json, _ = env.best()
    for _ in range(4):
        env.step(best_json)
    assert env.mix_name == "migration" and set(env.mix) == {"vm-pages"}
    best_pages, _ = env.best()
    assert best_pages != best_json
    a, b = env.measure(best_pages), env.measure(best_pages)
    assert a["reward"] != b["reward"]  # measured noise is replayed
    assert env.measure(best_pages, noise=False) == env.measure(best_pages, noise=False)


@pytest.mark.parametrize("make", [
    lambda env: RandomSearch(env.configs, 30, seed=2),
    lambda env: HillClimb(env.configs, (1, 16, 12), seed=2),
    lambda env: OptunaBO(env.configs, 30, seed=2),
])  # fmt: skip
def test_tuners_find_the_toy_optimum(make: object) -> None:
    env = CompressionEnv(_toy_table(), "telemetry", seed=3)
    tuner = make(env)  # type: ignore[operator]
    result = run(tuner, env, 80)
    summary = result.summary()
    assert summary["final_fraction_of_best"] >= 0.95
    assert summary["decisions_to_95pct"] is not None


def test_evaluate_reports_every_tuner(tmp_path: Path) -> None:
    report = evaluate(_toy_table(), seeds=2, decisions=60, budget=15, switch_at=30)
    rows = report["tuners"]
    assert set(rows) == {"default", "grid-best", "random", "hill-climb", "linucb", "optuna"}
    assert rows["grid-best"]["decisions_to_95pct"] == 1
    assert rows["default"]["final_fraction_of_best"] < rows["grid-best"]["final_fraction_of_best"]
    assert len(report["curves"]["optuna"]) == 60
    assert 0 <= rows["random"]["chosen_lose_10pct"] <= 1


def test_dqn_learns_the_toy_table_and_its_onnx_export_serves_the_same(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from training.tuning.dqn import (
        ACTIONS,
        STATE_NAMES,
        DQNConfig,
        KnobEnv,
        as_tuner_factory,
        export_policy,
        onnx_q_values,
        torch_q_values,
        train,
    )

    table = _toy_table()
    cfg = DQNConfig(hidden=(64, 64), episodes=40, steps=40, warmup=200, eps_decay_steps=1000,
                    target_every=100, buffer=5000)  # fmt: skip
    q, report = train(lambda seed: KnobEnv(table, mixes=("telemetry", "migration"),
                                           seed=seed, switch_every=20), cfg)  # fmt: skip
    assert report.steps == 1600 and len(report.episode_returns) == 40
    # it learned: later episodes beat the early, mostly random ones
    assert np.mean(report.episode_returns[-10:]) > np.mean(report.episode_returns[:5])
    kenv = KnobEnv(table, mixes=("telemetry",), seed=5)
    assert kenv.state_dim == len(STATE_NAMES) and kenv.n_actions == len(ACTIONS)
    manifest = export_policy(q, tmp_path, "dqn_toy", cfg=cfg, report=report, table=table,
                             command="test", metrics={})  # fmt: skip
    states = np.stack([kenv.reset("telemetry"), kenv.reset("migration")])
    np.testing.assert_allclose(onnx_q_values(manifest)(states), torch_q_values(q)(states),
                               atol=1e-5)  # fmt: skip
    report_eval = evaluate(
        table,
        tuners=("default", "dqn"),
        seeds=2,
        decisions=60,
        switch_at=30,
        policy=as_tuner_factory(onnx_q_values(manifest)),
    )
    dqn, default = report_eval["tuners"]["dqn"], report_eval["tuners"]["default"]
    assert dqn["mean_reward"] > default["mean_reward"]
    assert manifest == tmp_path / "dqn_toy" / "1" / "manifest.json"
    (manifest.parent / "dqn_toy.onnx").write_bytes(b"changed")
    with pytest.raises(ValueError, match="sha256"):
        onnx_q_values(manifest)


def test_bandwidth_predictor_on_real_traffic() -> None:
    from training.tuning.bandwidth import BandwidthEnv, run_predictor, traffic_series

    series = traffic_series()
    if not series:
        pytest.skip("shared NAB/dctraces data not present")
    name = "alibaba_net_in" if "alibaba_net_in" in series else next(iter(series))
    y = series[name]
    tight = run_predictor(y, 300, 588, 24, 0.5, 1)
    loose = run_predictor(y, 300, 588, 24, 0.99, 1)
    assert loose["waste"] > tight["waste"] and loose["shortfall"] < tight["shortfall"]
    env = BandwidthEnv(series, name)
    (window, conf, update), best = env.best()
    assert best <= 0 and env.measure((window, conf, update), noise=False)["reward"] == best
    assert env.step((24, 0.9, 6)) != env.step((24, 0.9, 6))  # the next day is another day


def test_consensus_simulation_rules_and_trade_offs() -> None:
    pytest.importorskip("simpy")
    from training.tuning.consensus import ConsensusEnv, Network, safe, simulate

    net = Network(duration_s=1.0)
    assert not safe((400, 1, 2), net)  # 2 of 5 is no majority
    assert not safe((20, 1, 3), net)  # below 2 x p99 round trip
    assert safe((400, 16, 3), net)
    batched = simulate((200, 16, 3), net, seed=1)
    single = simulate((200, 1, 3), net, seed=1)
    assert batched["messages_per_request"] < 0.5 * single["messages_per_request"]
    majority = simulate((200, 4, 3), net, seed=2)
    everyone = simulate((200, 4, 5), net, seed=2)
    assert majority["latency_ms"] < everyone["latency_ms"]  # waits for the slowest of 4
    env = ConsensusEnv(net=net, static_runs=1)
    assert all(safe(c, net) for c in env.configs) and env.unsafe_configs
    with pytest.raises(ValueError, match="unsafe"):
        env.measure((400, 1, 2))


def test_the_consensus_table_is_simulated_runs_the_flow_can_read(tmp_path: Path) -> None:
    pytest.importorskip("simpy")
    import json
    import subprocess
    import sys

    from operators.tuning.consensus import ConsensusTable
    from training.tuning.consensus import ConsensusEnv, Network, simulate

    out = tmp_path / "consensus_table.json"
    cmd = [sys.executable, "-m", "novacron_ml.cli", "tune", "measure", "--env", "consensus",
           "--runs", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "48 safe settings x 2 simulations" in done.stdout
    table = ConsensusTable.load(out)
    assert set(table.runs) == set(ConsensusEnv().configs) and table.nodes == 5
    assert json.loads(out.read_text())["meta"]["command"].startswith("novacron-ml tune measure")
    run = simulate((100, 16, 3), Network(), seed=10_000_001)  # the second run's seed
    assert table.runs[(100, 16, 3)][1][1] == pytest.approx(run["p99_ms"], abs=1e-3)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # no --force: not overwritten
