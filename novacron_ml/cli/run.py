"""`novacron-ml run` and `topics`: the detect flow against Kafka."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from novacron_ml.cli.common import EPILOG, count, port, seconds


def cmd_run(args: argparse.Namespace) -> int:
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from dataflows.detect import kafka_flow
    from novacron_ml.core.kafka import ensure_topics, wait_ready
    from novacron_ml.core.memory import quiet_collector, retain_freed_memory
    from novacron_ml.core.metrics import serve_metrics
    from novacron_ml.core.settings import load_settings

    if args.workers < 1 or args.partitions < 1 or args.processes < 1:
        raise ValueError("--workers, --processes and --partitions must be at least 1")
    member = statefulset_member()
    if member is not None and args.process_id is None:
        # A pod of the Kubernetes StatefulSet (deploy/k8s): its ordinal and the hostfile.
        args.process_id, args.addresses = member
    child = args.process_id is not None
    if child and not args.addresses:
        raise ValueError("--process-id needs --addresses")
    if args.wait <= 0:
        raise ValueError("--wait must be a positive number of seconds")
    settings = load_settings()
    kafka_changes: dict[str, object] = {}
    if args.once:
        kafka_changes["tail"] = False
    if args.from_end:
        kafka_changes["starting_offset"] = "end"
    if kafka_changes:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update=kafka_changes)}
        )
    bootstrap = settings.kafka.bootstrap_servers
    t = settings.topics
    name = f"novacron-ml run [process {args.process_id}]" if child else "novacron-ml run"
    if not child or member is not None:
        print(f"{name}: waiting for Kafka at {bootstrap}", file=sys.stderr)
        wait_ready(bootstrap, timeout_s=args.wait)
        ensure_topics(bootstrap, t.in_use, partitions=args.partitions)
    port = args.metrics_port or settings.observability.metrics_port
    if port and not (args.processes > 1 and not child):
        bind = settings.observability.metrics_bind
        serve_metrics(port, bind)
        print(f"{name}: Prometheus metrics on {bind}:{port}/metrics", file=sys.stderr)
    recovery = None
    directory: Path | None = None
    if settings.recovery.enabled and not args.no_recovery:
        directory = recovery_dir(settings, args.recovery_dir)
        if member is not None:  # a volume of its own: this pod's recovery partition
            count = len(args.addresses.split(";"))
            fresh = prepare_member_recovery(directory, args.process_id, count)
            state = "new, starts at kafka.starting_offset" if fresh else "resuming where it stopped"
            print(f"{name}: recovery state {directory} ({state})", file=sys.stderr)
        elif not child:
            fresh = prepare_recovery(directory, args.from_beginning)
            state = "new, starts at kafka.starting_offset" if fresh else "resuming where it stopped"
            print(f"novacron-ml run: recovery state {directory} ({state})", file=sys.stderr)
        recovery = RecoveryConfig(
            str(directory), backup_interval=timedelta(seconds=settings.recovery.backup_interval_s)
        )
    elif not child:
        print(
            "novacron-ml run: no recovery state: a restart reads from "
            f"{settings.kafka.starting_offset} again",
            file=sys.stderr,
        )
    if not child:
        procs = f"{args.processes} processes × " if args.processes > 1 else ""
        print(
            f"novacron-ml run: {t.metrics} -> {t.alerts} (+ {t.dlq}), {procs}{args.workers} "
            f"worker(s); {flow_description(settings)}",
            file=sys.stderr,
        )
        advice = shard_advice(settings.features.shards, args.processes * args.workers)
        if advice:
            print(f"novacron-ml run: {advice}", file=sys.stderr)
    # settings and models checked before any process starts; no recovery, no snapshots
    flow = kafka_flow(settings, recovery=recovery is not None)
    if args.processes > 1 and not child:
        warn_idle_workers(bootstrap, t.metrics, args.processes * args.workers)
        return run_cluster(args, directory)
    if recovery is not None and settings.recovery.retain_freed_memory:
        said = retain_freed_memory()  # each process of a cluster for itself
        if not child:
            print(f"novacron-ml run: {said}", file=sys.stderr)
    if settings.runtime.quiet_gc:
        said = quiet_collector()  # last: the flow, its models and settings are built
        if not child:
            print(f"novacron-ml run: {said}", file=sys.stderr)
    signals = install_stop_handlers()
    start = time.monotonic()
    cli_main(
        flow,
        workers_per_process=args.workers,
        process_id=args.process_id,
        addresses=args.addresses.split(";") if child else None,
        epoch_interval=timedelta(seconds=settings.recovery.snapshot_interval_s),
        recovery_config=recovery,
    )
    seconds = time.monotonic() - start
    print(f"{name}: {run_summary(seconds)}", file=sys.stderr)
    if signals:
        how = "Ctrl-C" if signals[0] == signal.SIGINT else signal.Signals(signals[0]).name
        resume = (
            "resume with the same command"
            if recovery
            else "without recovery state a restart reads from kafka.starting_offset again"
        )
        print(f"novacron-ml run: stopped on {how}, outputs flushed; {resume}", file=sys.stderr)
        return 130
    lost = lost_records()
    if lost:
        print(
            f"novacron-ml run: {lost:,} output records were LOST (novacron_output_lost_total; "
            "causes logged above)",
            file=sys.stderr,
        )
        return 1
    return 0


def free_loopback_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def shard_advice(shards: int, workers: int) -> str | None:
    """Features and detection run per shard, shard i on worker i % workers (for a power of two
    of workers, `dataflows.steps.SHARD_KEYS`): say so when some workers would get fewer."""
    if workers <= 1:
        return None
    if shards < workers:
        return (
            f"features.shards={shards} for {workers} workers: {workers - shards} of them only "
            f"parse (set NOVACRON_FEATURES_SHARDS={workers} or a multiple)"
        )
    if workers & (workers - 1) or workers > 64:
        return (
            f"the shards spread evenly over 2, 4, ... 64 workers, not {workers}: some workers "
            "get more shards than others"
        )
    if shards % workers:
        return (
            f"features.shards={shards} is not a multiple of {workers} workers: some get "
            f"{shards // workers + 1} shards, others {shards // workers}"
        )
    return None


def warn_idle_workers(bootstrap: str, topic: str, workers: int) -> None:
    """Kafka partitions are the unit of parallelism: say so when some workers get none."""
    from confluent_kafka.admin import AdminClient

    from novacron_ml.core.kafka import client_config

    meta = AdminClient(client_config(bootstrap)).list_topics(topic, timeout=10).topics.get(topic)
    partitions = len(meta.partitions) if meta is not None else 0
    if 0 < partitions < workers:
        print(
            f"novacron-ml run: {topic} has {partitions} partition(s) for {workers} workers: "
            f"{workers - partitions} will idle (more partitions: `novacron-ml topics "
            "--partitions N` on a new topic)",
            file=sys.stderr,
        )


def run_cluster(args: argparse.Namespace, directory: Path | None) -> int:
    """A local Bytewax cluster: `args.processes` copies of this command on loopback addresses,
    each `--process-id i` of the same `--addresses`; Ctrl-C and SIGTERM are passed on, each
    process stops cleanly and prints its summary; the worst exit code is returned."""
    import subprocess

    addresses = ";".join(f"127.0.0.1:{p}" for p in free_loopback_ports(args.processes))
    base = [sys.executable, "-m", "novacron_ml.cli"]
    if args.verbose:
        base.append("--verbose")
    base += ["run", "--workers", str(args.workers), "--addresses", addresses]
    base += ["--wait", str(args.wait)]
    if args.once:
        base.append("--once")
    if args.from_end:
        base.append("--from-end")
    if args.metrics_port:
        base += ["--metrics-port", str(args.metrics_port)]
    base += ["--no-recovery"] if directory is None else ["--recovery-dir", str(directory)]
    print(f"novacron-ml run: starting {args.processes} processes on {addresses}", file=sys.stderr)
    children = [subprocess.Popen([*base, "--process-id", str(i)]) for i in range(args.processes)]
    stopped: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopped.append(signum)
        for proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if len(stopped) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = supervise(children)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failed = [f"process {i} exited {c}" for i, c in enumerate(codes) if c not in (0, 130)]
    if failed:
        print(f"novacron-ml run: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 130 if stopped or 130 in codes else 0


def statefulset_member() -> tuple[int, str] | None:
    """(process id, addresses) of a pod of a StatefulSet laid out as Bytewax documents it
    (deploy/k8s/detect.yaml): BYTEWAX_POD_NAME `<BYTEWAX_STATEFULSET_NAME>-<ordinal>`, and
    BYTEWAX_HOSTFILE_PATH with one `host:port` per pod, in ordinal order; None outside one."""
    import os

    pod, name = os.environ.get("BYTEWAX_POD_NAME"), os.environ.get("BYTEWAX_STATEFULSET_NAME")
    hostfile = os.environ.get("BYTEWAX_HOSTFILE_PATH")
    if not (pod and name and hostfile):
        return None
    ordinal = pod.removeprefix(f"{name}-")
    if not ordinal.isdigit():
        raise ValueError(f"BYTEWAX_POD_NAME {pod!r} is not {name}-<ordinal>")
    try:
        hosts = [line.strip() for line in Path(hostfile).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise ValueError(f"BYTEWAX_HOSTFILE_PATH {hostfile}: {exc.strerror}") from None
    if int(ordinal) >= len(hosts):
        raise ValueError(f"{hostfile} lists {len(hosts)} hosts; pod {pod} is number {ordinal}")
    return int(ordinal), ";".join(hosts)


def prepare_member_recovery(directory: Path, index: int, count: int) -> bool:
    """A cluster member's own recovery volume holds one partition, `part-<index>`, of the
    cluster's `count` (Bytewax finds the partitions across the cluster's processes); created
    on first start. Whether the state is new."""
    import shutil
    import tempfile

    from bytewax.recovery import init_db_dir

    own = directory / f"part-{index}.sqlite3"
    if own.is_file():
        return False
    others = sorted(p.name for p in directory.glob("part-*.sqlite3"))
    if others:
        raise ValueError(
            f"{directory} holds {', '.join(others)}, not this pod's part-{index}.sqlite3: "
            "a volume of another pod, or of a cluster of another size"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        init_db_dir(Path(scratch), count)
        shutil.move(str(Path(scratch) / own.name), own)
    return True


def supervise(children: list[Any], grace_s: float = 15.0) -> list[int]:
    """Wait for the cluster's processes; when one dies (killed, crashed), the others cannot
    go on without it (Timely waits for its peer): stop them, SIGINT then SIGKILL after
    `grace_s`, so the cluster ends and a restart resumes it from the recovery state."""
    failed_at: float | None = None
    while any(p.poll() is None for p in children):
        codes = [p.poll() for p in children]
        if failed_at is None and any(c not in (None, 0, 130) for c in codes):
            failed_at = time.monotonic()
            dead = [i for i, c in enumerate(codes) if c not in (None, 0, 130)]
            print(
                f"novacron-ml run: process {dead[0]} exited {codes[dead[0]]}; stopping the "
                "others (restart to resume from the recovery state)",
                file=sys.stderr,
            )
            for p in children:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
        elif failed_at is not None and time.monotonic() - failed_at > grace_s:
            for p in children:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    return [int(p.returncode) for p in children]


def add_recovery_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """--recovery-dir (`default`: where it is otherwise, and what a restart resumes),
    --no-recovery, --from-beginning: the same for every flow command."""
    p.add_argument("--recovery-dir", type=Path, help=f"Bytewax recovery state (default: {default}")
    p.add_argument("--no-recovery", action="store_true", help="keep no recovery state")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start over: delete this run's recovery state and read from kafka.starting_offset",
    )


def recovery_dir(settings: Any, given: Path | None, flow: str = "detect") -> Path:
    """--recovery-dir, else recovery.dir, else one directory per broker and metrics topic
    (state from another topic's partitions must never be resumed). Each flow has its own:
    the tuning flow's is recovery.dir's sibling `<dir>-tune`, or `tune-<topic>-<digest>`."""
    import hashlib
    import os

    if given:
        return given
    suffix = "" if flow == "detect" else f"-{flow}"
    if settings.recovery.dir:
        configured = Path(settings.recovery.dir)
        return configured.with_name(configured.name + suffix)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = f"{settings.kafka.bootstrap_servers}|{settings.topics.metrics}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    prefix = "" if flow == "detect" else f"{flow}-"
    return base / "novacron-ml" / "recovery" / f"{prefix}{settings.topics.metrics}-{digest}"


def prepare_recovery(directory: Path, from_beginning: bool) -> bool:
    """Create and initialise the recovery directory when needed (`from_beginning`: start
    over, its old state deleted); whether the state is new."""
    import shutil

    from bytewax.recovery import init_db_dir

    if from_beginning and directory.exists():
        shutil.rmtree(directory)
    fresh = not directory.is_dir() or not any(directory.glob("*.sqlite3"))
    if fresh:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, 1)
    return fresh


def flow_description(settings: Any) -> str:
    """Which tiers, models and optional topics this run has on (the start line)."""
    d, t = settings.detector, settings.topics
    tiers = ["robust_z", "novelty"]
    if d.river:
        tiers.append("river")
    if d.iforest_models:
        tiers.append(f"iforest ({d.iforest_models})")
    parts = [
        f"tiers {', '.join(tiers)}; alerts from the probability of "
        f"{', '.join(d.probability_tiers)} at {d.fire_probability:g} (robust z past "
        f"{d.z_threshold:g} while they warm up)"
    ]
    parts.append(
        f"forecaster {settings.forecast.model}" if settings.forecast.enabled else "no forecaster"
    )
    optional = {
        "features": t.features,
        "feedback": t.feedback,
        "hourly": t.hourly,
        "forecasts": t.forecasts,
    }
    on = [f"{k}={v}" for k, v in optional.items() if v]
    parts.append(f"optional topics: {', '.join(on) if on else 'none'}")
    if settings.forecast.enabled and not t.forecasts:
        parts.append("(forecast alerts only: set topics.forecasts to publish the forecasts)")
    return "; ".join(parts)


def install_stop_handlers() -> list[int]:
    """Ctrl-C and SIGTERM end the flow cleanly (its inputs stop, outputs flush) instead of a
    KeyboardInterrupt inside Bytewax (a Rust panic); a second Ctrl-C stops at once."""
    from dataflows.io import STOP

    received: list[int] = []

    def handle(signum: int, _frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        STOP.set()
        print("\nnovacron-ml run: stopping (Ctrl-C again to stop at once)", file=sys.stderr)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return received


def lost_records() -> int:
    """Output records given up in this process (`novacron_output_lost_total`, all labels)."""
    from novacron_ml.core import metrics as obs

    return int(
        sum(
            s.value
            for m in obs.OUTPUT_LOST.collect()
            for s in m.samples
            if s.name.endswith("_total")
        )
    )


def run_summary(seconds: float) -> str:
    """What a run did, from the flow's own counters: events, windows, alerts by type, the
    load-residual tier's fitted windows by outcome, dead letters by reason, elapsed,
    events/s."""
    from collections import Counter

    from novacron_ml.core import metrics as obs

    def by(counter: Any, label: str) -> Counter[str]:
        out: Counter[str] = Counter()
        for m in counter.collect():
            for s in m.samples:
                if s.name.endswith("_total") and s.value:
                    out[s.labels[label]] += int(s.value)
        return out

    def listed(counts: Counter[str]) -> str:
        return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""

    events = int(obs.counter_value(obs.EVENTS))
    alerts, dead = by(obs.ALERTS, "type"), by(obs.DEAD_LETTERS, "reason")
    written, lost = by(obs.OUTPUT_RECORDS, "topic"), by(obs.OUTPUT_LOST, "topic")
    output = f"{sum(written.values()):,} records written" + (
        f", {sum(lost.values()):,} LOST{listed(lost)}" if lost else ""
    )
    load = by(obs.LOAD_RESIDUAL_WINDOWS, "outcome")
    scored = load.pop("scored", 0)
    load_tier = (  # whether the tier could fit anything (no proxy: docs/DETECTION.md item 8)
        f"load tier scored {scored:,} of {scored + sum(load.values()):,} fitted windows"
        f"{listed(load)}, "
        if scored or load
        else ""
    )
    return (
        f"{int(obs.counter_value(obs.MESSAGES)):,} messages, {events:,} events, "
        f"{int(obs.counter_value(obs.WINDOWS)):,} windows, "
        f"{sum(alerts.values()):,} alerts{listed(alerts)}, {load_tier}"
        f"{sum(dead.values()):,} dead letters{listed(dead)}, {output} in {seconds:.1f} s "
        f"({events / seconds if seconds else 0:,.0f} events/s)"
    )


def cmd_topics(args: argparse.Namespace) -> int:
    from novacron_ml.core.kafka import ensure_topics, wait_ready
    from novacron_ml.core.settings import load_settings

    settings = load_settings()
    t = settings.topics
    wait_ready(settings.kafka.bootstrap_servers, timeout_s=args.wait)
    ensure_topics(settings.kafka.bootstrap_servers, t.in_use, args.partitions)
    print(f"topics ready: {', '.join(t.in_use)}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the detect flow against Kafka (metrics -> alerts, metrics.dlq)",
        description="Run dataflows.detect against Kafka, like `python -m bytewax.run "
        "dataflows.detect:flow`, creating the topics if needed. --processes N starts a local "
        "cluster of N processes (Kafka partitions are spread over all their workers; give the "
        "metrics topic at least processes × workers partitions, and keep features.shards a "
        "multiple of processes × workers: features and detection run per shard).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-w", "--workers", type=count, default=1, help="worker threads (default 1)")
    p.add_argument(
        "-p",
        "--processes",
        type=count,
        default=1,
        help="local cluster of this many processes, each with --workers workers (default 1); "
        "process i serves metrics on --metrics-port + i",
    )
    p.add_argument("--process-id", type=int, help=argparse.SUPPRESS)  # set by --processes
    p.add_argument("--addresses", help=argparse.SUPPRESS)
    p.add_argument("--once", action="store_true", help="stop at the end of the topic (backfill)")
    p.add_argument("--from-end", action="store_true", help="start at the end of the topic")
    p.add_argument("--partitions", type=count, default=1, help="partitions for topics it creates")
    p.add_argument("--metrics-port", type=port, help="serve Prometheus metrics on this port")
    add_recovery_arguments(
        p,
        "recovery.dir, else one directory per broker and topic under "
        "~/.local/state/novacron-ml/recovery), created on first start: a restart resumes where "
        "the last run stopped",
    )
    p.add_argument("--wait", type=seconds, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("topics", help="create the flow's topics if they do not exist")
    p.add_argument("--partitions", type=int, default=1, help="partitions (default 1)")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for Kafka (60)")
    p.set_defaults(func=cmd_topics)
