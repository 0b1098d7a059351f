"""`novacron-ml train all`: retrain every model of the registry with the command its champion
was made by, register each result as a challenger and, with --promote, serve the ones that
pass `models compare` (docs/runbooks/model-retraining.md). Needs the `train` extra."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

GROUPS = {"forecast-train": "forecaster", "iforest-train": "iforest", "tune-train": "tuning"}


def plan(
    root: Path, only: list[str] | None, kafka: list[str], features: list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """(group, argv) per distinct producing command of the champions, `--out` the registry;
    with `kafka` the forecaster's flags that train on the fleet's own metrics, with
    `features` the forests' flags that train on the fleet's own feature windows."""
    from novacron_ml.core import registry

    seen: dict[str, tuple[str, list[str]]] = {}
    for folder in registry.models(root):
        command = registry.manifest_of(folder).command
        argv = shlex.split(command)[1:]  # drop "novacron-ml"
        if not argv or argv[0] not in GROUPS:
            raise ValueError(f"{folder.name}: its champion was made by {command!r}, not rerunnable")
        group = GROUPS[argv[0]]
        if only and group not in only:
            continue
        argv = [*_without(argv, "--out"), "--out", str(root)]
        if group == "forecaster" and kafka:
            argv = [*_without(argv, "--sim-hours"), "--sim-hours", "0", *kafka]
        if group == "iforest" and features:
            for flag in ("--kafka-topic", "--from", "--to"):
                argv = _without(argv, flag)
            argv = [*argv, *features]
        seen.setdefault(" ".join(argv), (group, argv))
    return list(seen.values())


def _without(argv: list[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def cmd_train_all(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import table
    from novacron_ml.cli import main
    from novacron_ml.core import registry
    from novacron_ml.core.manifest import resolve_model_path

    root = resolve_model_path(args.out)
    kafka = []
    if args.kafka_topic:
        kafka = ["--kafka-topic", args.kafka_topic, "--from", args.from_]
    features = []
    if args.features_topic:
        features = ["--kafka-topic", args.features_topic, "--from", args.from_]
    steps = plan(root, args.only, kafka, features)
    if args.dry_run:
        for group, argv in steps:
            print(f"[{group}] novacron-ml {shlex.join(argv)}")
        return 0
    before = {f.name: registry.versions(f) for f in registry.models(root)}
    rows: list[list[str]] = []
    failed = 0
    for i, (group, argv) in enumerate(steps, 1):
        print(f"[{i}/{len(steps)}] {group}: novacron-ml {shlex.join(argv)}", file=sys.stderr)
        start = time.monotonic()
        rc = main(argv)
        took = f"{time.monotonic() - start:.0f} s"
        if rc != 0:
            failed += 1
            rows.append([group, "-", "-", f"failed (exit {rc})", took])
            continue
        for folder in registry.models(root):
            new = [v for v in registry.versions(folder) if v not in before.get(folder.name, [])]
            for version in new:
                rows.append([folder.name, version, *_decide(folder, version, args), took])
    print(table(rows, ["model", "new version", "alias", "verdict", "time"]))
    return 1 if failed else 0


def _decide(folder: Path, version: str, args: argparse.Namespace) -> list[str]:
    """Compare a new challenger with the champion and, with --promote, promote it if it
    passed; (alias now, verdict)."""
    from novacron_ml.core import registry

    aliases = registry.read_aliases(folder)
    if aliases.get("champion") == version:
        return ["champion", "first version of the model"]
    if not (args.compare or args.promote):
        return ["challenger", "not compared (`novacron-ml models compare`)"]
    from training.compare import compare

    champion = registry.version_manifest(folder, registry.resolve_version(folder, "champion"))
    try:
        result = compare(champion, registry.version_manifest(folder, version))
    except ValueError as exc:
        return ["challenger", str(exc).split(";")[0]]
    figures = f"{result.metric} {result.champion_score:.4f} -> {result.challenger_score:.4f}"
    if result.better and args.promote:
        from novacron_ml.app.models import promote_checked

        promote_checked(folder, version)
        return ["champion", f"promoted: {figures}"]
    return ["challenger", f"{'better' if result.better else 'not better'}: {figures}"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="retrain the registry's models (train all), each as a challenger",
        description="Retraining, as the schedule runs it (deploy/k8s/retrain.yaml, "
        "docs/runbooks/model-retraining.md).",
    )
    ts = p.add_subparsers(dest="train_command", required=True, metavar="ACTION")
    q = ts.add_parser(
        "all",
        help="rerun every champion's producing command; register challengers; compare/promote",
        description="For each model in the registry, rerun the command its champion's manifest "
        "records (one run per distinct command: iforest-train makes every family), registering "
        "the result as a new version (the challenger). --compare scores each challenger "
        "against its champion on a held-out stretch (models compare); --promote also serves "
        "the ones that pass. Needs the train extra.",
    )
    q.add_argument("--out", default="models/onnx", help="registry directory (models/onnx)")
    q.add_argument("--only", nargs="+", choices=sorted(set(GROUPS.values())),
                   help="only these model groups")  # fmt: skip
    q.add_argument("--kafka-topic", help="forecaster: train on this metrics topic instead")
    q.add_argument("--features-topic",
                   help="Isolation Forests: train on this features topic (the detect flow's "
                   "topics.features) instead of the simulator")  # fmt: skip
    q.add_argument("--from", dest="from_", default="now-7d",
                   help="with --kafka-topic/--features-topic: the start of the replay "
                   "(now-7d)")  # fmt: skip
    q.add_argument("--compare", action="store_true", help="compare each challenger")
    q.add_argument("--promote", action="store_true", help="promote the challengers that pass")
    q.add_argument("--dry-run", action="store_true", help="print the commands only")
    q.set_defaults(func=cmd_train_all)
