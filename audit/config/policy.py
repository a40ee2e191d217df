"""The built-in release policy: what a run gates when nothing says otherwise, and how the header and the results file
state the policy (its margins are :mod:`audit.verdicts.margins`).

A run gates something unless it is told not to: with no policy file, and nothing on the command line, the built-in
policy below applies (docs/concepts/policy.md). ``--gate none`` turns every gate off, and the run then says so: its
header and its report's verdict read "no gate", never a pass.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_GATES", "GATE_NONE", "POLICY_METHODS", "policy_lines", "policy_record"]

#: The maps the built-in policy computes (the paper's, Chefer et al.'s, and the two baselines).
POLICY_METHODS = ("cam", "cam_hidden", "grad", "grad_cls", "chefer", "random", "center")
#: The maps the built-in policy gates.
DEFAULT_GATES = ("grad@0", "chefer@encoder")
#: ``--gate none``: the run gates nothing, and says so.
GATE_NONE = "none"


def policy_lines(settings: Any) -> list[str]:
    """The header's account of the policy: what is gated (or that nothing is), k and the family-wise false-fail bound,
    and where each policy value came from."""
    from ..measure.stats import family_false_fail_bound
    from .settings import POLICY_OPTIONS

    s = settings
    if not s.gate:
        lines = [f"gates: none ({GATE_NONE} from {s.origin('gate')}): this run gates nothing, and its verdict is "
                 "'no gate', never a pass"]
    else:
        k = len(s.gate)
        handling = "inconclusive fails (--strict)" if s.strict else "inconclusive = skipped"
        bound = family_false_fail_bound(k)
        correction = ("fail verdicts Holm-corrected (--fail-correction holm)" if s.fail_correction == "holm"
                      else "uncorrected (--fail-correction holm corrects fail verdicts)")
        lines = [f"gates {', '.join(s.gate)} (threshold {s.threshold:+g}, at least {s.min_images} images, {handling}); "
                 f"k={k} gates: the chance that a model as good as the threshold fails one of them by chance is at "
                 f"most {bound:.1%} per model if the gates were independent, {correction}"]
    lines.extend(_reasons_lines(s))
    by_origin: dict[str, list[str]] = {}
    for name in POLICY_OPTIONS:
        by_origin.setdefault(s.origin(name), []).append(name.replace("_", "-"))
    lines.append("policy from: " + "; ".join(f"{', '.join(names)} from {origin}"
                                             for origin, names in by_origin.items()))
    return lines


def _reasons_lines(s: Any) -> list[str]:
    """The header's account of the regions, probes and class-agreement gates."""
    lines = []
    if s.regions:
        gate = ("measured, not gated" if s.region_threshold is None else
                f"mean mass on the objects above chance{f' {s.region_threshold:+g}' if s.region_threshold else ''}")
        lines.append(f"regions {s.regions}: {gate}; against a baseline object mass may drop, artefact mass rise, by "
                     f"at most {s.region_margin:g}")
    for spec in s.probe:
        limits = [f"{name.replace('_', '-')} {value:g}" for name, value in
                  (("max_attraction", s.max_attraction), ("max_stamp_mass", s.max_stamp_mass)) if value is not None]
        lines.append(f"probe {spec}: against a baseline the largest attraction may rise by at most "
                     f"{s.attraction_margin:g} and a gated map's mass on the stamp by {s.stamp_margin:g}; absolute "
                     f"limits: {', '.join(limits) or 'none'}")
    if getattr(s, "baseline", None) or getattr(s, "baseline_model", None):
        floor = s.min_class_agreement
        lines.append("class agreement with the baseline: " + (
            "measured, not gated" if floor is None else
            f"a class shown to agree on fewer than {floor:.0%} of its images fails (Holm over the classes)"))
    return lines


def policy_record(settings: Any) -> dict[str, Any]:
    """The results file's ``policy``: what was gated and how, k and the family-wise false-fail bound, and where each
    policy value came from."""
    from ..measure.stats import family_false_fail_bound
    from .settings import POLICY_OPTIONS

    s = settings
    return {"gate": s.gate, "gated": bool(s.gate), "threshold": s.threshold, "min_images": s.min_images,
            "strict": s.strict, "randomisation_threshold": s.randomisation_threshold, "margin": s.margin,
            "margins": dict(s.margins), "fail_correction": s.fail_correction, "k": len(s.gate),
            "family_false_fail_bound": family_false_fail_bound(len(s.gate)) if s.gate else 0.0,
            "regions": s.regions, "region_roles": dict(s.region_roles), "region_threshold": s.region_threshold,
            "region_margin": s.region_margin, "probe": list(s.probe), "attraction_margin": s.attraction_margin,
            "stamp_margin": s.stamp_margin, "max_attraction": s.max_attraction, "max_stamp_mass": s.max_stamp_mass,
            "min_class_agreement": s.min_class_agreement,
            "origins": {name: s.origin(name) for name in POLICY_OPTIONS}, "sources": s.sources}
