"""The HTML report: one self-contained file rendered from a results file (schema ``vit-audit/1``).

Reads nothing but the results dict: pictures are PNG data URIs, charts inline SVG, styles inline; no script, no request
to the network or to any other file. It renders whatever the run produced (failed or erroring checks, runs with
``error`` set, missing gates, null fields). To stay under ``max_mb`` it draws the per-image figures smaller, with fewer
colours, and then leaves whole figure families out, image by image, and says so in the report.

This module fits the per-image sections to the size limit and writes the page. The sections are drawn by
:mod:`audit.reports.sections` under the size plans of :mod:`audit.reports.sizing`; the run-level sections are
:mod:`audit.reports.run_sections`'s, the lenient readers and number formats :mod:`audit.reports.values`'. The "right for
the right reasons" section (:mod:`audit.reports.reasons`) is fitted first: it may take
:data:`audit.reports.sizing.REASONS_SHARE` of the room the page leaves for pictures, stepping its own plans down to
tables alone; the image sections share the rest.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from audit.results.schema import write_text_atomically

from . import pictures
from .comparison import comparison_section
from .reasons import ReasonsSection
from .run_sections import aggregates, gate_rows, header, overall_verdict
from .sections import SectionBuilder
from .sizing import REASONS_SHARE, Plan, describe_cuts, plans_for, reasons_plans
from .values import fmt, fmt_ci

__all__ = ["Plan", "overall_verdict", "read_results", "render_report"]

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["fmt_ci"] = fmt_ci
    env.globals["colour_stops"] = pictures.colour_stops()
    env.globals["colourmap"] = pictures.COLOURMAP
    return env


def _fit_images(builder: SectionBuilder, template, budget: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Render every image section, stepping down the plans so that their total stays under ``budget`` bytes.

    An image takes the fullest plan, no fuller than the previous image's, at which the sections so far plus this
    one, plus the images still to come at the mean size of the sections so far (this one included), fit the budget.
    The first image thus picks the plan at which every image as large as it would fit; a later image steps down
    only when the images seen so far no longer leave room for the rest.
    """
    plans = plans_for(builder.thumbnail)
    full = plans[0]
    sections: list[str] = []
    chosen: list[dict[str, Any]] = []
    level = 0
    used = 0
    count = len(builder.runs)
    for index, run in enumerate(builder.runs):
        while True:
            plan = plans[level]
            try:
                html = template.render(image=builder.image_context(index, run, plan, full), caption=builder.caption,
                                       number=index + 1)
            except Exception as err:  # noqa: BLE001 - one broken record must not cost the whole report
                html = template.render(image={"anchor": f"img-{index}", "title": str(run.get("image_id") or index),
                                              "broken": f"{type(err).__name__}: {err}", "run": run, "cuts": []},
                                       caption=builder.caption, number=index + 1)
                break
            size = len(html.encode())
            if used + size + (count - index - 1) * (used + size) / (index + 1) <= budget or level == len(plans) - 1:
                break
            level += 1
        sections.append(Markup(html))  # rendered by the autoescaping template above
        builder.forget(index)
        used += len(html.encode())
        chosen.append({"anchor": f"img-{index}",
                       "title": str(run.get("image_id") or index), "level": level,
                       "cuts": describe_cuts(plans[level], full) if not run.get("error") else []})
    return sections, chosen


