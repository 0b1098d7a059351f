"""`novacron-ml models list | show | promote | rollback | diff`: the model registry
(models/onnx, docs/REGISTRY.md). Runtime only: no train extra."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _time(text: str) -> int:
    from novacron_ml.cli.common import parse_time

    return parse_time(text)


def _folder(args: argparse.Namespace) -> Path:
    from novacron_ml.core.manifest import resolve_model_path

    root = resolve_model_path(args.registry)
    folder = root / args.name
    if not (folder / "aliases.json").is_file():
        from novacron_ml.core import registry

        known = ", ".join(p.name for p in registry.models(root)) if root.is_dir() else "none"
        raise ValueError(f"no model {args.name!r} in {root} (models: {known})")
    return folder


def cmd_list(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import table
    from novacron_ml.app.models import LIST_HEADER, list_rows
    from novacron_ml.core.manifest import resolve_model_path

    root = resolve_model_path(args.registry)
    rows = list_rows(root)
    if args.json:
        print(json.dumps([dict(zip(LIST_HEADER, r, strict=True)) for r in rows], indent=2))
    else:
        print(table(rows, LIST_HEADER))
        print(f"\n{len(rows)} models in {root}; served: each model's champion")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import msgspec

    from novacron_ml.core import registry

    folder = _folder(args)
    manifest = registry.manifest_of(folder, args.version)
    data: dict[str, Any] = msgspec.to_builtins(manifest)
    if not args.golden:
        data.pop("golden", None)
    aliases = registry.read_aliases(folder)
    data["aliases"] = [a for a in registry.ALIASES if aliases.get(a) == manifest.version]
    print(json.dumps(data, indent=2))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from novacron_ml.app.models import promote_checked

    folder = _folder(args)
    old, new = promote_checked(folder, args.version)
    print(
        f"{args.name}: champion {old or '-'} -> {new} (checked: sha256, shapes, golden parity); "
        f"running flows swap at their next registry poll (models.poll_s); "
        f"`novacron-ml models rollback {args.name}` goes back"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from novacron_ml.core import registry

    folder = _folder(args)
    old, new = registry.rollback(folder)
    print(
        f"{args.name}: champion {old} -> {new}; running flows still hold {new} loaded and "
        "swap back at their next registry poll"
    )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from novacron_ml.app.console import table
    from novacron_ml.app.models import diff_rows
    from novacron_ml.core import registry

    folder = _folder(args)
    a = registry.manifest_of(folder, args.a)
    b = registry.manifest_of(folder, args.b)
    rows = diff_rows(a, b)
    if not rows:
        print(f"{args.name}: versions {a.version} and {b.version} have identical manifests")
        return 0
    print(table(rows, ["field", f"version {a.version}", f"version {b.version}"]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from novacron_ml.cli.common import require_train_extra

    require_train_extra("pandas")
    from novacron_ml.app.console import table
    from novacron_ml.core import registry
    from training.compare import compare

    folder = _folder(args)
    champion = registry.version_manifest(folder, registry.resolve_version(folder, "champion"))
    target = args.challenger or registry.read_aliases(folder).get("challenger")
    if not isinstance(target, str):
        raise ValueError(f"{args.name}: no challenger to compare; name a version")
    challenger = registry.version_manifest(folder, target)
    if args.live:
        result = _live(args, registry.manifest_of(folder).kind, folder.name)
        if result.challenger != target or result.champion != registry.resolve_version(
            folder, "champion"
        ):
            raise ValueError(
                f"the shadow topic scored {result.model}@{result.challenger} against "
                f"@{result.champion}; the registry's challenger is {target}: not comparable"
            )
    else:
        kw = {k: v for k, v in (("hours", args.hours), ("hosts", args.hosts),
                                ("seed", args.seed)) if v is not None}  # fmt: skip
        result = compare(champion, challenger, **kw)
    rows = [
        [f"champion {result.champion}", f"{result.champion_score:.4f}"],
        [f"challenger {result.challenger}", f"{result.challenger_score:.4f}"],
    ]
    print(table(rows, ["version", result.metric]))
    print("test: " + result.test)
    print("      " + ", ".join(f"{k} {v:.4g}" for k, v in result.statistic.items()))
    print(result.verdict())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"report: {args.json}")
    if not args.promote:
        return 0
    if not result.better:
        print(f"{args.name}: not promoted; {target} stays the challenger")
        return 1
    from novacron_ml.app.models import promote_checked

    old, new = promote_checked(folder, target)
    print(f"{args.name}: champion {old or '-'} -> {new}")
    return 0


def _live(args: argparse.Namespace, kind: str, name: str) -> Any:
    """The shadow-scored challenger against the champion on the fleet's own traffic."""
    import time

    from novacron_ml.cli.common import parse_time
    from novacron_ml.core.settings import load_settings
    from training.compare import compare_forests_live, compare_live

    settings = load_settings()
    t = settings.topics
    to_ms = args.to_ms if args.to_ms is not None else int(time.time() * 1000)
    from_ms = args.from_ms if args.from_ms is not None else parse_time("now-1d")
    bootstrap = settings.kafka.bootstrap_servers
    if kind == "isolation_forest":
        if not t.feedback:
            raise ValueError("--live for a forest needs topics.feedback (operators' verdicts)")
        shadow = t.scores_shadow or "metrics.scores.shadow"
        return compare_forests_live(bootstrap, name, shadow, t.alerts, t.feedback, from_ms,
                                    to_ms)  # fmt: skip
    if kind != "lstm_forecaster":
        raise ValueError(f"{name}: no live comparison for {kind} (tune eval compares policies)")
    shadow = t.forecasts_shadow or "metrics.forecasts.shadow"
    if not t.forecasts:
        raise ValueError("--live needs topics.forecasts (the champion's forecasts) set")
    return compare_live(bootstrap, t.metrics, t.forecasts, shadow, from_ms, to_ms)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="the model registry: list, show, promote, rollback, diff (models/onnx)",
        description="Each model is a folder of immutable versions with aliases (champion: "
        "served; challenger: the latest training run's candidate). Flows follow the "
        "champion and swap a promoted version in between batches after checking it "
        "(docs/REGISTRY.md).",
    )
    p.add_argument("--registry", default="models/onnx", help="registry directory (models/onnx)")
    ms = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = ms.add_parser("list", help="every model: versions, aliases, quality")
    q.add_argument("--json", action="store_true", help="JSON instead of a table")
    q.set_defaults(func=cmd_list)
    q = ms.add_parser("show", help="one version's manifest (JSON)")
    q.add_argument("name")
    q.add_argument("version", nargs="?", default="champion", help="version or alias (champion)")
    q.add_argument("--golden", action="store_true", help="include the golden record")
    q.set_defaults(func=cmd_show)
    q = ms.add_parser(
        "promote",
        help="make a version (default: the challenger) the champion, after the serving checks",
    )
    q.add_argument("name")
    q.add_argument("version", nargs="?", help="version (default: the challenger)")
    q.set_defaults(func=cmd_promote)
    q = ms.add_parser("rollback", help="move the champion back to the one before it")
    q.add_argument("name")
    q.set_defaults(func=cmd_rollback)
    q = ms.add_parser("diff", help="the manifest fields that differ between two versions")
    q.add_argument("name")
    q.add_argument("a", help="version or alias")
    q.add_argument("b", help="version or alias")
    q.set_defaults(func=cmd_diff)
    q = ms.add_parser(
        "compare",
        help="champion vs challenger on a held-out stretch with a stated test (train extra)",
        description="Score both versions on a fresh simulated stretch neither was trained on: "
        "forecasters by MASE per series (one-sided sign test, alpha 0.05), Isolation Forests "
        "by ROC AUC (paired bootstrap: 5th percentile of the difference > 0). With --promote "
        "the challenger becomes the champion only if it passed (exit 1 otherwise).",
    )
    q.add_argument("name")
    q.add_argument("challenger", nargs="?", help="version (default: the challenger)")
    q.add_argument("--promote", action="store_true", help="promote it if it passed")
    q.add_argument("--hours", type=float, help="held-out hours (forecaster 12, forests 6)")
    q.add_argument("--hosts", type=int, help="simulated hosts (4)")
    q.add_argument("--seed", type=int, help="simulator seed (11)")
    q.add_argument(
        "--live",
        action="store_true",
        help="compare on the fleet's own traffic instead: forecasters by the forecasts the "
        "champion and the shadow-scored challenger published (topics.forecasts, "
        "topics.forecasts_shadow) against the metrics topic's window means; forests by "
        "both forests' scores (topics.scores_shadow) of the alerts operators confirmed or "
        "rejected (topics.feedback; at least 5 of each)",
    )
    q.add_argument("--from", dest="from_ms", type=_time, help="--live: start (now-1d)")
    q.add_argument("--to", dest="to_ms", type=_time, help="--live: end (now)")
    q.add_argument("--json", type=Path, help="write the comparison here")
    q.set_defaults(func=cmd_compare)
