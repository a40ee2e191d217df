"""How much of each (model, image) record the results file keeps: ``--results-detail full|curves|summary``.

Records are made, cached, stored for the run's processes and read by the checks in full; the results file keeps
one level of them, trimmed when it is assembled (:meth:`audit.run.session.AuditSession.results`). A record served by
the cache and one computed thus give the same file, and one cache entry serves every level.

- ``full`` (the default): what the HTML report draws and a later ``--baseline`` comparison reads, which is everything
  the run made: every map's grid, each value to 7 significant digits (within 1e-6 relative of the float32 map),
  every curve's points (9 significant digits: float32 exactly), every AUC and ABPC, the restorations and the input
  picture.
- ``curves``: the numbers without the pictures: every curve's points, every AUC and ABPC, and the grids of the gated
  maps only (a ``--baseline`` comparison computes its map agreement from them); no restoration or input picture.
- ``summary``: the per-image numbers. Class, probabilities, every AUC and ABPC, the restorations' PSNR and
  exactness; no grid, no curve point, no picture.

A field a level does not keep stays in the record as ``null``: a measured map (``morf_auc`` set) with ``morf``
null, an applicable map with ``grid`` null, a restoration with a ``shape`` and ``png`` null.

:func:`charted_maps` says which maps' curves the report charts for a run (the report reads it from here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..maps.registry import names as map_names
from ..model.layout import stage_order

__all__ = ["DETAILS", "DEFAULT_DETAIL", "GRID_DIGITS", "FLOAT32_DIGITS", "charted_maps", "check_detail", "compact",
           "trim_comparison", "trim_run"]

DETAILS = ("full", "curves", "summary")
DEFAULT_DETAIL = "full"
FLOAT32_DIGITS = 9  # significant digits that give a float32 back exactly
GRID_DIGITS = 7  # each value within 5.05e-7 of itself, relative (twice rounded: 9, then 7 digits)
PICTURE_LEVELS = ("full",)  # the levels that keep the restorations and the input picture
CURVE_KEYS = ("morf", "lerf")


def check_detail(detail: Any) -> str:
    """``detail`` when it is a level; else a one-line ``ValueError`` naming the levels."""
    if detail not in DETAILS:
        raise ValueError(f"results-detail: {detail!r} is not one of {', '.join(DETAILS)}")
    return detail


def compact(values: Any, digits: int) -> Any:
    """Numbers (nested lists of them, or one) rounded to ``digits`` significant digits; the shape, ints, bools and
    None unchanged."""
    if isinstance(values, list):
        return [compact(v, digits) for v in values]
    if isinstance(values, float):
        return float(f"{values:.{digits}g}")
    return values


def charted_maps(maps: Mapping[str, Any], gated: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The maps whose curves the report charts for one run: its gated maps (``gated``: (method, stage), stages in
    canonical form) that the run has; without any, every map but the baselines at the last measured stage.

    The report draws each of them with ``random`` at the same stage (its dashed curves).
    """
    keys = [key for key in dict.fromkeys((str(m), str(s)) for m, s in gated) if f"{key[0]}@{key[1]}" in maps]
    if keys:
        return keys
    entries = [m for m in maps.values() if isinstance(m, Mapping) and m.get("stage") is not None]
    measured = sorted({str(m["stage"]) for m in entries if m.get("morf_auc") is not None}, key=stage_order)
    stage = measured[-1] if measured else ("encoder" if any(str(k).endswith("@encoder") for k in maps) else None)
    return [(str(m.get("method")), stage) for m in entries
            if str(m["stage"]) == stage and m.get("method") not in map_names(baseline=True)]


def _trim_map(key: str, entry: Any, detail: str, gated: set[str]) -> Any:
    if not isinstance(entry, Mapping):
        return entry
    out = dict(entry)
    for name in CURVE_KEYS:
        if name in out:
            out[name] = None if detail == "summary" else compact(out[name], FLOAT32_DIGITS)
    if "grid" in out:
        kept = detail == "full" or (detail == "curves" and key in gated)
        out["grid"] = compact(out["grid"], GRID_DIGITS) if kept else None
    return out


def _trim_probe(entry: Any, detail: str) -> Any:
    """A run's record of one probe at ``detail``: the stamped picture only at the picture levels, the stamped maps'
    grids compacted, and dropped at ``summary``."""
    if not isinstance(entry, Mapping):
        return entry
    out = dict(entry)
    if detail not in PICTURE_LEVELS and "figure" in out:
        out["figure"] = None
    if isinstance(entry.get("grids"), Mapping):
        out["grids"] = {key: _trim_grid(grid, detail) for key, grid in entry["grids"].items()}
    return out


def _trim_grid(grid: Any, detail: str) -> Any:
    """A grid of a gated map (a baseline class's map, a comparison's largest drop): kept unless ``summary``."""
    return None if detail == "summary" else compact(grid, GRID_DIGITS)


def trim_run(run: Mapping[str, Any], detail: str, gated: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The part of one run record (schema ``vit-audit/1``) that the results file keeps at ``detail``; a new dict.

    Args:
        run: the record as made (:mod:`audit.run.records`), left unchanged.
        detail: ``full``, ``curves`` or ``summary``.
        gated: the run's model's gated maps as (method, stage), stages in canonical form.
    """
    check_detail(detail)
    out = dict(run)
    maps = run.get("maps")
    if isinstance(maps, Mapping):
        keys = {f"{method}@{stage}" for method, stage in gated}
        out["maps"] = {key: _trim_map(key, entry, detail, keys) for key, entry in maps.items()}
    if isinstance(run.get("baseline_class_maps"), Mapping):
        out["baseline_class_maps"] = {key: _trim_grid(grid, detail)
                                      for key, grid in run["baseline_class_maps"].items()}
    if isinstance(run.get("probes"), Mapping):
        out["probes"] = {spec: _trim_probe(entry, detail) for spec, entry in run["probes"].items()}
    if detail not in PICTURE_LEVELS:
        restorations = run.get("restorations")
        if isinstance(restorations, Mapping):
            out["restorations"] = {
                reading: {stage: ({**entry, "png": None} if isinstance(entry, Mapping) and "png" in entry else entry)
                          for stage, entry in stages.items()} if isinstance(stages, Mapping) else stages
                for reading, stages in restorations.items()}
        if isinstance(run.get("figures"), Mapping):
            out["figures"] = {name: None for name in run["figures"]}
    return out


def trim_comparison(record: Mapping[str, Any], detail: str) -> dict[str, Any]:
    """A comparison record (:func:`audit.verdicts.compare.compare_map`) at ``detail``; a new dict.

    Its pairs' curve points and its largest drops' grids (of a gated map) are kept unless ``summary``.
    """
    check_detail(detail)
    out = dict(record)
    curve_names = [f"{side}_{name}" for side in ("candidate", "baseline") for name in CURVE_KEYS]

    def pair_at_detail(pair: Mapping[str, Any]) -> dict[str, Any]:
        return {**pair, **{name: None if detail == "summary" else compact(pair[name], FLOAT32_DIGITS)
                           for name in curve_names if name in pair}}

    if isinstance(record.get("pairs"), list):
        out["pairs"] = [pair_at_detail(p) if isinstance(p, Mapping) else p for p in record["pairs"]]
    if isinstance(record.get("largest_drops"), list):
        out["largest_drops"] = [{**drop, **{name: _trim_grid(drop[name], detail)
                                            for name in ("baseline_grid", "candidate_grid") if name in drop}}
                                if isinstance(drop, Mapping) else drop for drop in record["largest_drops"]]
    return out
