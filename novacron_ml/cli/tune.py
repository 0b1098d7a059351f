"""`novacron-ml tune ...`: the DWCP tuning environments and tuners (needs the `train` extra)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import check_outputs, require_train_extra, writes
from novacron_ml.core.tuning import GRID_KNOBS, SUBSYSTEMS

DEFAULT_TABLE = Path("models/tuning/compression_table.json")
DEFAULT_CONSENSUS_TABLE = Path("models/tuning/consensus_table.json")


def cmd_measure(args: argparse.Namespace) -> int:
    if args.out is None:  # the environment's own table, refused when it exists (no --force)
        args.out = DEFAULT_CONSENSUS_TABLE if args.env == "consensus" else DEFAULT_TABLE
        check_outputs(args)
    if args.env == "consensus":
        return _measure_consensus(args)
    if args.env != "compression":
        print(f"tune measure: --env {args.env} has no table (its tuner runs the predictor)")
        return 2
    require_train_extra("zstandard")
    from novacron_ml.cli.common import Bar
    from training.tuning.compression import grid, measure_grid, payload_corpus

    start = time.perf_counter()
    corpus = payload_corpus(args.data)
    print("payloads: " + ", ".join(f"{k} {len(v) // 1024} KiB" for k, v in corpus.items()))
    configs = grid()
    bar = Bar(len(corpus) * len(configs), "measure", "cells")
    try:
        table = measure_grid(
            corpus, configs, args.repeats, progress=lambda d, _t: bar.update(d - bar.n)
        )
    finally:
        bar.close()
    table.meta["command"] = args.invocation
    table.meta["seconds"] = round(time.perf_counter() - start, 1)
    table.save(args.out)
    print(f"wrote {len(table.cells)} measured cells to {args.out} ({table.meta['seconds']} s)")
    return 0


def _measure_consensus(args: argparse.Namespace) -> int:
    require_train_extra("simpy")
    from novacron_ml.cli.common import Bar
    from training.tuning.consensus import measure_table

    out = args.out
    start = time.perf_counter()
    bar = Bar(None, "simulate", "settings")
    try:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        table = measure_table(runs=args.runs, progress=progress)
    finally:
        bar.close()
    table["meta"]["command"] = args.invocation
    table["meta"]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    table["meta"]["seconds"] = round(time.perf_counter() - start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=0, separators=(",", ":")) + "\n")
    print(
        f"wrote {len(table['settings'])} safe settings x {args.runs} simulations to {out} "
        f"({table['meta']['seconds']} s; {len(table['meta']['unsafe'])} unsafe left out)"
    )
    return 0


def _eval_table(report: dict[str, Any]) -> list[list[str]]:
    def f(x: Any, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    rows = []
    for name, r in report["tuners"].items():
        rows.append(
            [
                name,
                f(r["mean_reward"], 3),
                f(r["final_fraction_of_best"]),
                f(r.get("realized_fraction_of_best")),
                f"{f(r['decisions_to_95pct'], 0)} ({r['decisions_to_95pct_reached']})",
                f(r["regret_first_200"], 1),
                f"{f(r.get('reconverge_decisions'), 0)} ({r.get('reconverge_decisions_reached')})",
                f(r.get("final_fraction_after_switch")),
                f(r["chosen_lose_10pct"], 2),
            ]
        )
    return rows


_EVAL_HEADERS = ["tuner", "reward", "of best", "realized", "to 95 %", "regret 200",
                 "re-converge", "after switch", "chosen lose >10 %"]  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    require_train_extra("optuna", "matplotlib")
    from novacron_ml.app.console import table
    from novacron_ml.cli.common import Bar
    from training.tuning.evaluate import TUNERS, evaluate, plot

    tuners = tuple(args.tuners or TUNERS)
    policy = None
    from novacron_ml.core.registry import parse_ref

    policy_path = parse_ref(args.policy or f"models/onnx/dqn_{args.env}").manifest_path()
    if "dqn" in tuners and args.env == "compression":
        from training.tuning.dqn import as_tuner_factory, onnx_q_values

        policy = as_tuner_factory(onnx_q_values(policy_path))
    elif "dqn" in tuners:
        from training.tuning import gridq
        from training.tuning.dqn import open_q_values

        values = open_q_values(policy_path, args.env)
        factory = (gridq.bandwidth_tuner_factory if args.env == "bandwidth"
                   else gridq.consensus_tuner_factory)  # fmt: skip
        policy = factory(values)
    reports: dict[str, dict[str, Any]] = {}
    if args.env == "compression":
        from training.tuning.compression import CompressionTable

        if not args.table.is_file():
            raise ValueError(f"{args.table}: no measured table (run `novacron-ml tune measure`)")
        t = CompressionTable.load(args.table)
        bar = Bar(len(tuners) * args.seeds, "tuners", "runs")
        try:
            reports["compression"] = evaluate(
                t,
                tuners=tuners,
                seeds=args.seeds,
                decisions=args.decisions,
                budget=args.budget,
                start_mix=args.mix,
                switch_to=args.switch_to,
                switch_at=args.switch_at,
                link_mb_s=args.link_mb_s,
                policy=policy,
                progress=lambda d, _t: bar.update(d - bar.n),
            )
        finally:
            bar.close()
    elif args.env == "consensus":
        require_train_extra("simpy")
        from training.tuning.consensus import DEFAULT_ACP, ConsensusEnv

        probe = ConsensusEnv()
        print(
            f"consensus: {len(probe.configs)} safe settings; the rules remove "
            f"{len(probe.unsafe_configs)} (quorum not a majority, or timeout < "
            f"2 x p99 round trip = {2 * probe.net.rtt_p99_ms():.0f} ms)"
        )
        bar = Bar(len(tuners) * args.seeds, "tuners", "runs")
        try:
            reports["consensus"] = evaluate(
                None,
                make_env=lambda seed: ConsensusEnv(seed=seed),
                default=DEFAULT_ACP,
                tuners=tuners,
                seeds=args.seeds,
                decisions=args.decisions,
                budget=args.budget,
                policy=policy,
                progress=lambda d, _t: bar.update(d - bar.n),
            )
        finally:
            bar.close()
    else:
        from training.tuning.bandwidth import DEFAULT_PBA, BandwidthEnv, traffic_series

        series = traffic_series(args.data)
        if not series:
            raise ValueError("no traffic series found (../shared/data: NAB, dctraces)")
        if args.series:
            unknown = sorted(set(args.series) - set(series))
            if unknown:
                raise ValueError(f"unknown series {unknown}; known: {sorted(series)}")
            series = {k: v for k, v in series.items() if k in args.series}
        bar = Bar(len(series) * len(tuners) * args.seeds, "tuners", "runs")

        def env_of(name: str) -> Any:
            return lambda seed: BandwidthEnv(series, name, seed=seed)

        try:
            for name in series:
                done0 = bar.n

                def progress(d: int, _t: int, done0: int = done0) -> None:
                    bar.update(done0 + d - bar.n)

                reports[name] = evaluate(
                    None,
                    make_env=env_of(name),
                    default=DEFAULT_PBA,
                    tuners=tuners,
                    seeds=args.seeds,
                    decisions=args.decisions,
                    budget=args.budget,
                    policy=policy,
                    progress=progress,
                )
        finally:
            bar.close()
    for name, report in reports.items():
        report["command"] = args.invocation
        print(f"{args.env}: {name}")
        print(table(_eval_table(report), _EVAL_HEADERS))
    if len(reports) > 1:
        import numpy as np

        mean = {
            t: {
                k: float(np.mean([r["tuners"][t][k] for r in reports.values()]))
                for k in ("mean_reward", "final_fraction_of_best", "realized_fraction_of_best")
            }
            for t in tuners
        }
        print("mean over series, of best: " + ", ".join(
            f"{t} {m['final_fraction_of_best']:.3f}" for t, m in mean.items()))  # fmt: skip
        print("mean over series, realized: " + ", ".join(
            f"{t} {m['realized_fraction_of_best']:.3f}" for t, m in mean.items()))  # fmt: skip
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        body = reports.get(args.env, reports)
        Path(args.json).write_text(json.dumps(body, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        first = next(iter(reports))
        label = args.env if first == args.env else f"{args.env} ({first})"
        plot(reports[first], Path(args.plot), label)
        print(f"wrote {args.plot}")
    return 0


def _rollout_plot(path: Path, returns: list[float], rollout: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(4, 1, figsize=(9, 9), dpi=100)
    w = max(1, len(returns) // 50)
    smooth = np.convolve(returns, np.ones(w) / w, mode="valid")
    axes[0].plot(returns, color="#bdc3c7", lw=0.8, label="episode")
    axes[0].plot(np.arange(w - 1, len(returns)), smooth, color="#2c3e50", lw=1.2,
                 label=f"mean of {w}")  # fmt: skip
    axes[0].set_ylabel("mean reward\n(vs default)")
    axes[0].set_title("DQN training: reward per episode; a greedy run with a mix switch")
    axes[0].legend(fontsize=8)
    keys = rollout.get("knobs", ("level", "chunk_kib", "window_log"))
    for ax, key in zip(axes[1:], keys, strict=True):
        ax.step(np.arange(len(rollout[key])), rollout[key], where="post", lw=1.2)
        ax.set_ylabel(key)
        if rollout.get("switch_at"):
            ax.axvline(rollout["switch_at"], color="#7f8c8d", ls="--", lw=1)
    if rollout.get("mixes"):
        axes[-1].set_xlabel(f"decision (mix {rollout['mixes'][0]} -> {rollout['mixes'][1]})")
    else:
        axes[0].set_title("DQN training: reward per episode; a greedy run on the replay")
        axes[-1].set_xlabel("decision")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def cmd_train_grid(args: argparse.Namespace) -> int:
    """`tune-train --env bandwidth | consensus`: the DQN on a replay of real predictor runs or
    simulations, exported to ONNX, checked on the real environment (held-out series for
    bandwidth); `--loo`: one policy per held-out series, side by side with the baselines."""
    import numpy as np
    import torch

    from novacron_ml.app.console import table as text_table
    from novacron_ml.cli.common import Bar
    from training.tuning import gridq
    from training.tuning.dqn import DQNConfig, export_q_network, open_q_values, train
    from training.tuning.evaluate import evaluate

    torch.set_num_threads(1)
    env_name = args.env
    cfg = DQNConfig(episodes=args.episodes, steps=args.steps, seed=args.seed,
                    eps_decay_steps=max(1, int(0.6 * args.episodes * args.steps)),
                    warmup=min(1000, args.episodes * args.steps // 4))  # fmt: skip
    out_dir = Path(args.report_dir)
    baselines = tuple(args.baselines)

    def grow(bar: Any) -> Any:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return progress

    def fit(replay: Any, label: str) -> tuple[Any, Any]:
        bar = Bar(cfg.episodes, f"train {label}", "episodes")
        try:
            return train(lambda _seed: gridq.GridKnobEnv(replay, env_name), cfg,
                         lambda d, _t, _r: bar.update(d - bar.n))  # fmt: skip
        finally:
            bar.close()

    def plot_training(q: Any, report: Any, replay: Any) -> Path:
        """Reward per episode, and the knobs over a greedy run on the replay."""
        values = gridq_torch(q)
        env = gridq.GridKnobEnv(replay, env_name)
        env.reset()
        knobs = GRID_KNOBS[env_name]
        rollout: dict[str, Any] = {"knobs": knobs, **{k: [] for k in knobs}}
        for _ in range(40):
            env.step(int(np.argmax(values(env.state()[None])[0])))
            for k, v in zip(knobs, env.config, strict=True):
                rollout[k].append(v)
        path = out_dir / f"dqn_{env_name}_training.png"
        _rollout_plot(path, report.episode_returns, rollout)
        return path

    def export(q: Any, report: Any, out: Path, name: str, data: dict[str, Any],
               metrics: dict[str, Any]) -> Any:  # fmt: skip
        manifest = export_q_network(
            q, out, name, subsystem=env_name,
            normalisation={"method": f"training.tuning.gridq ({env_name}): knob grid "
                           "positions in [0, 1], context, log(default's cost / cost)"},
            training_data=data, cfg=cfg, report=report, command=args.invocation,
            metrics=metrics,
        )  # fmt: skip
        return manifest, open_q_values(manifest, env_name)

    if env_name == "consensus":
        require_train_extra("simpy")
        from training.tuning.consensus import DEFAULT_ACP, ConsensusEnv

        bar = Bar(1, "simulate", "runs")
        try:
            replay = gridq.ConsensusReplay(args.runs, args.seed, grow(bar))
        finally:
            bar.close()
        q, report = fit(replay, "consensus")
        check = evaluate(None, make_env=lambda seed: ConsensusEnv(seed=seed), default=DEFAULT_ACP,
                         tuners=(*baselines, "dqn"), seeds=args.eval_seeds,
                         decisions=args.eval_decisions, budget=20,
                         policy=gridq.consensus_tuner_factory(gridq_torch(q)))  # fmt: skip
        fractions = {t: r["final_fraction_of_best"] for t, r in check["tuners"].items()}
        data = {"replay": f"{args.runs} SimPy runs per safe setting (seeds 50,000,000+)",
                "episodes": cfg.episodes, "steps": cfg.steps}  # fmt: skip
        manifest, served = export(q, report, Path(args.out), args.name or "dqn_consensus", data,
                                  {"final_fraction_of_best": fractions})  # fmt: skip
        again = evaluate(None, make_env=lambda seed: ConsensusEnv(seed=seed),
                         default=DEFAULT_ACP, tuners=("dqn",), seeds=args.eval_seeds,
                         decisions=args.eval_decisions,
                         policy=gridq.consensus_tuner_factory(served))["tuners"]["dqn"]  # fmt: skip
        print(text_table([[t, f] for t, f in fractions.items()], ["tuner", "of best (fresh sims)"]))
        print(f"ONNX policy: {again['final_fraction_of_best']:.3f} of best; wrote {manifest}, "
              f"{plot_training(q, report, replay)}")  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "dqn_consensus.json").write_text(json.dumps(
            {"command": args.invocation, "returns": report.episode_returns, "check": check,
             "onnx": again}, indent=1))  # fmt: skip
        return 0

    from training.tuning.bandwidth import DEFAULT_PBA, BandwidthEnv, traffic_series

    series = traffic_series(args.data)
    if not series:
        raise ValueError("no traffic series found (../shared/data: NAB, dctraces)")
    all_names = list(series)
    bar = Bar(1, "predictor runs", "runs")
    try:
        bw_replay = gridq.BandwidthReplay(series, all_names, args.seed, grow(bar))
    finally:
        bar.close()

    def evaluate_on(held: list[str], values: Any) -> dict[str, dict[str, float]]:
        out = {}
        for name in held:

            def make_env(seed: int, n: str = name) -> Any:
                return BandwidthEnv(series, n, seed=seed)

            rep = evaluate(None, make_env=make_env,
                           default=DEFAULT_PBA, tuners=(*baselines, "dqn"),
                           seeds=args.eval_seeds, decisions=args.eval_decisions, budget=30,
                           policy=gridq.bandwidth_tuner_factory(values))  # fmt: skip
            out[name] = {t: r["final_fraction_of_best"] for t, r in rep["tuners"].items()}
        return out

    results: dict[str, Any] = {"command": args.invocation}
    if args.loo:
        loo: dict[str, dict[str, float]] = {}
        for i, held in enumerate(all_names):
            sub = bw_replay.only([j for j in range(len(all_names)) if j != i])
            q, report = fit(sub, f"without {held}")
            loo.update(evaluate_on([held], gridq_torch(q)))
        results["leave_one_series_out"] = loo
        tuners = list(next(iter(loo.values())))
        rows = [[n, *(loo[n][t] for t in tuners)] for n in loo]
        rows.append(["mean", *(float(np.mean([loo[n][t] for n in loo])) for t in tuners)])
        print("leave one series out (trained on the other five, scored on the held-out one):")
        print(text_table(rows, ["held-out series", *tuners]))
    holdout = list(args.holdout or [])
    unknown = sorted(set(holdout) - set(all_names))
    if unknown:
        raise ValueError(f"unknown series {unknown}; known: {all_names}")
    keep = [j for j, n in enumerate(all_names) if n not in holdout]
    q, report = fit(bw_replay.only(keep), "policy")
    data = {"series": [all_names[j] for j in keep], "held_out": holdout,
            "days": sum(len(bw_replay.series_days[j]) for j in keep),
            "episodes": cfg.episodes, "steps": cfg.steps}  # fmt: skip
    scored = holdout or all_names
    check = evaluate_on(scored, gridq_torch(q))
    metrics = {"final_fraction_of_best": check, "scored_on": "held-out series" if holdout
               else "the training series (no hold-out: see --loo)"}  # fmt: skip
    if "leave_one_series_out" in results:
        metrics["leave_one_series_out"] = results["leave_one_series_out"]
    manifest, served = export(q, report, Path(args.out), args.name or "dqn_bandwidth", data,
                              metrics)  # fmt: skip
    again = evaluate_on(scored[:1], served)
    tuners = list(next(iter(check.values())))
    print(text_table([[n, *(check[n][t] for t in tuners)] for n in check], ["series", *tuners]))
    print(f"ONNX policy on {scored[0]}: {again[scored[0]]['dqn']:.3f} of best "
          f"(torch {check[scored[0]]['dqn']:.3f}); wrote {manifest}, "
          f"{plot_training(q, report, bw_replay.only(keep))}")  # fmt: skip
    results.update(check=check, returns=report.episode_returns)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "dqn_bandwidth.json").write_text(json.dumps(results, indent=1))
    return 0


def gridq_torch(q: Any) -> Any:
    from training.tuning.dqn import torch_q_values

    return torch_q_values(q)


def cmd_train(args: argparse.Namespace) -> int:
    require_train_extra("torch", "onnx", "onnxruntime", "matplotlib")
    if args.env != "compression":
        return cmd_train_grid(args)
    import torch

    from novacron_ml.cli.common import Bar
    from training.tuning.compression import CompressionEnv, CompressionTable
    from training.tuning.dqn import (
        DQNConfig,
        KnobEnv,
        as_tuner_factory,
        export_policy,
        onnx_q_values,
        train,
    )
    from training.tuning.evaluate import evaluate

    torch.set_num_threads(1)
    if not args.table.is_file():
        raise ValueError(f"{args.table}: no measured table (run `novacron-ml tune measure`)")
    table = CompressionTable.load(args.table)
    cfg = DQNConfig(
        episodes=args.episodes,
        steps=args.steps,
        seed=args.seed,
        eps_decay_steps=max(1, int(0.6 * args.episodes * args.steps)),
    )
    bar = Bar(cfg.episodes, "tune-train", "episodes")

    def progress(done: int, _total: int, ret: float) -> None:
        bar.update(done - bar.n)

    try:
        q, report = train(
            lambda seed: KnobEnv(
                table, seed=seed, switch_every=args.switch_every, links=args.links
            ),
            cfg,
            progress,
        )
    finally:
        bar.close()
    print(f"trained {report.steps:,} steps in {report.seconds:.0f} s")
    # a greedy run on a fresh environment: telemetry, then a VM migration
    env = CompressionEnv(table, "telemetry", schedule={50: "migration"}, seed=99)
    kenv = KnobEnv(table, env=env)
    kenv.reset("telemetry")
    from training.tuning.dqn import torch_q_values

    values = torch_q_values(q)
    rollout: dict[str, Any] = {"level": [], "chunk_kib": [], "window_log": [], "switch_at": 50,
                               "mixes": ["telemetry", "migration"]}  # fmt: skip
    for _ in range(100):
        kenv.step(int(values(kenv.state()[None])[0].argmax()))
        for key, v in zip(("level", "chunk_kib", "window_log"), kenv.config, strict=True):
            rollout[key].append(v)
    out_dir = Path(args.report_dir)
    _rollout_plot(out_dir / "dqn_training.png", report.episode_returns, rollout)
    factory = as_tuner_factory(values)
    check = evaluate(table, tuners=("default", "grid-best", "dqn"), seeds=3, decisions=200,
                     switch_at=100, policy=factory)  # fmt: skip
    dqn = check["tuners"]["dqn"]
    metrics = {
        "final_fraction_of_best": dqn["final_fraction_of_best"],
        "final_fraction_after_switch": dqn.get("final_fraction_after_switch"),
        "reconverge_decisions": dqn.get("reconverge_decisions"),
        "default_fraction_of_best": check["tuners"]["default"]["final_fraction_of_best"],
        "evaluation": "tune eval's harness, 3 fresh seeds, 200 decisions, telemetry -> "
        "migration at 100",
    }
    manifest = export_policy(
        q, Path(args.out), args.name or "dqn_compression", cfg=cfg, report=report, table=table,
        command=args.invocation, metrics=metrics,
    )  # fmt: skip
    served = as_tuner_factory(onnx_q_values(manifest))
    again = evaluate(table, tuners=("dqn",), seeds=3, decisions=200, switch_at=100,
                     policy=served)["tuners"]["dqn"]  # fmt: skip
    (out_dir / "dqn_training.json").write_text(
        json.dumps(
            {
                "command": args.invocation,
                "returns": report.episode_returns,
                "seconds": report.seconds,
                "rollout": rollout,
                "metrics": metrics,
                "onnx_metrics": again,
            },
            indent=1,
        )
    )
    print(
        f"policy: {dqn['final_fraction_of_best']:.3f} of the grid-best before the switch, "
        f"{dqn.get('final_fraction_after_switch') or 0:.3f} after (default "
        f"{metrics['default_fraction_of_best']:.3f}); ONNX policy "
        f"{again['final_fraction_of_best']:.3f} / "
        f"{again.get('final_fraction_after_switch') or 0:.3f}"
    )
    print(f"wrote {manifest}, {out_dir / 'dqn_training.png'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The tuning flow on Kafka (runtime only: no train extra)."""
    import sys
    from datetime import timedelta

    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from dataflows.tune import kafka_flow
    from novacron_ml.cli.run import install_stop_handlers, prepare_recovery, recovery_dir
    from novacron_ml.core import metrics as obs
    from novacron_ml.core.kafka import ensure_topics, wait_ready
    from novacron_ml.core.metrics import counter_value, serve_metrics
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    tune_changes: dict[str, object] = {}
    if args.mode:
        tune_changes["mode"] = args.mode
    if args.canary is not None:
        tune_changes["canary_fraction"] = args.canary
    if tune_changes:
        settings = settings.model_copy(
            update={
                "tune": settings.tune.model_validate({**settings.tune.model_dump(), **tune_changes})
            }
        )
    if args.once:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"tail": False})}
        )
    bootstrap = settings.kafka.bootstrap_servers
    t = settings.topics
    print(f"novacron-ml tune run: waiting for Kafka at {bootstrap}", file=sys.stderr)
    wait_ready(bootstrap, timeout_s=args.wait)
    ensure_topics(bootstrap, [t.metrics, t.optimizer_actions, t.dlq], compacted=[t.dwcp_config])
    port = args.metrics_port or settings.observability.metrics_port
    if port:
        serve_metrics(port, settings.observability.metrics_bind)
        print(f"novacron-ml tune run: Prometheus metrics on port {port}", file=sys.stderr)
    tn = settings.tune
    out = f"{t.optimizer_actions}" + (f" and {t.dwcp_config}" if tn.mode == "apply" else "")
    print(
        f"novacron-ml tune run: {t.metrics} + {t.dwcp_config} -> {out}; mode {tn.mode}, a "
        f"decision per host every {tn.interval_s:g} s, canary {tn.canary_fraction:.0%}, "
        f"cooldown {tn.cooldown_s:g} s, policy {tn.policy}; consensus per cluster: "
        + (tn.consensus_policy or "off (tune.consensus_policy is empty)")
        + f"; bandwidth predictor per host: {tn.bandwidth_tuner}",
        file=sys.stderr,
    )
    recovery = None
    if settings.recovery.enabled and not args.no_recovery:
        directory = recovery_dir(settings, args.recovery_dir, flow="tune")
        fresh = prepare_recovery(directory, args.from_beginning)
        state = "new" if fresh else "resuming every host's loop where it stopped"
        print(f"novacron-ml tune run: recovery state {directory} ({state})", file=sys.stderr)
        recovery = RecoveryConfig(
            str(directory), backup_interval=timedelta(seconds=settings.recovery.backup_interval_s)
        )
    else:
        print(
            "novacron-ml tune run: no recovery state: a restart forgets cooldowns, pending "
            "reverts and reverted settings",
            file=sys.stderr,
        )
    flow = kafka_flow(settings)  # the policy and table checked before the flow starts
    signals = install_stop_handlers()  # Ctrl-C / SIGTERM end the inputs; outputs flush
    start = time.monotonic()
    cli_main(
        flow,
        workers_per_process=args.workers,
        epoch_interval=timedelta(seconds=settings.recovery.snapshot_interval_s),
        recovery_config=recovery,
    )

    def total(counter: Any) -> int:
        return int(
            sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
        )

    print(
        f"novacron-ml tune run: {time.monotonic() - start:.1f} s; "
        f"{int(counter_value(obs.EVENTS)):,} events, {total(obs.RECOMMENDATIONS):,} "
        f"recommendations, {total(obs.GUARDRAIL_BLOCKS):,} blocked, "
        f"{total(obs.DEAD_LETTERS):,} dead letters",
        file=sys.stderr,
    )
    return 130 if signals else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "tune-train",
        help="train a DQN tuner (compression, bandwidth or consensus), export it to ONNX",
        description="Double DQN (hidden [256, 256], 100,000-transition replay, target network, "
        "epsilon to 0.01) on the measured compression environment, or with --env on replayed "
        "bandwidth-predictor or consensus runs (docs/TUNING.md); writes "
        "the registry models/onnx/<name>/ as a new version (the champion when there is none, "
        "else the challenger), a report with plots (reward per episode, "
        "the knobs over a greedy run with a traffic switch), and checks the ONNX policy.",
    )
    p.add_argument(
        "--env",
        choices=SUBSYSTEMS,
        default="compression",
        help="compression (the measured table, the default), bandwidth (replayed predictor "
        "runs on the real traffic series) or consensus (replayed SimPy runs)",
    )
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help=f"({DEFAULT_TABLE})")
    p.add_argument("--episodes", type=int, default=400, help="episodes (400; the seed: 1000)")
    p.add_argument("--steps", type=int, default=100, help="decisions per episode (100)")
    p.add_argument("--switch-every", type=int, default=50, help="mix switch period (50)")
    p.add_argument(
        "--links",
        type=float,
        nargs="+",
        default=[12.5, 125.0, 1250.0],
        help="link speeds (MB/s) drawn per episode (12.5 125 1250: 100 Mbit/s to 10 Gbit/s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="models/onnx", help="registry directory (models/onnx)")
    p.add_argument("--name", help="model name (default dqn_<env>)")
    g = p.add_argument_group("bandwidth and consensus")
    g.add_argument("--data", type=Path, help="bandwidth: the public data dir (../shared/data)")
    g.add_argument("--holdout", nargs="+", help="bandwidth: series left out of training")
    g.add_argument("--loo", action="store_true",
                   help="bandwidth: also train one policy per held-out series and score each on "
                   "it beside the baselines (leave one series out)")  # fmt: skip
    g.add_argument("--runs", type=int, default=24, help="consensus: simulations per setting (24)")
    g.add_argument("--baselines", nargs="*", default=["default", "random", "linucb", "optuna"],
                   help="tuners scored beside the policy (default ... optuna)")  # fmt: skip
    g.add_argument("--eval-seeds", type=int, default=3, help="evaluation seeds (3)")
    g.add_argument("--eval-decisions", type=int, default=60, help="evaluation decisions (60)")
    p.add_argument("--report-dir", default="out/tune", help="plots and JSON (out/tune)")
    p.set_defaults(func=cmd_train)

    tune = sub.add_parser(
        "tune",
        help="DWCP tuning: measure environments, compare tuners (needs the train extra)",
        description="The auto-optimizer's environments and its baselines (docs/TUNING.md).",
    )
    ts = tune.add_subparsers(dest="tune_command", required=True, metavar="ACTION")

    p = ts.add_parser(
        "measure",
        help="measure the compression grid on this machine (zstd level x chunk x window), "
        "or simulate the consensus grid (--env consensus)",
        description="Compress one MiB of each payload kind (simulator metrics in three wire "
        "formats, NAB and dctraces CSVs, the project's source and ONNX models, VM-memory-like "
        "pages) with every setting of the grid, --repeats times, and write ratio and speeds. "
        "--env consensus: simulate every safe consensus setting --runs times and keep each "
        f"run ({DEFAULT_CONSENSUS_TABLE}: the tuning flow's safe-set estimates, the demo's "
        "clusters).",
    )
    p.add_argument("--env", choices=("compression", "consensus"), default="compression",
                   help="compression (zstd on this machine) or consensus (SimPy)")  # fmt: skip
    p.add_argument(
        "--out", type=Path, help=f"table ({DEFAULT_TABLE}; consensus: {DEFAULT_CONSENSUS_TABLE})"
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per cell (3)")
    p.add_argument("--runs", type=int, default=64, help="consensus: simulations per setting (64)")
    p.add_argument("--data", type=Path, help="the public data directory (../shared/data)")
    writes(p, "out")
    p.set_defaults(func=cmd_measure)

    p = ts.add_parser(
        "eval",
        help="every tuner on the measured compression environment, side by side",
        description="Default, grid-best, random search, hill climbing, LinUCB and Optuna on the "
        "measured compression table (replayed with its noise), over --seeds seeds; the traffic "
        "mix switches at --switch-at. Prints reward, share of the best, decisions to 95 %, "
        "regret over the first 200 decisions, re-convergence and how often a configuration "
        "chosen as best loses > 10 % when measured again.",
    )
    p.add_argument(
        "--env",
        choices=SUBSYSTEMS,
        default="compression",
        help="compression (the measured table), bandwidth (the predictor on real traffic) or"
        " consensus (the quorum-replication simulation)",
    )
    p.add_argument("--table", type=Path, default=DEFAULT_TABLE, help=f"({DEFAULT_TABLE})")
    p.add_argument("--data", type=Path, help="bandwidth: the public data dir (../shared/data)")
    p.add_argument(
        "--tuners",
        nargs="+",
        help="subset (default: all; `dqn` uses --policy; bandwidth also knows "
        "`hindsight`: yesterday's best setting, rerun on yesterday's traffic)",
    )
    p.add_argument(
        "--policy",
        help="the DQN: a registry folder, <folder>@<version> or a manifest "
        "(default models/onnx/dqn_<env>, its champion)",
    )
    p.add_argument("--series", nargs="+", help="bandwidth: only these series (default: all six)")
    p.add_argument("--seeds", type=int, default=5, help="seeds (5)")
    p.add_argument("--decisions", type=int, default=300, help="decisions per run (300)")
    p.add_argument("--budget", type=int, default=50, help="random/optuna exploration (50)")
    p.add_argument("--mix", default="telemetry", help="starting traffic mix (telemetry)")
    p.add_argument("--switch-to", default="migration", help="mix after the switch (migration)")
    p.add_argument("--switch-at", type=int, default=150, help="decision of the switch (150)")
    p.add_argument("--link-mb-s", type=float, default=125.0, help="link speed, MB/s (125)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--plot", help="write the reward curves (PNG) here")
    writes(p, "json", "plot")
    p.set_defaults(func=cmd_eval)

    p = ts.add_parser(
        "run",
        help="the tuning flow on Kafka: recommendations on optimizer.actions (no train extra)",
        description="Read metrics and dwcp.config, decide per host every tune.interval_s with "
        "the ONNX policy and the guardrails, publish every verdict on optimizer.actions; in "
        "apply mode (opt-in) also the allowed settings on dwcp.config (docs/TUNING.md#flow). "
        "Settings: NOVACRON_TUNE_* (novacron-ml settings).",
    )
    p.add_argument("--mode", choices=("dry-run", "apply"), help="override tune.mode (dry-run)")
    p.add_argument("--canary", type=float, help="override tune.canary_fraction (0.1)")
    p.add_argument("-w", "--workers", type=int, default=1, help="worker threads (1)")
    p.add_argument("--once", action="store_true", help="stop at the end of the topics")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    from novacron_ml.cli.run import add_recovery_arguments

    add_recovery_arguments(
        p,
        "recovery.dir + '-tune', else one directory per broker and topic under "
        "~/.local/state/novacron-ml/recovery): a restart resumes every host's cooldown, pending "
        "revert and reverted settings",
    )
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_run)
