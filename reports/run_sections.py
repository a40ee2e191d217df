"""The report's run-level sections: the verdict and header, the gates, and the charts over the image set.

Each function reads the results dict (leniently, see :mod:`audit.reports.values`) and returns the template's context for
its section; the per-image sections are :mod:`audit.reports.render`'s.
"""

from __future__ import annotations

from typing import Any

from audit.model.layout import stage_order

from . import charts
from .values import as_dict, as_list, as_num, as_pair, as_records, fill_text, fmt, fmt_ci, sorted_stages

__all__ = ["aggregates", "compared", "gate_rows", "header", "overall_verdict", "reasoned"]


LEFT_OUT_SHOWN = 10  # files left out that the header names; it counts the rest


def _interruption(results: dict[str, Any]) -> str | None:
    """The signal that stopped the run (``interrupted``: ``SIGTERM`` or ``SIGINT``), or None if it ran to its end."""
    signal = results.get("interrupted")
    if not signal:
        return None
    return signal if isinstance(signal, str) else "a signal"


def overall_verdict(results: dict[str, Any]) -> tuple[str, list[str]]:
    """``fail`` if the run stopped or was interrupted, a gate or a comparison with the baseline (or its map-agreement
    gate) failed, a comparison did not show the candidate is no worse (inconclusive), or a check failed or errored;
    ``inconclusive`` if a gate or a map-agreement gate is; ``no gate`` when the run gated nothing; else ``pass``.

    Right for the right reasons (``regions``, ``probes``, ``classes``) counts alike: a failed regions gate or probe
    limit fails, an inconclusive one is inconclusive (a failure under ``--strict``); a failed or inconclusive
    comparison of regions or of a probe with the baseline fails, as does a class that collapsed.

    Returns:
        The verdict and the reasons for it, in words.
    """
    if results.get("error"):
        return "fail", ["the run stopped before any check ran"]
    gates = as_records(results, "gates")
    checks = as_records(results, "checks")
    comparisons = as_records(results, "comparisons")
    drifts = [as_dict(c.get("drift")) for c in comparisons]
    failed_gates = [g for g in gates if g.get("verdict") == "fail"]
    inconclusive = [g for g in gates if g.get("verdict") == "inconclusive"]
    failed_comparisons = [c for c in comparisons if c.get("verdict") == "fail"]
    failed_drifts = [d for d in drifts if d.get("verdict") == "fail"]
    failed = [c for c in checks if c.get("outcome") == "failed"]
    errors = [c for c in checks if c.get("outcome") == "error"]
    reasons = []
    signal = _interruption(results)
    if signal:  # the checks that would have run are missing: what was recorded cannot make it pass
        reasons.append(f"the run was interrupted by {signal} before every check ran")
    if failed_gates:
        reasons.append(f"{len(failed_gates)} gate(s) failed")
    if failed_comparisons:
        reasons.append(f"{len(failed_comparisons)} comparison(s) with the baseline failed")
    unsure = [c for c in comparisons if c.get("verdict") == "inconclusive"]
    if unsure:
        reasons.append(f"{len(unsure)} comparison(s) with the baseline did not show the candidate is no worse "
                       "(inconclusive)")
    if failed_drifts:
        reasons.append(f"{len(failed_drifts)} map-agreement gate(s) failed")
    reasons_failed, reasons_undecided, reasons_passed = _right_reasons(results)
    reasons += reasons_failed
    if failed:
        reasons.append(f"{len(failed)} check(s) failed")
    if errors:
        reasons.append(f"{len(errors)} check(s) errored")
    if reasons:
        return "fail", reasons
    undecided = []
    if inconclusive:
        undecided.append(f"{len(inconclusive)} gate(s) inconclusive")
    unsure_drifts = [d for d in drifts if d.get("verdict") == "inconclusive"]
    if unsure_drifts:
        undecided.append(f"{len(unsure_drifts)} map-agreement gate(s) inconclusive")
    undecided += reasons_undecided
    if undecided:
        return "inconclusive", undecided
    if not gates and not comparisons and not reasons_passed:
        return "no gate", ["the run gated nothing (--gate none): no gate passed, so nothing is vouched for",
                           f"{len(checks)} check(s) without failure"]
    passed = [f"{len(gates)} gate(s) passed"]
    if comparisons:
        passed.append(f"{len(comparisons)} comparison(s) with the baseline passed")
    return "pass", [*passed, *reasons_passed, f"{len(checks)} check(s) without failure"]


