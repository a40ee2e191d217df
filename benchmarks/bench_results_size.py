"""Bytes per (model, image) record of the results file at each ``--results-detail`` level, and what takes them.

Example (docs/reference/results-and-report.md's table)::

    pytest checks --model vit_tiny_patch16_224.augreg_in21k_ft_in1k --checkpoint vit_tiny.safetensors \\
        --images a.JPEG --images b.JPEG --images c.JPEG --layers all --results-detail full --audit-json full.json
    python benchmarks/bench_results_size.py full.json

Reads a results file written at ``full`` and trims each run record exactly as the results file of a run at each level is
assembled (:func:`audit.results.detail.trim_run`, with the run's gates), then measures the records as they are written
(strict JSON without the optional spaces). Prints, per level, the mean size of a record in MB with its range, and the
rest of the file (models, gates, summaries, checks: per run, not per image); then what a ``full`` record holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from audit.model.layout import normalize_stage
from audit.reports import read_results
from audit.results.detail import DETAILS, trim_run

MB = 1_000_000


def _size(value: Any) -> int:
    return len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())


def _gates(results: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Model id -> its gated (method, stage), stages in canonical form (the policy's, as the run planned them)."""
    written = [str(g).partition("@") for g in (results.get("policy") or {}).get("gate") or []]
    return {model.get("id"): [(method, normalize_stage(stage, int(model.get("depth") or 0)))
                              for method, _, stage in written]
            for model in results.get("models") or [] if not model.get("error")}


def _parts(run: dict[str, Any]) -> dict[str, int]:
    """Bytes of a record's parts: grids, curve points, restoration pictures, the input picture, the rest."""
    maps = [m for m in (run.get("maps") or {}).values() if isinstance(m, dict)]
    grids = sum(_size(m.get("grid")) for m in maps)
    curves = sum(_size(m.get("morf")) + _size(m.get("lerf")) for m in maps)
    pictures = sum(_size(entry.get("png")) for stages in (run.get("restorations") or {}).values()
                   for entry in stages.values() if isinstance(entry, dict))
    figure = _size((run.get("figures") or {}).get("input"))
    return {"map grids": grids, "curve points": curves, "restoration pictures": pictures, "input picture": figure,
            "the rest": _size(run) - grids - curves - pictures - figure}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a results file written with --results-detail full")
    args = parser.parse_args(argv)
    try:
        results = read_results(args.results)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    detail = (results.get("settings") or {}).get("results_detail", "full")
    if detail != "full":
        print(f"error: {str(args.results)!r} was written with --results-detail {detail}; measure a file written with "
              "--results-detail full", file=sys.stderr)
        return 2
    gates = _gates(results)
    runs = [r for r in results.get("runs") or [] if isinstance(r, dict) and not r.get("error")]
    if not runs:
        print(f"error: {str(args.results)!r} holds no audited image", file=sys.stderr)
        return 2
    rest = _size({k: v for k, v in results.items() if k != "runs"})
    print(f"{args.results}: {len(runs)} (model, image) records; the rest of the file {rest / MB:.3f} MB")
    print("| level | MB per (model, image): mean [min, max] |\n| --- | --- |")
    for level in DETAILS:
        sizes = [_size(trim_run(run, level, gates.get(run.get("model_id"), []))) for run in runs]
        print(f"| `{level}` | {sum(sizes) / len(sizes) / MB:.3f} [{min(sizes) / MB:.3f}, {max(sizes) / MB:.3f}] |")
    totals: dict[str, int] = {}
    for run in runs:
        for part, size in _parts(trim_run(run, "full", gates.get(run.get("model_id"), []))).items():
            totals[part] = totals.get(part, 0) + size
    whole = sum(totals.values())
    print("a full record holds: " + ", ".join(f"{part} {size / len(runs) / MB:.3f} MB ({size / whole:.0%})"
                                              for part, size in totals.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
