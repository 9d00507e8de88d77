"""A what-if study: 8 H100 vs 16 A100 vs 8 H200 for Llama 3.1 70B chat serving as the request
rate grows; writes a CSV and the TTFT-vs-TPOT figure embedded in the README.

    python3 examples/whatif_study.py [--out docs]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from planner.plots import plot_ttft_tpot
from planner.whatif import what_if


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = what_if("llama-3.1-70b", ["8xH100-SXM", "16xA100-SXM-80GB", "8xH200-SXM"], workload="chat",
                      vary={"rate": [1.0, 2.0, 4.0, 8.0]}, jobs=2)
    with (out / "whatif_llama70b_chat.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    plot_ttft_tpot(records, str(out / "whatif_llama70b_chat.png"),
                   "Llama 3.1 70B chat: TTFT vs TPOT at 1-8 requests/s")
    for r in records:
        print(f"{r['cluster']:18} rate {r['rate']:4} {r.get('layout')}: TTFT {r['ttft_s'] * 1e3:7.1f} ms, "
              f"TPOT {r['tpot_s'] * 1e3:6.2f} ms" if r["ok"] else f"{r['cluster']:18} rate {r['rate']}: {r['reason']}")


if __name__ == "__main__":
    main()