def _right_reasons(results: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """What the regions gates, the probes and the class-agreement gates add to the overall verdict: the reasons it
    fails, is inconclusive, and passes (each empty for a run without them)."""
    strict = bool(as_dict(results.get("policy")).get("strict"))
    regions = as_records(results, "regions")
    probes = as_records(results, "probes")
    classes = as_records(results, "classes")
    # (what, absolute verdicts, paired verdicts) of each kind of record
    kinds = [("regions gate(s)", [r.get("verdict") for r in regions],
              [as_dict(r.get("paired")).get("verdict") for r in regions if r.get("paired") is not None]),
             ("probe limit(s)", [p.get("verdict") for p in probes], []),
             ("probe(s)", [], [as_dict(p.get("paired")).get("verdict") for p in probes if p.get("paired") is not None])]
    failed: list[str]
    undecided: list[str]
    passed: list[str]
    failed, undecided, passed = [], [], []
    for what, absolute, paired in kinds:
        name = "regions" if what.startswith("regions") else "a probe"
        if absolute.count("fail"):
            failed.append(f"{absolute.count('fail')} {what} failed")
        if absolute.count("inconclusive"):
            (failed if strict else undecided).append(
                f"{absolute.count('inconclusive')} {what} inconclusive" + (" (--strict)" if strict else ""))
        if paired.count("fail"):
            failed.append(f"{paired.count('fail')} comparison(s) of {name} with the baseline failed")
        if paired.count("inconclusive"):
            failed.append(f"{paired.count('inconclusive')} comparison(s) of {name} with the baseline did not show "
                          "the candidate is no worse (inconclusive)")
        if absolute.count("pass"):
            passed.append(f"{absolute.count('pass')} {what} passed")
        if paired.count("pass"):
            passed.append(f"{paired.count('pass')} comparison(s) of {name} with the baseline passed")
    verdicts = [c.get("verdict") for c in classes]
    if verdicts.count("fail"):
        failed.append(f"{verdicts.count('fail')} model(s) with a class whose agreement with the baseline collapsed")
    if verdicts.count("pass"):
        passed.append(f"{verdicts.count('pass')} class-agreement gate(s) passed")
    return failed, undecided, passed


def _score_text(perturbation: dict[str, Any]) -> str:
    if perturbation.get("score") == "top1":
        return ("1 when the top-1 class is the image's label (from the labels file; without one, the explained "
                "class), else 0")
    return "softmax probability of the explained class (the clean image's top-1)"


def perturbation_text(perturbation: dict[str, Any]) -> str:
    """How the MoRF/LeRF curves were measured, in words: the caption of every curve and score."""
    steps = perturbation.get("steps", "?")
    unit = perturbation.get("unit", "pixel")
    amp, fill = perturbation.get("amp"), fill_text(perturbation.get("fill"))
    return (f"{steps} steps; image k of {steps}+1 has the first round(k·N/{steps}) {unit}s of the map's ranking "
            f"(N {unit}s of the model input) replaced by the fill {fill} in pixel space, all channels, before "
            f"normalisation; ranking: the map upsampled {perturbation.get('interpolation', 'bilinearly')} to the "
            f"model input, MoRF descending, LeRF ascending, ties in row-major order; y_k: {_score_text(perturbation)}; "
            f"AUC: {perturbation.get('auc_rule', 'trapezoid')}; "
            f"ABPC = LeRF AUC − MoRF AUC (lower MoRF AUC, higher LeRF AUC and higher ABPC are better); "
            f"{'float32' if not amp else f'autocast {amp}'} forwards")


def compared(results: dict[str, Any]) -> bool:
    """Whether the run was compared with a baseline (``--baseline``): its report has a comparison section."""
    return results.get("baseline") is not None or results.get("comparisons") is not None


def reasoned(results: dict[str, Any]) -> bool:
    """Whether the run asked where the model looks and what moves it (``--regions``, ``--probe``, or a baseline's
    class tables): its report has a "right for the right reasons" section."""
    if any(as_records(results, key) for key in ("regions", "probes", "classes")):
        return True
    if any(run.get("regions") is not None or run.get("probes") for run in as_records(results, "runs")):
        return True
    return any(as_records(record, "classes") for record in as_records(results, "comparisons"))


def header(results: dict[str, Any]) -> dict[str, Any]:
    """The header: verdict, interruption, models, environment, images (and files left out), policy; and the check
    counts and problems."""
    runs = as_records(results, "runs")
    verdict, reasons = overall_verdict(results)
    checks = as_records(results, "checks")
    counts: dict[str, int] = {}
    for check in checks:
        counts[str(check.get("outcome"))] = counts.get(str(check.get("outcome")), 0) + 1
    image_count = len(as_list(results.get("images"))) or len({r.get("image") for r in runs})
    left_out = [{"path": str(e.get("path") or "unknown file"), "reason": str(e.get("reason") or "left out"),
                 "same_as": None if e.get("same_as") is None else str(e["same_as"])}
                for e in as_records(results, "images_left_out")]
    return {
        "verdict": verdict, "reasons": reasons, "environment": as_dict(results.get("environment")),
        "models": as_records(results, "models"),
        "created": results.get("created"), "seconds": fmt(results.get("seconds"), 1),
        "schema": results.get("schema"), "image_count": image_count,
        "errors": [r for r in runs if r.get("error")], "policy": as_dict(results.get("policy")),
        "perturbation": as_dict(results.get("perturbation")), "embedded_default": results.get("embedded_default"),
        "check_counts": counts, "run_error": results.get("error"), "interrupted": _interruption(results),
        "left_out": left_out[:LEFT_OUT_SHOWN], "left_out_count": len(left_out),
        "problems": [c for c in checks if c.get("outcome") in ("failed", "error")],
        "compared": compared(results), "reasoned": reasoned(results),
        "detail": as_dict(results.get("settings")).get("results_detail"),
    }


def gate_rows(results: dict[str, Any], anchors: dict[tuple[Any, Any], str]) -> list[dict[str, Any]]:
    """One row per gate; ``anchors`` maps (model id, image id) to the image's section, linked from its worst images."""
    rows = []
    for gate in as_records(results, "gates"):
        baseline = as_dict(gate.get("random_baseline"))
        worst = []
        for item in as_list(gate.get("worst_images")):
            item = as_dict(item)
            worst.append({"image": str(item.get("image")), "abpc": fmt(item.get("abpc"), 3, True),
                          "anchor": anchors.get((gate.get("model_id"), item.get("image")))})
        rows.append({
            "model": gate.get("model_id") or gate.get("model"), "model_name": gate.get("model"),
            "method": gate.get("method"), "stage": gate.get("stage"),
            "statistic": fmt(gate.get("statistic"), 3, True), "ci": fmt_ci(gate.get("ci95"), 3, True),
            "threshold": fmt(gate.get("threshold"), 3, True), "n_images": gate.get("n_images"),
            "verdict": str(gate.get("verdict") or "unknown"), "reason": gate.get("reason"),
            "morf": f"{fmt(gate.get('morf_auc'))} {fmt_ci(gate.get('morf_auc_ci95'))}",
            "lerf": f"{fmt(gate.get('lerf_auc'))} {fmt_ci(gate.get('lerf_auc_ci95'))}",
            "baseline": (f"{fmt(baseline.get('statistic'), 3, True)} {fmt_ci(baseline.get('ci95'), 3, True)}, "
                         f"n={baseline.get('n_images')}" if baseline else "n/a"),
            "worst": worst, "rule": gate.get("rule"),
            "degenerate": {str(k): str(v) for k, v in as_dict(gate.get("degenerate_images")).items()},
            "unreadable": [str(x) for x in as_list(gate.get("unreadable_images"))],
            "bootstrap": f"seed {gate.get('seed')}, {gate.get('n_boot')} resamples",
        })
    return rows


def _profile_line(label: str, rows: list[dict[str, Any]], name: str, colour: str, dash: str | None = None) -> tuple:
    """One series of a layer-wise profile: a summary field and its CI (``<name>_ci``) at each stage."""
    return label, [as_num(r.get(name)) for r in rows], [as_pair(r.get(f"{name}_ci")) for r in rows], colour, dash


def _images_with_classes(record: dict[str, Any]) -> str:
    """The randomisation check's images, each with the class it was chosen by where the record has them."""
    images, classes = as_list(record.get("images")), as_list(record.get("classes"))
    if len(classes) != len(images):
        return ", ".join(str(x) for x in images) or "none"
    return ", ".join(f"{x} (class {y})" for x, y in zip(images, classes)) or "none"


def aggregates(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model: the layer-wise profile of every method and the randomisation curves."""
    out = []
    models = as_records(results, "models")
    summaries = as_records(results, "summaries")
    sanity = as_records(results, "randomisation")
    model_ids = list(dict.fromkeys([m.get("id") for m in models] + [s.get("model_id") for s in summaries]
                                   + [s.get("model_id") for s in sanity]))
    for model_id in model_ids:
        mine = [s for s in summaries if s.get("model_id") == model_id]
        methods = list(dict.fromkeys(str(s.get("method")) for s in mine))
        by_key = {(str(s.get("method")), str(s.get("stage"))): s for s in mine}
        stages = sorted_stages(str(s.get("stage")) for s in mine)
        profiles = []
        for method in methods:
            rows = [by_key.get((method, stage), {}) for stage in stages]
            series = [_profile_line("MoRF AUC", rows, "morf_auc", charts.MORF),
                      _profile_line("LeRF AUC", rows, "lerf_auc", charts.LERF),
                      _profile_line("ABPC", rows, "abpc", charts.ABPC)]
            if method != "random" and "random" in methods:
                baseline = [by_key.get(("random", stage), {}) for stage in stages]
                series.append(_profile_line("random ABPC", baseline, "abpc", charts.BASELINE, "4 3"))
            counts = sorted({s.get("n_images") for s in mine if s.get("method") == method}, key=str)
            first = next((s for s in mine if s.get("method") == method), {})
            profiles.append({
                "method": method,
                "chart": charts.profile_chart(f"layer-wise faithfulness of {method} ({model_id})", stages, series),
                "n_images": ", ".join(str(c) for c in counts), "seed": first.get("seed"),
                "n_boot": first.get("n_boot")})
        randomisation = []
        for record in (s for s in sanity if s.get("model_id") == model_id):
            curves = {k: as_dict(v) for k, v in as_dict(record.get("curves")).items()}
            by_method: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for key, curve in curves.items():
                by_method.setdefault(str(curve.get("method") or key.split("@")[0]), []).append((key, curve))
            for method, items in by_method.items():
                items.sort(key=lambda kc: stage_order(str(kc[1].get("stage") or kc[0].split("@")[-1])))
                labels = next((as_list(c.get("labels")) for _, c in items if c.get("labels")), [])
                lines = []
                for i, (key, curve) in enumerate(items):
                    colour = charts.PALETTE[i % len(charts.PALETTE)]
                    dash = None if i < len(charts.PALETTE) else ("4 3" if i < 2 * len(charts.PALETTE) else "1 2")
                    lines.append((str(curve.get("stage") or key), [as_num(v) for v in as_list(curve.get("spearman"))],
                                  colour, dash))
                randomisation.append({
                    "method": method,
                    "chart": charts.randomisation_chart(
                        f"randomisation of {method} maps ({model_id})", [str(x) for x in labels], lines,
                        as_num(record.get("threshold"))),
                    "after": [{"stage": str(c.get("stage") or k), "step": c.get("dependency_step"),
                               "value": fmt(c.get("abs_spearman"), 3), "ci": fmt_ci(c.get("ci95"), 3),
                               "signed": fmt(c.get("signed_spearman"), 3, True),
                               "negative": f"{c.get('negative_images', 'n/a')}/{c.get('n_images', 'n/a')}",
                               "verdict": str(c.get("verdict") or "n/a")} for k, c in items],
                    "images": _images_with_classes(record),
                    "seeds": ", ".join(str(x) for x in as_list(record.get("seeds"))) or "n/a",
                    "threshold": fmt(record.get("threshold"), 2), "rule": record.get("rule")})
        out.append({"model_id": model_id, "profiles": profiles, "randomisation": randomisation})
    return out
