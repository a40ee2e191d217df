"""The report's comparison with the baseline (a run audited with ``--baseline``): the baseline's facts, one verdict row
per compared map, its paired scatter, and the images whose ABPC dropped most, both models' maps side by side.

Reads the results dict's ``baseline`` and ``comparisons`` (``audit.verdicts.compare.compare_map``) leniently, like
:mod:`audit.reports.run_sections`; the maps are drawn by the report's picture builder (:mod:`audit.reports.render`),
over the input picture of the candidate's run of the same image, at the report's thumbnail size.
"""

from __future__ import annotations

from typing import Any, Protocol

from . import charts
from .run_sections import compared
from .values import as_dict, as_list, as_num, as_records, fill_text, fmt, fmt_ci

__all__ = ["comparison_section"]

LISTED = 10  # images a list of the section names; it counts the rest


class Pictures(Protocol):
    """What the section needs of the report's picture builder."""

    anchors: dict[tuple[Any, Any], str]

    def grid_picture(self, model_id: Any, image: Any, grid: Any, tag: tuple) -> tuple[dict[str, Any] | None,
                                                                                        tuple[int, int]]: ...


def _listed(values: Any) -> dict[str, Any]:
    """A list of names for the template: the first ``LISTED`` and how many more."""
    names = [str(v) for v in as_list(values)]
    return {"shown": names[:LISTED], "more": max(0, len(names) - LISTED), "count": len(names)}


def _class(name: Any, index: Any) -> str:
    return f"{name} ({index})" if name is not None else f"class {index}"


def _known(record: dict[str, Any], key: str) -> Any:
    """A field for a sentence: ``n/a`` when missing or null."""
    value = record.get(key)
    return "n/a" if value is None else value


def _recipe(recipe: dict[str, Any]) -> str:
    """The baseline's recipe in words (it is the run's: a baseline with another recipe is refused)."""
    if not recipe:
        return "not recorded"
    amp = recipe.get("amp")
    return (f"{_known(recipe, 'steps')} steps, {_known(recipe, 'unit')} unit, fill {fill_text(recipe.get('fill'))}, "
            f"interpolation {_known(recipe, 'interpolation')}, {'float32' if not amp else f'autocast {amp}'}, "
            f"activation {_known(recipe, 'act')}, seed {_known(recipe, 'seed')}")


def _facts(baseline: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": baseline.get("model") or "n/a", "model_id": baseline.get("model_id") or "n/a",
        "checkpoint": baseline.get("checkpoint"), "checkpoint_sha256": baseline.get("checkpoint_sha256"),
        "source": baseline.get("source"), "sha256": baseline.get("sha256"), "schema": baseline.get("schema"),
        "created": baseline.get("created"), "recipe": _recipe(as_dict(baseline.get("recipe"))),
        "images": baseline.get("images") if isinstance(baseline.get("images"), int) else "n/a",
        "only_in_baseline": _listed(baseline.get("images_only_in_baseline")),
        "only_in_candidate": _listed(baseline.get("images_only_in_candidate")),
        "without_sha256": _listed(baseline.get("images_without_sha256")),
    }


def _drift(drift: dict[str, Any]) -> dict[str, Any]:
    verdict = str(drift.get("verdict") or "unknown")
    top1 = as_num(drift.get("top1_agreement"))
    changed = []
    for item in as_records(drift, "class_changed"):
        changed.append({"image": str(item.get("image")),
                        "text": (f"{_class(item.get('baseline_class_name'), item.get('baseline_class'))} → "
                                 f"{_class(item.get('candidate_class_name'), item.get('candidate_class'))}")})
    return {
        "statistic": fmt(drift.get("statistic"), 3, True), "ci": fmt_ci(drift.get("ci95"), 3, True),
        "verdict": verdict, "badge": verdict.replace(" ", "-"), "reason": drift.get("reason"),
        "threshold": fmt(drift.get("threshold"), 3, True), "n_images": drift.get("n_images"),
        "not_ranked": _listed(drift.get("not_ranked")),
        "top1": "n/a" if top1 is None else f"{100 * top1:.0f}%",
        "changed": changed[:LISTED], "changed_more": max(0, len(changed) - LISTED), "changed_count": len(changed),
    }


def _curves(pair: dict[str, Any]) -> charts.Chart | None:
    lines: list[tuple[str, Any, str, str | None]]
    lines = [(f"candidate {name}, AUC {fmt(pair.get(f'candidate_{order}_auc'))}", pair.get(f"candidate_{order}"),
              colour, None) for order, name, colour in (("morf", "MoRF", charts.MORF), ("lerf", "LeRF", charts.LERF))]
    lines += [(f"baseline {name}, AUC {fmt(pair.get(f'baseline_{order}_auc'))}", pair.get(f"baseline_{order}"),
               colour, "4 3") for order, name, colour in (("morf", "MoRF", charts.MORF), ("lerf", "LeRF", charts.LERF))]
    lines = [(label, [as_num(v) for v in values], colour, dash) for label, values, colour, dash in lines
             if isinstance(values, list) and values]
    if not lines:
        return None
    return charts.curves_chart(f"MoRF/LeRF of {pair.get('image')}: candidate solid, baseline dashed", lines)


