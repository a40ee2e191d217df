"""Time to render the HTML report from a results file, against the audit time the results file records.

Example (docs/reference/results-and-report.md's figures for the default run)::

    pytest checks                     # writes out/vit-audit-results.json
    python benchmarks/bench_report.py out/vit-audit-results.json --repeats 3

Prints the audit's own seconds (``seconds`` in the results file), each render's wall time, their ratio (the best
render over the audit) and the report's size, for the thumbnail size and size limit given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from audit.reports import read_results, render_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results file written by --audit-json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thumbnail", type=int, default=64)
    parser.add_argument("--max-mb", type=float, default=5.0)
    args = parser.parse_args(argv)
    try:
        results = read_results(args.results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    audit = results.get("seconds")
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "report.html"
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            render_report(results, target, thumbnail=args.thumbnail, max_mb=args.max_mb)
            seconds.append(time.perf_counter() - start)
        size = target.stat().st_size
    runs = len(results.get("runs") or [])
    print(f"{args.results}: {runs} image records; audit {audit:.2f} s" if isinstance(audit, (int, float))
          else f"{args.results}: {runs} image records; the audit time is not recorded")
    print("render: " + ", ".join(f"{s:.3f} s" for s in seconds) + f"; report {size / 1e6:.2f} MB")
    if isinstance(audit, (int, float)) and audit > 0:
        print(f"best render / audit: {min(seconds) / audit:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
