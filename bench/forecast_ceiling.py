"""The served forecaster's within-5 % share per simulator metric beside the ceiling the
series' own noise allows (training/forecast_ceiling.py; docs/QUALITY.md#forecast-ceiling).

    python bench/forecast_ceiling.py [--manifest models/onnx/lstm_forecaster] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    from novacron_ml.app.console import table
    from novacron_ml.core.registry import parse_ref
    from training.forecast_ceiling import ceiling_report

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--manifest", default="models/onnx/lstm_forecaster",
                   help="the forecaster (a registry folder: its champion)")  # fmt: skip
    p.add_argument("--hours", type=float, default=12.0)
    p.add_argument("--hosts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    start = time.perf_counter()
    report = ceiling_report(parse_ref(args.manifest).manifest_path(), args.hours, args.hosts,
                            args.seed)  # fmt: skip

    def yes(v: object) -> str:
        return "-" if v is None else ("yes" if v else "NO")

    rows = [
        [m, f"{r['model']:.3f}", f"{r['served']:.3f}", f"{r['ceiling']:.3f}",
         f"{r['model_of_ceiling']:.3f}", f"{r['of_ceiling']:.3f}",
         yes(r["target_97pct_of_ceiling"]), yes(r["target_95pct_where_ceiling_99"])]
        for m, r in report["metrics"].items()
    ]  # fmt: skip
    print(f"{report['model']} on {report['data']}")
    print("within 5 %: the network alone (model), the blended forecast the flow serves, and "
          "the ceiling; targets on the served one")  # fmt: skip
    print(table(rows, ["metric", "model", "served", "ceiling", "model/ceil.", "served/ceil.",
                       ">= 97 %", ">= 0.95 (c>=.99)"]))  # fmt: skip
    print(f"{time.perf_counter() - start:.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