def _drop(number: int, record: dict[str, Any], drop: dict[str, Any], pair: dict[str, Any],
          builder: Pictures) -> dict[str, Any]:
    image = drop.get("image")
    model_id = record.get("model_id")
    pictures = {}
    box = (32, 32)
    for side in ("baseline", "candidate"):
        grid = drop.get(f"{side}_grid")
        picture, box = builder.grid_picture(model_id, image, grid, ("comparison", number, str(image), side))
        pictures[side] = {"picture": picture, "note": "not available" if grid is None else "could not be drawn"}
    same = pair.get("baseline_class") == pair.get("candidate_class")
    return {
        "image": str(image), "anchor": builder.anchors.get((model_id, image)),
        "d": fmt(drop.get("d"), 3, True), "candidate_abpc": fmt(drop.get("candidate_abpc"), 3, True),
        "baseline_abpc": fmt(drop.get("baseline_abpc"), 3, True),
        "baseline": pictures["baseline"], "candidate": pictures["candidate"],
        "box": {"width": box[0], "height": box[1]},
        "baseline_class": _class(pair.get("baseline_class_name"), pair.get("baseline_class")) if pair else None,
        "candidate_class": _class(pair.get("candidate_class_name"), pair.get("candidate_class")) if pair else None,
        "class_changed": bool(pair) and not same, "chart": _curves(pair) if pair else None,
    }


def _difference(record: dict[str, Any], name: str) -> str:
    return f"{fmt(record.get(name), 3, True)} {fmt_ci(record.get(f'{name}_ci95'), 3, True)}"


def _row(number: int, record: dict[str, Any], builder: Pictures) -> dict[str, Any]:
    method, stage = record.get("method"), record.get("stage")
    base_stage = record.get("baseline_stage")
    key = f"{method}@{stage}"
    pairs = as_records(record, "pairs")
    by_image = {p.get("image"): p for p in pairs}
    margin = as_num(record.get("margin"))
    points = []
    for p in pairs:
        points.append((as_num(p.get("baseline_abpc")), as_num(p.get("candidate_abpc")),
                       f"{p.get('image')}: baseline ABPC {fmt(p.get('baseline_abpc'), 3, True)}, candidate ABPC "
                       f"{fmt(p.get('candidate_abpc'), 3, True)}, d {fmt(p.get('d'), 3, True)}"))
    model = record.get("model_id") or record.get("model")
    unpaired = [{"image": str(k), "reason": str(v)} for k, v in as_dict(record.get("unpaired_images")).items()]
    return {
        "anchor": f"comparison-{number}", "model": model, "model_name": record.get("model"),
        "baseline_model": record.get("baseline_model"), "key": key,
        "baseline_key": f"{method}@{base_stage}" if base_stage is not None and str(base_stage) != str(stage) else None,
        "n_pairs": record.get("n_pairs") if record.get("n_pairs") is not None else len(pairs),
        "statistic": fmt(record.get("statistic"), 3, True), "ci": fmt_ci(record.get("ci95"), 3, True),
        "margin": fmt(margin, 3), "candidate_abpc": fmt(record.get("candidate_abpc"), 3, True),
        "baseline_abpc": fmt(record.get("baseline_abpc"), 3, True),
        "verdict": str(record.get("verdict") or "unknown"), "reason": record.get("reason"), "rule": record.get("rule"),
        "morf": _difference(record, "morf_auc_difference"), "lerf": _difference(record, "lerf_auc_difference"),
        "drift": _drift(as_dict(record.get("drift"))),
        "unpaired": unpaired[:LISTED], "unpaired_more": max(0, len(unpaired) - LISTED),
        "chart": charts.paired_chart(f"paired ABPC of {key} ({model}): candidate against baseline, one point per "
                                     "image", points, margin),
        "points": sum(1 for x, y, _ in points if x is not None and y is not None),
        "seed": _known(record, "seed"), "n_boot": _known(record, "n_boot"),
        "drops": [_drop(number, record, drop, as_dict(by_image.get(drop.get("image"))), builder)
                  for drop in as_records(record, "largest_drops")],
    }


def comparison_section(results: dict[str, Any], builder: Pictures) -> dict[str, Any] | None:
    """The section's context, or None when the run was not compared with a baseline (no section, no link)."""
    if not compared(results):
        return None
    rows = [_row(i, record, builder) for i, record in enumerate(as_records(results, "comparisons"))]
    return {"facts": _facts(as_dict(results.get("baseline"))), "rows": rows}
