"""The report's image sections: each run of a results dict as its section's context (maps, curves, removal strips,
restorations), its figures drawn under a :class:`audit.reports.sizing.Plan`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from audit.results.detail import charted_maps

from . import charts, pictures
from .run_sections import perturbation_text
from .sizing import Plan, describe_cuts
from .values import as_dict, as_list, as_num, as_records, fmt, sorted_stages, stage_title

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MB", "STRIP_FRAMES", "SectionBuilder"]

MB = 1_000_000
STRIP_FRAMES = 10


class SectionBuilder:
    """Turns each run of a results dict into its image section's context, drawing its figures under a plan."""

    def __init__(self, results: dict[str, Any], thumbnail: int, max_mb: float):
        self.results = results if isinstance(results, dict) else {}
        self.thumbnail = thumbnail
        self.max_bytes = int(max_mb * MB)
        self.max_mb = max_mb
        self.perturbation = as_dict(self.results.get("perturbation"))
        self.policy = as_dict(self.results.get("policy"))
        self.models = as_records(self.results, "models")
        self.runs = as_records(self.results, "runs")
        self.gates = as_records(self.results, "gates")
        self.anchors: dict[tuple[Any, Any], str] = {}  # (model id, image id) -> the first section of that pair
        self.indices: dict[tuple[Any, Any], int] = {}  # (model id, image id) -> the index of that run
        for i, run in enumerate(self.runs):
            self.anchors.setdefault((run.get("model_id"), run.get("image_id")), f"img-{i}")
            self.indices.setdefault((run.get("model_id"), run.get("image_id")), i)
        self.caption = perturbation_text(self.perturbation)
        detail = as_dict(self.results.get("settings")).get("results_detail")
        self.detail = detail if isinstance(detail, str) else "full"  # a file without it kept everything
        self.not_kept = f"not kept at this detail (--results-detail {self.detail})"
        self._cache: dict[tuple, Any] = {}

    # -- per model facts --------------------------------------------------------------------------------------
    def model_of(self, run: dict[str, Any]) -> dict[str, Any]:
        for model in self.models:
            if model.get("id") == run.get("model_id") or (run.get("model_id") is None
                                                            and model.get("name") == run.get("model")):
                return model
        return {}

    def featured(self, run: dict[str, Any]) -> list[tuple[str, str]]:
        """The maps shown with curves and strips: the model's gated maps, else the non-baseline maps measured last."""
        model_id = run.get("model_id")
        keys = [(str(g.get("method")), str(g.get("stage"))) for g in self.gates
                if g.get("model_id") == model_id and g.get("method") and g.get("stage") is not None]
        if not keys:
            depth = self.model_of(run).get("depth")
            for text in as_list(self.policy.get("gate")):
                method, _, stage = str(text).partition("@")
                if stage.lstrip("-").isdigit() and int(stage) < 0 and isinstance(depth, int):
                    stage = str(depth + int(stage))
                keys.append((method, stage))
        return charted_maps(as_dict(run.get("maps")), keys)

    # -- pictures, cached across plans ------------------------------------------------------------------------
    def forget(self, index: int) -> None:
        """Drop what was cached for one image once its section is final (the cache holds full-size arrays)."""
        self._cache = {k: v for k, v in self._cache.items() if len(k) < 2 or k[1] != index}

    def _picture(self, key: tuple, draw) -> dict[str, Any] | None:
        if key not in self._cache:
            try:
                self._cache[key] = draw()
            except Exception:  # noqa: BLE001 - a picture that cannot be drawn is shown as missing, never fatal
                self._cache[key] = None
        return self._cache[key]

    def _input(self, index: int, run: dict[str, Any]) -> Image.Image | None:
        key = ("input-picture", index)
        if key not in self._cache:
            self._cache[key] = pictures.decode_data_uri(as_dict(run.get("figures")).get("input"))
        return self._cache[key]

    def _base(self, index: int, run: dict[str, Any], size: int) -> Image.Image | None:
        """The input picture scaled down to at most ``size`` px (the overlays are drawn at its resolution)."""
        key = ("base", index, size)
        if key not in self._cache:
            picture = self._input(index, run)
            self._cache[key] = pictures.fit(picture, size) if picture is not None else None
        return self._cache[key]

    def _shown(self, index: int, run: dict[str, Any], size: int) -> tuple[int, int]:
        """How large a picture of the input is shown when its longer side is ``size`` px."""
        picture = self._input(index, run)
        return pictures.scaled_size(picture.size, size) if picture is not None else (size, size)

    def overlay(self, index: int, run: dict[str, Any], map_key: str, size: int, colours: int | None,
                ) -> dict[str, Any] | None:
        def draw() -> dict[str, Any] | None:
            base = self._base(index, run, size)
            grid = as_dict(as_dict(run.get("maps")).get(map_key)).get("grid")
            if base is None:  # no input picture: the map alone
                base = Image.new("RGB", (size, size), (128, 128, 128))
            picture = pictures.map_overlay(base, grid)
            return encoded(picture, colours, self._shown(index, run, size)) if picture is not None else None

        return self._picture(("overlay", index, map_key, size, colours), draw)

    def grid_picture(self, model_id: Any, image: Any, grid: Any, tag: tuple,
                     ) -> tuple[dict[str, Any] | None, tuple[int, int]]:
        """A raw map (any h x w, e.g. the baseline's) over the input picture of the model's run of ``image``, at the
        thumbnail size and in true colour (the map alone on grey when that run has no input picture).

        Returns:
            The picture (None when the grid is missing or malformed) and the size it is shown at.
        """
        index = self.indices.get((model_id, image))
        run = self.runs[index] if index is not None else {}
        size = self.thumbnail
        shown = self._shown(index, run, size) if index is not None else (size, size)

        def draw() -> dict[str, Any] | None:
            base = self._base(index, run, size) if index is not None else None
            if base is None:
                base = Image.new("RGB", shown, (128, 128, 128))
            picture = pictures.map_overlay(base, grid)
            return encoded(picture, None, shown) if picture is not None else None

        return self._picture((*tag[:1], -1 if index is None else index, *tag[1:], size), draw), shown

    # -- pictures of the run-level sections (right for the right reasons) --------------------------------------
    def thumbnail_of(self, index: int, run: dict[str, Any], size: int, colours: int | None,
                     ) -> dict[str, Any] | None:
        """A run's input picture at ``size`` px (None when the run has none)."""
        def draw() -> dict[str, Any] | None:
            base = self._base(index, run, size)
            return encoded(base, colours, self._shown(index, run, size)) if base is not None else None

        return self._picture(("thumbnail", index, size, colours), draw)

    def regions_picture(self, index: int, run: dict[str, Any], size: int, colours: int | None,
                        ) -> dict[str, Any] | None:
        """A run's input picture with its regions (``run["regions"]``: token fractions) drawn over it."""
        def draw() -> dict[str, Any] | None:
            base = self._base(index, run, size)
            if base is None:
                return None
            picture = pictures.region_overlay(base, as_dict(run.get("regions")))
            return encoded(picture, colours, self._shown(index, run, size)) if picture is not None else None

        return self._picture(("regions", index, size, colours), draw)

    def picture_with_map(self, index: int, uri: Any, grid: Any, size: int, colours: int | None, tag: tuple,
                         ) -> dict[str, Any] | None:
        """A picture stored in the results (a data URI, e.g. a run's stamped input) at ``size`` px, with a raw map
        drawn over it when ``grid`` is given; None when the picture (or the given map) cannot be read.

        ``tag`` tells the picture from others of the same run ``index`` (whose section forgets it)."""
        def draw() -> dict[str, Any] | None:
            picture = pictures.decode_data_uri(uri)
            if picture is None:
                return None
            base: Image.Image | None
            base = pictures.fit(picture, size)
            shown = pictures.scaled_size(picture.size, size)
            if grid is not None:
                base = pictures.map_overlay(base, grid)
                if base is None:
                    return None
            return encoded(base, colours, shown)

        return self._picture(("stored", index, *tag, size, colours, grid is not None), draw)

    def _full(self, index: int, run: dict[str, Any], size: tuple[int, int]) -> Image.Image | None:
        """The input picture brought to the model input's resolution (H, W), where the curves were measured."""
        key = ("full", index, size)
        if key not in self._cache:
            picture = self._input(index, run)
            height, width = size
            self._cache[key] = (None if picture is None else picture if picture.size == (width, height)
                                else picture.resize((width, height), Image.Resampling.BILINEAR))
        return self._cache[key]

    def strip(self, index: int, run: dict[str, Any], map_key: str, order: str, plan: Plan) -> dict[str, Any] | None:
        def draw() -> dict[str, Any] | None:
            model = self.model_of(run)
            shape = as_list(run.get("input_shape")) or [None, *as_list(model.get("input_size"))]
            grid_shape = as_list(model.get("grid"))
            patch = as_list(model.get("patch_size"))
            if len(shape) < 3 or len(grid_shape) != 2 or len(patch) != 2:
                return None
            size = (int(shape[-2]), int(shape[-1]))
            full = self._full(index, run, size)
            entry = as_dict(as_dict(run.get("maps")).get(map_key))
            steps = self.perturbation.get("steps")
            if not isinstance(steps, int):
                steps = len(as_list(entry.get("morf"))) - 1
            if full is None or steps < 1:
                return None
            unit = self.perturbation.get("unit", "pixel")
            key = ("removal", index, map_key, order)
            if key not in self._cache:  # the ranking does not depend on the plan: made once per map and order
                values = entry.get("grid")
                if unit == "pixel":  # upsampled once for both orders
                    upsampled = ("upsampled", index, map_key)
                    if upsampled not in self._cache:
                        self._cache[upsampled] = pictures.upsample_map(values, size)
                    values = self._cache[upsampled]
                self._cache[key] = pictures.removal_plan(values, order, size, tuple(grid_shape), tuple(patch), steps,
                                                         unit, frames=STRIP_FRAMES)
            if self._cache[key] is None:
                return None
            fill = self.perturbation.get("fill", 127 / 255)
            if fill == "mean":  # the model's normalisation mean
                fill = as_dict(model.get("data_config")).get("mean") or 127 / 255
            picture = pictures.draw_strip(  # the cached removal_plan: not None here
                full, *cast("tuple[np.ndarray, list[int]]", self._cache[key]), fill=fill, size=plan.strips)
            frame = pictures.scaled_size(full.size, plan.strips)  # a frame as shown; the strip is enlarged alike
            scale = frame[1] / picture.size[1]
            return encoded(picture, plan.colours, (round(picture.size[0] * scale), frame[1]))

        return self._picture(("strip", index, map_key, order, plan.strips, plan.colours), draw)

    def restoration(self, index: int, uri: Any, reading: str, stage: str, plan: Plan) -> dict[str, Any] | None:
        def draw() -> dict[str, Any] | None:
            picture = pictures.decode_data_uri(uri)
            if picture is None:
                return None
            shown = pictures.scaled_size(picture.size, plan.restorations)
            if plan.colours is None and max(picture.size) <= plan.restorations:  # as the run stored it
                return {"src": uri, "width": shown[0], "height": shown[1], "enlarged": shown[0] > picture.size[0]}
            return encoded(pictures.fit(picture, plan.restorations), plan.colours, shown)

        return self._picture(("restoration", index, reading, stage, plan.restorations, plan.colours), draw)

    def input_picture(self, index: int, run: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
        def draw() -> dict[str, Any] | None:
            picture = self._input(index, run)
            if picture is None or plan.input_size == 0:
                return None
            colours = None if plan.colours is None else max(plan.colours, 64)
            shown = pictures.scaled_size(picture.size, plan.input_size)
            return encoded(pictures.fit(picture, plan.input_size), colours, shown)

        return self._picture(("input", index, plan.input_size, plan.colours), draw)

    # -- context -------------------------------------------------------------------------------------------------
    def image_context(self, index: int, run: dict[str, Any], plan: Plan, full: Plan) -> dict[str, Any]:
        """Everything the image section shows, drawn under ``plan``."""
        maps = {k: as_dict(v) for k, v in as_dict(run.get("maps")).items()}
        model = self.model_of(run)
        context: dict[str, Any] = {
            "anchor": f"img-{index}",
            "run": run, "model": model, "error": run.get("error"), "cuts": describe_cuts(plan, full),
            "plan": plan, "prob": fmt(run.get("prob")), "removed_prob": fmt(run.get("removed_prob")),
            "title": str(run.get("image_id") or run.get("image_name") or run.get("image") or f"image {index}"),
        }
        if run.get("error") or not maps and not run.get("restorations"):
            context["input"] = self.input_picture(index, run, plan)
            return context
        context["input"] = self.input_picture(index, run, plan)
        context["input_note"] = ("not kept" if self.detail != "full" and not as_dict(run.get("figures")).get("input")
                                 else "n/a")
        base = self._base(index, run, plan.maps)
        width, height = self._shown(index, run, plan.maps)
        drawn = base.size if base is not None else (width, height)
        context["cell"] = {"width": width, "height": height, "drawn": drawn, "enlarged": drawn[0] < width}
        width, height = self._shown(index, run, max(plan.strips, 8))
        context["big_cell"] = {"width": width, "height": height}
        methods = list(dict.fromkeys(str(m.get("method")) for m in maps.values() if m.get("method")))
        stages = sorted_stages(m.get("stage") for m in maps.values() if m.get("stage") is not None)
        featured = self.featured(run)
        done: set[str] = set()  # a baseline's strips are drawn once per image, with the first map of their stage
        context["featured"] = [self.featured_context(index, run, maps, method, stage, plan, done)
                               for method, stage in featured]
        # Per-block grid.
        shown_methods = methods
        if plan.grid == "featured":
            wanted = {m for m, _ in featured} | {"random"}
            shown_methods = [m for m in methods if m in wanted]
        elif plan.grid == "none":
            shown_methods = []
        context["grid"] = {"stages": stages, "rows": [
            {"method": method, "cells": [self.map_cell(index, run, maps, f"{method}@{stage}", plan.maps, plan.colours)
                                         for stage in stages]}
            for method in shown_methods]}
        context["hidden_note"] = "cam_hidden" in methods
        context["encoder"] = ([self.map_cell(index, run, maps, f"{method}@encoder", plan.strips, plan.colours, method)
                               for method in methods if f"{method}@encoder" in maps] if plan.strips else [])
        # Restorations.
        restorations = as_dict(run.get("restorations"))
        rows: list[dict[str, Any]] = []
        if plan.restorations:
            for reading in ("paper", "inverse"):
                entries = as_dict(restorations.get(reading))
                if not entries:
                    continue
                cells = []
                for stage in sorted_stages(entries):
                    entry = as_dict(entries.get(stage))
                    cells.append({
                        "stage": stage, "title": stage_title(stage),
                        "picture": self.restoration(index, entry.get("png"), reading, stage, plan),
                        "reason": entry.get("reason"), "shape": entry.get("shape"), "finite": entry.get("finite"),
                        "psnr": ("exact" if entry.get("exact") else
                                 (f"{fmt(entry.get('psnr'), 1)} dB" if reading == "inverse" else None)),
                        "max_abs_error": fmt(entry.get("max_abs_error"), 3) if reading == "inverse" else None,
                        "note": ("not kept" if self.detail != "full" and entry.get("shape") and not entry.get("png")
                                 else "n/a"),
                    })
                reasons = {c["reason"] for c in cells}
                if all(c["picture"] is None for c in cells) and len(reasons) == 1 and None not in reasons:
                    rows.append({"reading": reading, "cells": [], "note": reasons.pop(), "span": len(cells)})
                else:
                    rows.append({"reading": reading, "cells": cells, "note": None, "span": len(cells)})
        context["restorations"] = rows
        context["restoration_count"] = sum(len(as_dict(v)) for v in restorations.values())
        # Every measured map's scores.
        measured_stages = sorted_stages(m.get("stage") for m in maps.values() if m.get("morf_auc") is not None)
        context["scores"] = {"stages": measured_stages, "rows": [
            {"method": method, "cells": [self.score_cell(maps.get(f"{method}@{stage}")) for stage in measured_stages]}
            for method in methods]}
        return context

    @staticmethod
    def score_cell(entry: dict[str, Any] | None) -> dict[str, Any]:
        entry = entry or {}
        title = (f"MoRF AUC {fmt(entry.get('morf_auc'))}, LeRF AUC {fmt(entry.get('lerf_auc'))}"
                 if entry.get("morf_auc") is not None else (entry.get("reason") or "not measured"))
        return {"text": fmt(entry.get("abpc"), 3, signed=True) if entry.get("abpc") is not None else "—",
                "title": title, "degenerate": bool(entry.get("degenerate")),
                "negative": (as_num(entry.get("abpc")) or 0.0) < 0}

    def map_cell(self, index: int, run: dict[str, Any], maps: dict[str, dict[str, Any]], key: str, size: int,
                 colours: int | None, label: str | None = None) -> dict[str, Any]:
        entry = maps.get(key)
        if entry is None:
            return {"key": key, "label": label, "picture": None, "note": "not computed", "title": key,
                    "degenerate": False}
        reason = entry.get("reason")
        if entry.get("grid") is None and entry.get("applicable") is not False and self.detail != "full":
            return {"key": key, "label": label, "picture": None, "note": "not kept", "title": f"{key}: grid "
                    f"{self.not_kept}", "degenerate": False}
        if entry.get("applicable") is False or entry.get("grid") is None:
            return {"key": key, "label": label, "picture": None, "note": "n/a", "title": reason or "not applicable",
                    "degenerate": False}
        title = key + (f": degenerate: {reason}" if entry.get("degenerate") else "")
        return {"key": key, "label": label, "picture": self.overlay(index, run, key, size, colours), "note": None,
                "title": title, "degenerate": bool(entry.get("degenerate"))}

    def featured_context(self, index: int, run: dict[str, Any], maps: dict[str, dict[str, Any]], method: str,
                         stage: str, plan: Plan, drawn: set[str]) -> dict[str, Any]:
        key, baseline_key = f"{method}@{stage}", f"random@{stage}"
        entry, baseline = maps.get(key, {}), maps.get(baseline_key, {})
        lines: list[tuple[str, Any, str, str | None]] = [
            (f"{method} MoRF, AUC {fmt(entry.get('morf_auc'))}", as_list(entry.get("morf")), charts.MORF, None),
            (f"{method} LeRF, AUC {fmt(entry.get('lerf_auc'))}", as_list(entry.get("lerf")), charts.LERF, None),
        ]
        if method != "random":  # a curve that is not a list (a malformed file) is not drawn
            lines += [(f"random MoRF, AUC {fmt(baseline.get('morf_auc'))}", as_list(baseline.get("morf")), charts.MORF,
                       "4 3"),
                      (f"random LeRF, AUC {fmt(baseline.get('lerf_auc'))}", as_list(baseline.get("lerf")), charts.LERF,
                       "4 3")]
        class_text = f"class {run.get('class')} ({run.get('class_name')})"
        y_label = "top-1 is the label (1/0)" if self.perturbation.get("score") == "top1" else "probability of the class"
        chart = (charts.curves_chart(f"MoRF/LeRF of {key}, {class_text}", lines, y_label=y_label)
                 if as_list(entry.get("morf")) else None)
        strips, shown_before = [], None
        no_input = self.detail != "full" and not as_dict(run.get("figures")).get("input")  # strips are drawn on it
        if plan.strips and not no_input:
            for map_key, name in ((key, method), (baseline_key, "random")):
                if map_key not in maps or maps[map_key].get("grid") is None:
                    continue
                if map_key in drawn:
                    shown_before = map_key
                    continue
                drawn.add(map_key)
                for order in ("morf", "lerf"):
                    strips.append({"label": f"{name}@{stage} {order.upper()}", "order": order,
                                   "picture": self.strip(index, run, map_key, order, plan)})
        steps = self.perturbation.get("steps")
        shown = min(STRIP_FRAMES, steps) if isinstance(steps, int) else STRIP_FRAMES
        enlarged = any(as_dict(s["picture"]).get("enlarged") for s in strips)
        lost = [what for what, gone in (
            ("the MoRF/LeRF points", entry.get("morf_auc") is not None and not entry.get("morf")),
            ("the map grid (no removal strips)", key in maps and entry.get("applicable") is not False
             and entry.get("grid") is None),
            ("the input picture (no removal strips)", no_input and entry.get("grid") is not None)) if gone]
        return {"key": key, "method": method, "stage": stage, "chart": chart, "strips": strips, "frames": shown,
                "not_kept": f"{' and '.join(lost)} {self.not_kept}" if lost and self.detail != "full" else None,
                "strips_enlarged": enlarged,
                "abpc": fmt(entry.get("abpc"), 3, signed=True), "random_abpc": fmt(baseline.get("abpc"), 3, True),
                "degenerate": bool(entry.get("degenerate")), "reason": entry.get("reason"),
                "missing": key not in maps, "class_text": class_text, "shown_before": shown_before}


def encoded(picture: Image.Image, colours: int | None, shown: tuple[int, int] | None = None) -> dict[str, Any]:
    """A picture for the template: its data URI and the size it is shown at (enlarged: without smoothing)."""
    width, height = shown or picture.size
    return {"src": pictures.encode_png(picture, colours), "width": width, "height": height,
            "enlarged": width > picture.size[0]}
