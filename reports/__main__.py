"""Render the HTML report again from a results file, without auditing anything.

    python -m audit.reports RESULTS.json REPORT.html [--thumbnail PX] [--max-mb MB]

For another thumbnail size or size limit than the run used, or a report of a run that wrote only ``--audit-json``.
Exit status 0 when the report is written, 2 on an unreadable results file or a bad option.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .render import read_results, render_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.reports", description=__doc__.strip().splitlines()[0])
    parser.add_argument("results", type=Path, help="a results file written with --audit-json")
    parser.add_argument("report", type=Path, help="where to write the HTML report")
    parser.add_argument("--thumbnail", type=int, default=64, help="longer side of the thumbnails in px (default 64)")
    parser.add_argument("--max-mb", type=float, default=5.0, help="size limit of the report in MB (default 5)")
    args = parser.parse_args(argv)
    try:
        results = read_results(args.results)
        start = time.perf_counter()
        path = render_report(results, args.report, thumbnail=args.thumbnail, max_mb=args.max_mb)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: report {str(args.report)!r} could not be written ({err}); choose a writable path",
              file=sys.stderr)
        return 2
    print(f"report: {path} ({time.perf_counter() - start:.1f} s to render)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
