"""`novacron-ml settings`: the effective settings or their JSON schema."""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_settings(args: argparse.Namespace) -> int:
    from novacron_ml.core.settings import Settings, load_settings, redacted

    if args.table:
        from novacron_ml.core.settings import settings_table

        print(settings_table(), end="")
    elif args.schema:
        print(json.dumps(Settings.model_json_schema(), indent=2))
    else:
        print(json.dumps(redacted(load_settings()), indent=2))  # secrets as ***
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("settings", help="print the effective settings (or their JSON schema)")
    p.add_argument("--schema", action="store_true", help="print the JSON schema with descriptions")
    p.add_argument(
        "--table", action="store_true", help="print every setting as a Markdown table (README)"
    )
    p.set_defaults(func=cmd_settings)