def _fit_reasons(section: ReasonsSection, template, budget: float) -> tuple[str, list[str]]:
    """Render the "right for the right reasons" section at the fullest plan whose size stays under ``budget`` bytes
    (the last plan, without pictures, whatever its size).

    Returns:
        The section's HTML ("" for a run without it) and what its plan left out, in words.
    """
    plans = reasons_plans(section.builder.thumbnail)
    for level, plan in enumerate(plans):
        context = section.context(plan, plans[0])
        if context is None:
            return "", []
        html = template.render(reasons=context)
        if len(html.encode()) <= budget or level == len(plans) - 1:
            return Markup(html), context["cuts"]  # rendered by the autoescaping template above
    return "", []


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A results file (schema ``vit-audit/1``) as a dict.

    Raises:
        ValueError: a one-line message naming the file when it cannot be read or is not a vit-audit results file.
    """
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"results {str(path)!r} is not a readable results file ({err}); write one with "
                         "--audit-json") from None
    if not isinstance(results, dict) or not str(results.get("schema", "")).startswith("vit-audit/"):
        raise ValueError(f"results {str(path)!r} is not a vit-audit results file (no 'schema': 'vit-audit/1')")
    return results


def render_report(
    results: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    thumbnail: int = 64,
    max_mb: float = 5.0,
) -> Path:
    """Write the audit's HTML report: one self-contained file, atomically (temporary file, then rename).

    Args:
        results: a results dict (schema ``vit-audit/1``, see docs/results-schema.md); partial ones render too.
        path: where to write the report.
        thumbnail: longer side in pixels of the per-image thumbnails (map cells, removal-strip frames, restorations).
        max_mb: size limit of the file in MB (10^6 bytes); figures are shrunk or left out to stay under it, and
            the report says which.

    Returns:
        The path written.

    Raises:
        ValueError: ``thumbnail`` or ``max_mb`` out of range.
        TypeError: ``results`` is not a dict.
    """
    if not isinstance(results, dict):
        raise TypeError(f"results: expected a dict (the results file), got {type(results).__name__}")
    from audit.ranges import RANGES  # the one definition of both ranges, shared with the run's settings

    pixels, size = RANGES["report_thumbnail"], RANGES["report_max_mb"]
    if thumbnail not in pixels:
        raise ValueError(f"thumbnail: expected an integer number of pixels in {pixels.low}..{pixels.high}, "
                         f"got {thumbnail!r}")
    if max_mb not in size:
        raise ValueError(f"max_mb: expected a positive size in MB, got {max_mb!r}; accepted: {size}")
    start = time.perf_counter()
    env = _environment()
    builder = SectionBuilder(results, thumbnail, float(max_mb))
    page = env.get_template("report.html.j2")
    context: dict[str, Any]
    context = {"header": header(results), "gates": gate_rows(results, builder.anchors),
               "comparison": comparison_section(results, builder),
               "aggregates": aggregates(results), "caption": builder.caption, "max_mb": builder.max_mb,
               "thumbnail": thumbnail, "runs": builder.runs, "anchors": builder.anchors,
               "reasons": "", "reasons_cuts": []}
    # The page without its image sections, with the longest size notice for every image, sets their budget.
    plans = plans_for(thumbnail)
    longest = max((describe_cuts(plan, plans[0]) for plan in plans), key=lambda cuts: len("; ".join(cuts)))
    placeholder_notes = [{"anchor": f"img-{i}", "title": str(r.get("image_id") or i), "level": len(plans) - 1,
                          "cuts": longest} for i, r in enumerate(builder.runs)]
    skeleton = page.render(**context, sections=[], fitted=placeholder_notes, render_seconds=None)
    reasons = ReasonsSection(results, builder)
    if reasons.shown:  # its share of the room for pictures; then the page with it sets the images' budget
        room = builder.max_bytes - len(skeleton.encode()) - 2048
        context["reasons"], context["reasons_cuts"] = _fit_reasons(
            reasons, env.get_template("reasons.html.j2"), REASONS_SHARE * max(room, 0))
        skeleton = page.render(**context, sections=[], fitted=placeholder_notes, render_seconds=None)
    budget = builder.max_bytes - len(skeleton.encode()) - 2048
    sections, fitted = _fit_images(builder, env.get_template("image.html.j2"), budget)
    html = page.render(**context, sections=sections, fitted=fitted,
                       render_seconds=f"{time.perf_counter() - start:.1f}")
    return write_text_atomically(path, html)
