"""The report's "right for the right reasons" section: where the gated maps look, and what moves the model.

Faithfulness asks whether a map describes what the model uses; this section shows whether the model uses the right
thing. It reads, leniently like :mod:`audit.reports.run_sections`, the results dict's ``regions`` (the regions gates of
:func:`audit.verdicts.reasons.region_gate`, ``paired`` with a baseline by
:func:`audit.verdicts.reasons.compare_regions`), ``probes`` (:func:`audit.verdicts.reasons.probe_limits` with the
attraction, ``paired`` by :func:`audit.verdicts.reasons.compare_probe`), ``classes``
(:func:`audit.verdicts.classes.class_agreement`), the comparisons' per-class rows
(:func:`audit.verdicts.classes.class_table`), and the runs' ``regions``, ``localisation`` and ``probes``. Four parts:

- regions: the regions gate table, and the images whose objects get the least of the first gated map's relevance,
  their regions drawn over the input picture next to each gated map;
- probes: per probe, its table row and the attraction of each class (A_k, candidate against baseline), and the
  images the stamp moved (top-1 flipped first, then most relevance on the stamp), clean and stamped, each with its
  map;
- classes: the class-agreement gate with the baseline, worst class first, and each comparison's rows per class;
- SpRAy (Lapuschkin et al. 2019, :mod:`audit.measure.spray`), a view and not a gate: each model's first gated map
  clustered per predicted class when the report is rendered, each cluster's size, mean map, where it sits and exemplars.

A run without any of these has no such section (:func:`audit.reports.run_sections.reasoned`). The pictures are drawn
under a :class:`audit.reports.sizing.ReasonsPlan`, which :mod:`audit.reports.render` steps down to fit the size limit;
the clustering is made once, whatever the plan.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, cast

import numpy as np

from audit.measure.spray import N_EXEMPLARS, spray_by_class

from . import pictures
from .run_sections import reasoned
from .sections import SectionBuilder, encoded
from .sizing import ReasonsPlan, describe_reasons_cuts
from .values import as_dict, as_list, as_num, as_records, fmt, fmt_ci

__all__ = ["ATTRACTION_ROWS", "CLASS_ROWS", "SPRAY_CLASSES", "ReasonsSection"]

CLASS_ROWS = 20  # rows a class table shows, worst first; it counts the rest
ATTRACTION_ROWS = 8  # classes of largest attraction shown per probe
SPRAY_CLASSES = 10  # classes the SpRAy view shows, those with the most maps; it counts the rest
BAR_PX = 120  # width of an attraction bar at A_k = 1
PROBLEMS_SHOWN = 5  # distinct reasons an image has no usable regions, listed per model


def _class(name: Any, index: Any) -> str:
    return f"{name} ({index})" if name is not None else f"class {index}"


def _percent(value: Any) -> str:
    number = as_num(value)
    return "n/a" if number is None else f"{100 * number:.0f}%"


def _percent_ci(value: Any) -> str:
    pair = as_list(value)
    if len(pair) != 2 or as_num(pair[0]) is None or as_num(pair[1]) is None:
        return "n/a"
    return f"[{_percent(pair[0])}, {_percent(pair[1])}]"


def _p(value: Any) -> str:
    """A p-value: three decimals, or three significant digits below 0.001."""
    number = as_num(value)
    if number is None:
        return "n/a"
    return f"{number:.2e}" if 0 < number < 0.001 else f"{number:.3f}"


def _badge(verdict: Any) -> str:
    return str(verdict or "unknown").replace(" ", "-")


def _estimate(record: dict[str, Any], digits: int = 3) -> str:
    """``statistic [CI]`` of a record, signed."""
    return f"{fmt(record.get('statistic'), digits, True)} {fmt_ci(record.get('ci95'), digits, True)}"


def _grid(value: Any) -> np.ndarray | None:
    """A map's grid as a finite 2-d float array, or None."""
    if not isinstance(value, list) or not value:
        return None
    try:
        array = np.array([[np.nan if v is None else v for v in row] for row in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array if array.ndim == 2 and array.size and np.isfinite(array).all() else None


class ReasonsSection:
    """The section's context from a results dict: its tables and SpRAy clusters made once, its pictures drawn under
    a plan by the report's picture builder."""

    def __init__(self, results: dict[str, Any], builder: SectionBuilder):
        self.results = results if isinstance(results, dict) else {}
        self.builder = builder
        self.shown = reasoned(self.results)
        self.regions = as_records(self.results, "regions")
        self.probes = as_records(self.results, "probes")
        self.classes = as_records(self.results, "classes")
        self.models = list(dict.fromkeys(
            [r.get("model_id") for r in builder.runs] + [r.get("model_id") for r in self.regions]
            + [p.get("model_id") for p in self.probes] + [c.get("model_id") for c in self.classes]))
        self.names = self._class_names()
        self.sprays = [self._spray(model_id) for model_id in self.models] if self.shown else []

    # -- facts over the runs ------------------------------------------------------------------------------------
    def _class_names(self) -> dict[Any, dict[int, str]]:
        """Per model: class index -> name, from everything the results name a class in."""
        names: dict[Any, dict[int, str]] = {}
        for run in self.builder.runs:
            mine = names.setdefault(run.get("model_id"), {})
            if isinstance(run.get("class"), int) and run.get("class_name") is not None:
                mine.setdefault(run["class"], str(run["class_name"]))
            for entry in as_dict(run.get("probes")).values():
                entry = as_dict(entry)
                if isinstance(entry.get("stamped_class"), int) and entry.get("stamped_class_name") is not None:
                    mine.setdefault(entry["stamped_class"], str(entry["stamped_class_name"]))
        for record in self.classes:
            mine = names.setdefault(record.get("model_id"), {})
            for row in as_records(record, "classes"):
                if isinstance(row.get("class"), int) and row.get("class_name") is not None:
                    mine.setdefault(row["class"], str(row["class_name"]))
        return names

    def _name(self, model_id: Any, index: Any) -> str:
        return _class(self.names.get(model_id, {}).get(index), index) if index is not None else "n/a"

    def _runs_of(self, model_id: Any) -> list[tuple[int, dict[str, Any]]]:
        return [(i, run) for i, run in enumerate(self.builder.runs)
                if run.get("model_id") == model_id and not run.get("error")]

    def _input_note(self, run: dict[str, Any]) -> str:
        """What a missing input picture of a run reads: not kept at a lower detail, else n/a."""
        kept = self.builder.detail == "full" or as_dict(run.get("figures")).get("input")
        return "n/a" if kept else "not kept"

    def _gate_keys(self, model_id: Any, run: dict[str, Any] | None = None) -> list[str]:
        """The model's gated maps, in the order of its gates (the policy's when there is no gate record)."""
        keys = [f"{g.get('method')}@{g.get('stage')}" for g in self.builder.gates
                if g.get("model_id") == model_id and g.get("method") and g.get("stage") is not None]
        if not keys and run is not None:
            keys = [f"{method}@{stage}" for method, stage in self.builder.featured(run)]
        return list(dict.fromkeys(keys))

    # -- regions ------------------------------------------------------------------------------------------------
    @staticmethod
    def _region_row(record: dict[str, Any]) -> dict[str, Any]:
        means = as_dict(record.get("means"))
        key = record.get("map") or f"{record.get('method')}@{record.get('stage')}"
        paired = None
        if record.get("paired") is not None:
            other = as_dict(record.get("paired"))
            parts = {}
            for role in ("object", "artefact"):
                part = as_dict(other.get(role))
                parts[role] = ({"text": f"{_estimate(part)} over {part.get('n_pairs', 'n/a')} pairs",
                                "verdict": str(part.get("verdict") or "n/a"), "badge": _badge(part.get("verdict"))}
                               if part.get("statistic") is not None else
                               {"text": "n/a", "verdict": str(part.get("verdict") or "n/a"),
                                "badge": _badge(part.get("verdict"))})
            paired = {"verdict": str(other.get("verdict") or "unknown"), "badge": _badge(other.get("verdict")),
                      "reason": other.get("reason"), "margin": fmt(other.get("margin"), 3), **parts}
        return {
            "model": record.get("model_id") or record.get("model"), "key": str(key),
            "n_images": record.get("n_images", "n/a"), "mass": fmt(means.get("mass")),
            "chance": fmt(means.get("area")), "excess": fmt(record.get("statistic"), 3, True),
            "ci": fmt_ci(record.get("ci95"), 3, True), "rank": fmt(means.get("rank_accuracy")),
            "auroc": fmt(means.get("auroc")), "pointing": fmt(means.get("pointing")),
            "not_applicable": record.get("not_applicable", 0), "verdict": str(record.get("verdict") or "unknown"),
            "badge": _badge(record.get("verdict")), "reason": record.get("reason"), "rule": record.get("rule"),
            "paired": paired,
        }

    def _region_examples(self, model_id: Any, plan: ReasonsPlan) -> dict[str, Any] | None:
        runs = self._runs_of(model_id)
        problems = Counter(str(as_dict(run.get("regions")).get("problem")) for _, run in runs
                           if as_dict(run.get("regions")).get("problem") is not None)
        found = [(i, run) for i, run in runs if as_dict(run.get("regions")).get("object") is not None
                 and as_dict(run.get("localisation"))]
        if not found and not problems:
            return None
        first = runs[0][1] if runs else None
        gated = self._gate_keys(model_id, first)

        def keys_of(run: dict[str, Any]) -> list[str]:
            measured = list(as_dict(run.get("localisation")))
            return [k for k in gated if k in measured] + [k for k in measured if k not in gated]

        def mass(run: dict[str, Any]) -> float:
            keys = keys_of(run)
            value = as_num(as_dict(as_dict(as_dict(run.get("localisation")).get(keys[0])).get("object")).get("mass")) \
                if keys else None
            return math.inf if value is None else value

        found.sort(key=lambda item: mass(item[1]))
        shown = []
        size, colours = plan.pictures, plan.colours
        for index, run in found[:plan.regions]:
            regions = as_dict(run.get("regions"))
            artefact = _grid(regions.get("artefact"))
            maps = []
            for key in keys_of(run):
                entry = as_dict(as_dict(run.get("localisation")).get(key))
                on_object, on_artefact = as_dict(entry.get("object")), as_dict(entry.get("artefact"))
                has_grid = as_dict(as_dict(run.get("maps")).get(key)).get("grid") is not None
                maps.append({
                    "key": key, "picture": self.builder.overlay(index, run, key, size, colours)
                    if size and has_grid else None,
                    "note": "n/a" if has_grid else "not kept",
                    "mass": fmt(on_object.get("mass")), "chance": fmt(on_object.get("area")),
                    "auroc": fmt(on_object.get("auroc")), "pointing": fmt(on_object.get("pointing")),
                    "rank": fmt(on_object.get("rank_accuracy")),
                    "artefact": fmt(on_artefact.get("mass")) if on_artefact else "none",
                    "artefact_chance": fmt(on_artefact.get("area")) if on_artefact else None})
            shown.append({
                "image": str(run.get("image_id")), "anchor": self.builder.anchors.get((model_id, run.get("image_id"))),
                "picture": self.builder.regions_picture(index, run, size, colours) if size else None,
                "note": self._input_note(run),
                "class": _class(run.get("class_name"), run.get("class")),
                "labels": [str(x) for x in as_list(regions.get("labels"))],
                "notes": [str(x) for x in as_list(regions.get("notes"))],
                "artefacts": artefact is not None and bool((artefact > 0).any()), "maps": maps})
        return {"model": model_id, "examples": shown, "with_regions": len(found),
                "problems": [{"text": text, "count": count} for text, count in problems.most_common(PROBLEMS_SHOWN)],
                "problem_count": sum(problems.values()), "box": {"width": size or 32, "height": size or 32}}

    # -- probes -------------------------------------------------------------------------------------------------
    def _probe_keys(self) -> list[tuple[Any, str]]:
        keys = [(p.get("model_id"), str(p.get("probe"))) for p in self.probes if p.get("probe") is not None]
        for run in self.builder.runs:
            if not run.get("error"):
                keys += [(run.get("model_id"), str(spec)) for spec in as_dict(run.get("probes"))]
        return list(dict.fromkeys(keys))

    def _bars(self, model_id: Any, candidate: list[Any], baseline: list[Any] | None) -> dict[str, Any]:
        """The classes of largest attraction, candidate (and baseline) A_k as bars."""
        count = max(len(candidate), len(baseline or []))
        rows = []
        for k in range(count):
            mine = as_num(candidate[k]) if k < len(candidate) else None
            theirs = as_num(baseline[k]) if baseline is not None and k < len(baseline) else None
            top = max(v for v in (mine, theirs, 0.0) if v is not None)
            if top > 0:
                rows.append((top, k, mine, theirs))
        rows.sort(key=lambda row: (-row[0], row[1]))
        bars = [{"class": self._name(model_id, k), "candidate": fmt(mine), "baseline": fmt(theirs),
                 "candidate_width": round(BAR_PX * min(max(mine or 0.0, 0.0), 1.0)),
                 "baseline_width": round(BAR_PX * min(max(theirs or 0.0, 0.0), 1.0))}
                for _, k, mine, theirs in rows[:ATTRACTION_ROWS]]
        return {"rows": bars, "moved": len(rows), "more": max(0, len(rows) - ATTRACTION_ROWS),
                "paired": baseline is not None}

    def _strips(self, model_id: Any, spec: str, plan: ReasonsPlan) -> tuple[list[dict[str, Any]], int]:
        runs = [(i, run, as_dict(as_dict(run.get("probes")).get(spec))) for i, run in self._runs_of(model_id)
                if isinstance(as_dict(run.get("probes")).get(spec), dict)]
        if not runs:
            return [], 0
        gated = self._gate_keys(model_id, runs[0][1])

        def key_of(entry: dict[str, Any]) -> str | None:
            measured = list(dict.fromkeys([*as_dict(entry.get("mass")), *as_dict(entry.get("grids"))]))
            keys = [k for k in gated if k in measured] + [k for k in measured if k not in gated]
            return keys[0] if keys else None

        def order(item: tuple[int, dict[str, Any], dict[str, Any]]) -> tuple[bool, float]:
            entry = item[2]
            key = key_of(entry)
            mass = as_num(as_dict(entry.get("mass")).get(key)) if key else None
            return not entry.get("flipped"), -(mass if mass is not None else -math.inf)

        runs.sort(key=order)
        size, colours = plan.pictures, plan.colours
        strips = []
        for index, run, entry in runs[:plan.strips]:
            key = key_of(entry)
            grid = as_dict(entry.get("grids")).get(key) if key else None
            clean_grid = as_dict(as_dict(run.get("maps")).get(key)).get("grid") if key else None
            figure = entry.get("figure")
            at = as_list(entry.get("at"))
            pics: dict[str, dict[str, Any] | None] = {"clean": None, "clean_map": None, "stamped": None,
                                                      "stamped_map": None}
            if size:
                pics = {"clean": self.builder.thumbnail_of(index, run, size, colours),
                        "clean_map": self.builder.overlay(index, run, cast(str, key), size, colours)
                        if clean_grid is not None else None,
                        "stamped": self.builder.picture_with_map(index, figure, None, size, colours, ("probe", spec)),
                        "stamped_map": self.builder.picture_with_map(index, figure, grid, size, colours,
                                                                     ("probe", spec, key)) if grid is not None
                        else None}
            stamped: Any = entry.get("stamped_class")
            strips.append({
                "image": str(run.get("image_id")), "anchor": self.builder.anchors.get((model_id, run.get("image_id"))),
                "key": key or "no gated map", "flipped": bool(entry.get("flipped")), **pics,
                "clean_note": "n/a" if clean_grid is not None or not key else "not kept",
                "input_note": self._input_note(run),
                "stamped_note": "n/a" if figure else "not kept",
                "clean_class": _class(run.get("class_name"), run.get("class")), "clean_prob": fmt(run.get("prob")),
                "stamped_class": _class(entry.get("stamped_class_name") or self.names.get(model_id, {}).get(stamped),
                                        stamped),
                "stamped_prob": fmt(entry.get("stamped_prob")),
                "clean_after": fmt(entry.get("clean_class_prob_stamped")),
                "mass": fmt(as_dict(entry.get("mass")).get(key)) if key else "n/a", "area": fmt(entry.get("area")),
                "at": ", ".join(str(v) for v in at) if at else "n/a"})
        return strips, len(runs)

    def _probe(self, number: int, model_id: Any, spec: str, plan: ReasonsPlan) -> dict[str, Any]:
        record = next((p for p in self.probes if p.get("model_id") == model_id and str(p.get("probe")) == spec), {})
        attraction = as_dict(record.get("attraction"))
        paired_record = as_dict(record.get("paired")) if record.get("paired") is not None else None
        masses = [{"key": str(k), "value": fmt(v)} for k, v in as_dict(record.get("mean_mass")).items()]
        paired = None
        candidate = as_list(attraction.get("A"))
        baseline = None
        if paired_record is not None:
            moved = as_dict(paired_record.get("attraction"))
            candidate = as_list(moved.get("candidate")) or candidate
            baseline = as_list(moved.get("baseline"))
            paired = {
                "verdict": str(paired_record.get("verdict") or "unknown"),
                "badge": _badge(paired_record.get("verdict")), "reason": paired_record.get("reason"),
                "attraction": f"{fmt(moved.get('candidate_max'))} against {fmt(moved.get('baseline_max'))}: "
                              f"{_estimate(moved)}",
                "attraction_class": ("no class" if as_num(moved.get("candidate_max")) == 0
                                     else self._name(model_id, moved.get("candidate_class"))
                                     if moved.get("candidate_class") is not None else "n/a"),
                "margin": fmt(moved.get("margin"), 3), "attraction_verdict": str(moved.get("verdict") or "n/a"),
                "attraction_badge": _badge(moved.get("verdict")),
                "flips": f"{_percent(moved.get('flip_rate'))} against {_percent(moved.get('baseline_flip_rate'))}",
                "masses": [{"key": str(k), "text": f"{fmt(m.get('candidate'))} against {fmt(m.get('baseline'))}: "
                                                   f"{_estimate(m)}",
                            "margin": fmt(m.get("margin"), 3), "verdict": str(m.get("verdict") or "n/a"),
                            "badge": _badge(m.get("verdict"))}
                           for k, m in ((k, as_dict(v)) for k, v in as_dict(paired_record.get("mass")).items())]}
        strips, probed = self._strips(model_id, spec, plan)
        verdict = str(record.get("verdict") or ("not gated" if not record else "unknown"))
        return {
            "anchor": f"probe-{number}", "model": model_id, "probe": spec,
            "n_images": attraction.get("n", record.get("n_images", probed)),
            "largest": fmt(attraction.get("max")),
            "largest_class": ("no class: the stamp moved no image" if as_num(attraction.get("max")) == 0
                              else self._name(model_id, attraction.get("argmax"))
                              if attraction.get("argmax") is not None else "n/a"),
            "flip_rate": _percent(attraction.get("flip_rate")), "masses": masses, "verdict": verdict,
            "badge": _badge(verdict), "reason": record.get("reason"),
            "limits": [{"text": str(as_dict(x).get("reason") or ""), "verdict": str(as_dict(x).get("verdict") or "n/a")}
                       for x in as_list(record.get("limits"))],
            "paired": paired, "bars": self._bars(model_id, candidate, baseline), "strips": strips, "probed": probed,
            "box": {"width": plan.pictures or 32, "height": plan.pictures or 32}}

    # -- classes ------------------------------------------------------------------------------------------------
    def _class_record(self, record: dict[str, Any]) -> dict[str, Any]:
        rows = as_records(record, "classes")
        rows.sort(key=lambda r: (as_num(r.get("agreement")) if as_num(r.get("agreement")) is not None else math.inf,
                                 -(cast(int, r.get("n")) if isinstance(r.get("n"), int) else 0), str(r.get("class"))))
        worst = as_dict(record.get("worst")) or (rows[0] if rows else {})
        shown = []
        for row in rows[:CLASS_ROWS]:
            verdict = str(row.get("verdict") or "not gated")
            shown.append({"class": _class(row.get("class_name"), row.get("class")), "n": row.get("n", "n/a"),
                          "agree": f"{row.get('agree', 'n/a')}/{row.get('n', 'n/a')}",
                          "agreement": _percent(row.get("agreement")), "ci": _percent_ci(row.get("ci95")),
                          "p": _p(row.get("p")), "p_holm": _p(row.get("p_holm")), "verdict": verdict,
                          "badge": _badge(verdict), "worst": bool(worst) and row.get("class") == worst.get("class")})
        floor = as_num(record.get("floor"))
        return {"model": record.get("model_id") or record.get("model"), "model_name": record.get("model"),
                "floor": _percent(floor) if floor is not None else "not gated", "n_pairs": record.get("n_pairs", "n/a"),
                "agreement": _percent(record.get("agreement")), "verdict": str(record.get("verdict") or "unknown"),
                "badge": _badge(record.get("verdict")), "reason": record.get("reason"), "rule": record.get("rule"),
                "worst": _class(worst.get("class_name"), worst.get("class")) if worst else "n/a",
                "rows": shown, "more": max(0, len(rows) - CLASS_ROWS), "count": len(rows)}

    @staticmethod
    def _comparison_classes(number: int, record: dict[str, Any]) -> dict[str, Any] | None:
        rows = as_records(record, "classes")
        if not rows:
            return None
        rows.sort(key=lambda r: (as_num(r.get("d")) if as_num(r.get("d")) is not None else math.inf,
                                 str(r.get("class"))))
        worst = next((r for r in rows if isinstance(r.get("n"), int) and r["n"] > 1), rows[0])
        return {"model": record.get("model_id") or record.get("model"), "anchor": f"comparison-{number}",
                "key": f"{record.get('method')}@{record.get('stage')}",
                "rows": [{"class": _class(r.get("class_name"), r.get("class")), "n": r.get("n", "n/a"),
                          "top1": _percent(r.get("top1_agreement")), "d": fmt(r.get("d"), 3, True),
                          "spearman": fmt(r.get("spearman"), 3, True), "drift": fmt(r.get("drift"), 3),
                          "worst": r is worst} for r in rows[:CLASS_ROWS]],
                "more": max(0, len(rows) - CLASS_ROWS), "count": len(rows)}

    # -- SpRAy --------------------------------------------------------------------------------------------------
    def _spray(self, model_id: Any) -> dict[str, Any] | None:
        """SpRAy over the model's first gated map, per predicted class; made once, drawn under any plan."""
        runs = self._runs_of(model_id)
        if not runs:
            return None
        keys = self._gate_keys(model_id, runs[0][1])
        if not keys:
            return None
        key = keys[0]
        items, where = [], []
        missing = 0
        for index, run in runs:
            array = _grid(as_dict(as_dict(run.get("maps")).get(key)).get("grid"))
            label = run.get("class")
            if array is None or not isinstance(label, int) or isinstance(label, bool):
                missing += 1
                continue
            items.append((label, array))
            where.append(index)
        shapes = Counter(array.shape for _, array in items)
        if len(shapes) > 1:  # maps of another grid than most cannot be clustered with them
            shape = shapes.most_common(1)[0][0]
            kept = [i for i, (_, array) in enumerate(items) if array.shape == shape]
            missing += len(items) - len(kept)
            items, where = [items[i] for i in kept], [where[i] for i in kept]
        base = {"model": model_id, "key": key, "n_maps": len(items), "missing": missing, "classes": [], "more": 0,
                "note": None}
        if not items:
            base["note"] = (f"no run has a finite grid of {key} with its class"
                            + (f" ({self.builder.not_kept})" if self.builder.detail != "full" else ""))
            return base
        try:
            found = spray_by_class(items)
        except (ValueError, np.linalg.LinAlgError) as err:
            base["note"] = f"SpRAy could not be run: {err}"
            return base
        ordered = sorted(found.items(), key=lambda item: (-len(item[1].indices), item[0]))
        base["classes"] = [(label, result) for label, result in ordered[:SPRAY_CLASSES]]
        base["more"] = max(0, len(ordered) - SPRAY_CLASSES)
        base["where"] = where
        return base

    def _spray_context(self, spray: dict[str, Any], plan: ReasonsPlan) -> dict[str, Any]:
        model_id = spray["model"]
        classes = []
        for label, result in spray["classes"]:
            clusters = []
            for number, cluster in enumerate(result.clusters, start=1):
                heat = None
                if plan.small:
                    drawn = pictures.heat_map(cluster.mean_map, plan.small)
                    rows, cols = cluster.mean_map.shape
                    heat = encoded(drawn, plan.colours, pictures.scaled_size((cols, rows), plan.small)) \
                        if drawn is not None else None
                exemplars = []
                for j, position in enumerate(cluster.exemplars[:N_EXEMPLARS]):
                    index = spray["where"][position]
                    run = self.builder.runs[index]
                    picture = (self.builder.thumbnail_of(index, run, plan.small, plan.colours)
                               if plan.small and j < plan.exemplars else None)
                    exemplars.append({"image": str(run.get("image_id")), "picture": picture,
                                      "anchor": self.builder.anchors.get((model_id, run.get("image_id")))})
                clusters.append({"number": number, "size": cluster.size, "where": cluster.where, "heat": heat,
                                 "exemplars": exemplars})
            classes.append({"class": self._name(model_id, label), "n": len(result.indices),
                            "k": result.n_clusters, "note": result.note, "left_out": len(result.left_out),
                            "k_neighbours": result.k_neighbours, "clusters": clusters,
                            "span": max(1, len(clusters))})
        return {"model": model_id, "key": spray["key"], "n_maps": spray["n_maps"], "missing": spray["missing"],
                "note": spray["note"], "more": spray["more"], "classes": classes,
                "box": {"width": plan.small or 16, "height": plan.small or 16}}

    # -- the section ----------------------------------------------------------------------------------------------
    def context(self, plan: ReasonsPlan, full: ReasonsPlan) -> dict[str, Any] | None:
        """Everything the section shows, its pictures drawn under ``plan``; None for a run without the section."""
        if not self.shown:
            return None
        examples = [e for e in (self._region_examples(m, plan) for m in self.models) if e is not None]
        probes = [self._probe(i, model_id, spec, plan) for i, (model_id, spec) in enumerate(self._probe_keys())]
        comparisons = [c for c in (self._comparison_classes(i, r)
                                   for i, r in enumerate(as_records(self.results, "comparisons"))) if c is not None]
        return {
            "plan": plan, "cuts": describe_reasons_cuts(plan, full),
            "region_rows": [self._region_row(r) for r in self.regions], "region_examples": examples,
            "probes": probes, "classes": [self._class_record(r) for r in self.classes],
            "comparison_classes": comparisons,
            "sprays": [self._spray_context(s, plan) for s in self.sprays if s is not None],
        }
