"""What the command modules share: time arguments, the simulated fleet's arguments, the hint
for commands that need the `train` extra."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from novacron_ml.core.schema import parse_rfc3339_ms

T = TypeVar("T")

if TYPE_CHECKING:
    from novacron_ml.core.simulator import FleetConfig

EPILOG = """\
settings: every option of the flow is a typed setting read from NOVACRON_* environment
variables and an optional TOML file (NOVACRON_CONFIG, default ./novacron.toml); see
`novacron-ml settings` and the README. Kafka: KAFKA_BOOTSTRAP_SERVERS or
NOVACRON_KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092; scripts/kafka.sh starts one).

exit codes: 0 done; 1 failed during the work (Kafka unreachable, a stage failed); 2 bad
usage or input (arguments, settings, files); 130 stopped by Ctrl-C or SIGTERM.
"""


def count(text: str) -> int:
    """A flag that counts something: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def port(text: str) -> int:
    """A TCP port, 1-65535."""
    value = count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    return _number(text, allow_zero=False)


def rate(text: str) -> float:
    """A finite number, 0 or more (0: unlimited)."""
    return _number(text, allow_zero=True)


def _number(text: str, *, allow_zero: bool) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"{text} is not a {'non-negative' if allow_zero else 'positive'} finite number"
        )
    return value


def replay_args(p: argparse.ArgumentParser, title: str, topic_help: str) -> None:
    """`--kafka-topic`, `--from`, `--to`: a training command's Kafka replay range."""
    g = p.add_argument_group(title)
    g.add_argument("--kafka-topic", help=topic_help)
    g.add_argument(
        "--from", dest="from_ms", type=parse_time, help="replay start: RFC 3339, epoch ms, now-7d"
    )
    g.add_argument("--to", dest="to_ms", type=parse_time, help="replay end, inclusive (now)")


def replayed(args: argparse.Namespace, command: str, read: Callable[[], T]) -> T | None:
    """`read()` over the --kafka-topic range (--to defaults to now), or None after one line on
    stderr: --from missing, the topic missing, an inverted range, the broker's error."""
    from confluent_kafka import KafkaException

    from novacron_ml.core.kafka import ReplayError

    if args.from_ms is None:
        print(f"novacron-ml {command}: --kafka-topic needs --from", file=sys.stderr)
        return None
    if args.to_ms is None:
        args.to_ms = int(time.time() * 1000)
    try:
        return read()
    except (ReplayError, KafkaException) as exc:
        print(f"novacron-ml {command}: {exc}", file=sys.stderr)
        return None


