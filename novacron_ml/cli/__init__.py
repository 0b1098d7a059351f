"""The `novacron-ml` command line: one module per command group, each with `register(sub)`.

Adding a command: a module in this package with its `cmd_*` functions and a `register`
that adds its sub-parsers (each `set_defaults(func=...)`), then one line in `COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys

from pydantic import ValidationError

from novacron_ml import __version__
from novacron_ml.cli.common import EPILOG, TRAIN_HINT, check_outputs

COMMAND_GROUPS = (
    "demo",
    "run",
    "produce",
    "nab",
    "replay",
    "alerts",
    "capacity",
    "forecast",
    "iforest",
    "tune",
    "models",
    "train",
    "settings",
)
"""Modules of this package, in `--help` order; each is imported only to add its parsers
(its heavy imports are inside its commands, so `--help` stays fast)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="novacron-ml",
        description="Streaming ML for distributed infrastructure: Bytewax dataflows over Kafka "
        "that watch a fleet's metrics and publish alerts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"novacron-ml {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print the Kafka client's own log lines (always written to "
        "observability.client_log, default /tmp/novacron-ml-kafka.log)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_GROUPS:
        importlib.import_module(f"novacron_ml.cli.{name}").register(sub)
    return parser


def _terminated(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def settings_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting: its dotted name, the environment variable that sets it
    (for a `group.field`), and what is wrong, without pydantic's links."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = ".".join(loc) or "settings"
        env = f" (NOVACRON_{'_'.join(loc).upper()})" if len(loc) == 2 else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        shown = error.get("input")
        got = f", got {shown!r}" if isinstance(shown, str | int | float) else ""
        lines.append(f"{name}{env}: {message}{got}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Exit codes (EXIT_CODES): 0 done, 1 failed during the work, 2 bad usage or input,
    130 stopped by Ctrl-C or SIGTERM."""
    from confluent_kafka import KafkaException

    from novacron_ml.core.kafka import client_log_path, log_client_lines

    parser = build_parser()
    args = parser.parse_args(argv)
    args.invocation = "novacron-ml " + shlex.join(sys.argv[1:] if argv is None else argv)
    log_client_lines(verbose=args.verbose)
    signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: clean up, say so, exit 130
    try:
        check_outputs(args)
        return int(args.func(args))
    except ValidationError as exc:
        for line in settings_errors(exc):
            print(f"novacron-ml: invalid setting {line}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(
            f"novacron-ml: {exc.args[0]} exists: pass --force to overwrite it, or name another",
            file=sys.stderr,
        )
        return 2
    except FileNotFoundError as exc:
        print(f"novacron-ml: no such file: {exc.filename or exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"novacron-ml: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, ConnectionError, KafkaException) as exc:
        print(f"novacron-ml: {exc} (Kafka client log: {client_log_path()})", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # a command of the train extra on the runtime install
        print(f"novacron-ml: {exc.name} is not installed: {TRAIN_HINT}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"novacron-ml: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("novacron-ml: interrupted", file=sys.stderr)
        return 130