def parse_time(text: str) -> int:
    """RFC 3339, epoch milliseconds, or 'now-6h' style offsets to epoch ms."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("now"):
        rest = text[3:]
        if not rest:
            return int(time.time() * 1000)
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        sign = -1 if rest[0] == "-" else 1
        amount, unit = rest[1:-1], rest[-1]
        if rest[0] not in "+-" or unit not in units or not amount.replace(".", "").isdigit():
            raise argparse.ArgumentTypeError(f"bad relative time {text!r} (try now-6h)")
        return int((time.time() + sign * float(amount) * units[unit]) * 1000)
    try:
        return parse_rfc3339_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad time {text!r}: {exc}") from exc


def fleet_args(p: argparse.ArgumentParser, hours: float) -> None:
    g = p.add_argument_group("simulated fleet")
    g.add_argument("--hosts", type=int, default=12, help="hosts (default 12)")
    g.add_argument("--clusters", type=int, default=3, help="clusters (default 3)")
    g.add_argument(
        "--hours", type=float, default=hours, help=f"simulated hours (default {hours:g})"
    )
    g.add_argument("--step", type=float, default=5.0, help="seconds between samples (default 5)")
    g.add_argument("--seed", type=int, default=7, help="random seed; same seed, same data")
    g.add_argument(
        "--start",
        type=parse_time,
        default=None,
        help="first sample time: RFC 3339, epoch ms or now-6h (default: data ends now)",
    )
    g.add_argument(
        "--anomaly-rate",
        type=float,
        default=0.5,
        help="rate of injected anomalies per host and hour (default 0.5): after the first "
        "hour (the series' warm-up, none there) each host waits an exponential gap of mean "
        "1/rate plus a minimum gap after every anomaly, so fewer occur than rate x hours; "
        "the start line says how many",
    )
    g.add_argument(
        "--difficulty",
        choices=["default", "hard"],
        default="default",
        help="injected anomalies: default (large steps on the type's metrics) or hard "
        "(1.5-3 noise widths; level shifts, gradual onsets, variance changes, stopped daily "
        "cycles; several metrics per fault, a root metric first)",
    )
    g.add_argument(
        "--format",
        choices=["json", "json-array", "line"],
        default="json",
        help="wire format: JSON object per message, JSON array per host and tick, "
        "or InfluxDB line protocol (default json)",
    )
    g.add_argument(
        "--bad-rate",
        type=float,
        default=0.001,
        help="fraction of extra malformed messages mixed in (default 0.001)",
    )


def fleet_config(args: argparse.Namespace) -> FleetConfig:
    from novacron_ml.core.simulator import FleetConfig

    return FleetConfig(
        hosts=args.hosts,
        clusters=args.clusters,
        step_s=args.step,
        duration_s=args.hours * 3600,
        start_ms=args.start,
        seed=args.seed,
        anomalies_per_host_per_hour=args.anomaly_rate,
        difficulty=getattr(args, "difficulty", "default"),
    )


TRAIN_HINT = "this command needs the train extra: pip install -e '.[train]'"


def require_train_extra(*modules: str) -> None:
    """Import the `train` extra's `modules` (e.g. 'torch'), or fail with one line that says
    how to install them: the streaming runtime installs without them."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise RuntimeError(f"{TRAIN_HINT} ({exc})") from None


def csv_series_args(p: argparse.ArgumentParser) -> None:
    """The arguments naming series in CSV files (capacity backtest, forecast-eval)."""
    p.add_argument("--csv", nargs="+", required=True, type=Path, metavar="FILE")
    p.add_argument("--time-column", help="timestamps or seconds offsets (omit: use --step-s)")
    p.add_argument(
        "--value-column", action="append", required=True, help="value column (repeatable)"
    )
    p.add_argument("--horizon", type=int, required=True, help="forecast steps")
    p.add_argument("--json", required=True, help="write the results here")
    p.add_argument("--step-s", type=float, help="seconds between rows without a time column")


KAFKA_WAIT_S = 15.0
"""How long the consuming commands wait for an unreachable broker before one line and exit 1."""


def writes(p: argparse.ArgumentParser, *names: str) -> None:
    """Declare the arguments that name output files or directories: the command refuses to
    overwrite an existing one (a non-empty directory) unless `--force` is given."""
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(outputs=names)


def check_outputs(args: argparse.Namespace) -> None:
    """FileExistsError (exit 2) for the first declared output that exists, before any work."""
    if getattr(args, "force", False):
        return
    for name in getattr(args, "outputs", ()):
        value = getattr(args, name, None)
        if not value:
            continue
        path = Path(value)
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            raise FileExistsError(path)


class Bar:
    """tqdm's bar on a terminal, `Progress`' plain lines otherwise (the few calls the CLI's
    bars use: update, total, n, set_postfix, close)."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.n = 0
        self.total = total
        self._tqdm = None
        self._plain: Any = None
        if sys.stderr.isatty():  # the train extra's tqdm: only where it is installed
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
        else:
            from novacron_ml.app.console import Progress

            self._plain = Progress(desc, total, unit=unit)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self._tqdm is not None:
            self._tqdm.total = self.total
            self._tqdm.update(k)
        elif self._plain is not None:
            self._plain.total = self.total
            self._plain.update(self.n)

    def set_postfix(self, **values: object) -> None:
        if self._tqdm is not None:
            self._tqdm.set_postfix(**values)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._plain is not None:
            self._plain.close()
