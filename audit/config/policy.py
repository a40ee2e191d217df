"""The built-in release policy, and the margins of the comparisons with a baseline.

A run gates something unless it is told not to: with no policy file, and nothing on the command line, the built-in
policy below applies (README, "Policy"). ``--gate none`` turns every gate off, and the run then says so: its header
and its report's verdict read "no gate", never a pass.

A comparison's non-inferiority margin is either absolute (a number: the mean ABPC difference the candidate may lose)
or relative (a string ``"N%"``: N percent of the baseline's mean ABPC over the paired images). It is set for every
map with ``margin`` (``--margin``), and per map in the ``margins`` table of a policy file, which wins over ``margin``::

    [tool.vit-audit.margins]
    "grad@0" = 0.10
    "chefer@encoder" = "25%"

With neither, a gated map takes its built-in default from :data:`DEFAULT_MARGINS`, and any other map
:data:`FALLBACK_MARGIN` (README, "The default margins, measured", gives the measurement they rest on).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_ATTRACTION_MARGIN", "DEFAULT_GATES", "DEFAULT_MARGINS", "DEFAULT_MIN_CLASS_AGREEMENT",
           "DEFAULT_REGION_MARGIN", "DEFAULT_STAMP_MARGIN", "FALLBACK_MARGIN", "GATE_NONE", "Margin", "POLICY_METHODS",
           "margin_for", "parse_margin"]

#: The maps the built-in policy computes (the paper's, Chefer et al.'s, and the two baselines).
POLICY_METHODS = ("cam", "cam_hidden", "grad", "grad_cls", "chefer", "random", "center")
#: The maps the built-in policy gates.
DEFAULT_GATES = ("grad@0", "chefer@encoder")
#: ``--gate none``: the run gates nothing, and says so.
GATE_NONE = "none"
#: Built-in margins of the policy's gated maps, relative to the baseline's mean ABPC (README, "The default margins,
#: measured": the smallest multiple of 5% under which no benign retrain of the embedded model fails).
DEFAULT_MARGINS: dict[str, str] = {"grad@0": "95%", "chefer@encoder": "20%"}
#: The margin of a compared map that has none of its own: absolute, the former default of every map.
FALLBACK_MARGIN = 0.05
#: Right for the right reasons (README, "Right for the right reasons"): the margins of the paired gates on regions
#: (relevance mass on the objects may drop, on artefacts rise, by at most this) and probes (the largest attraction
#: of a class to the stamp, and a map's mass on the stamp, may rise by at most these), and the top-1 agreement with
#: the baseline below which a class has collapsed.
DEFAULT_REGION_MARGIN = 0.10
DEFAULT_ATTRACTION_MARGIN = 0.05
DEFAULT_STAMP_MARGIN = 0.05
DEFAULT_MIN_CLASS_AGREEMENT = 0.5


@dataclass(frozen=True)
class Margin:
    """A non-inferiority margin: ``value`` absolute, or ``value`` x the baseline's mean ABPC when ``relative``."""

    value: float
    relative: bool = False

    def resolve(self, baseline_abpc: float) -> float:
        """The absolute margin against a baseline whose mean ABPC over the paired images is ``baseline_abpc``.

        A relative margin of a baseline that is not better than a random map (mean ABPC <= 0) is 0: the candidate
        must then show that it is no worse at all.
        """
        if not self.relative:
            return self.value
        if not math.isfinite(baseline_abpc):
            return float("nan")
        return self.value * max(0.0, baseline_abpc)

    def text(self) -> str:
        return f"{self.value * 100:g}% of the baseline's mean ABPC" if self.relative else f"{self.value:g}"

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_margin(value: Any, where: str = "margin") -> Margin:
    """A margin from a number (absolute, in [0, 1]) or a string ``"N%"`` (relative, 0 <= N <= 1000) or ``"0.1"``.

    Raises:
        ValueError: one line naming ``where`` and the value.
    """
    if isinstance(value, Margin):
        return value
    problem = (f"{where}: {reprlib.repr(value)} is not a margin: give an ABPC difference in [0, 1] (e.g. 0.05) or a "
               "percentage of the baseline's mean ABPC in [0%, 1000%] (e.g. \"25%\")")
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, str):
        text = value.strip()
        relative = text.endswith("%")
        try:
            number = float(text[:-1] if relative else text)
        except ValueError:
            raise ValueError(problem) from None
        if relative:
            if not (math.isfinite(number) and 0.0 <= number <= 1000.0):
                raise ValueError(problem)
            return Margin(number / 100.0, relative=True)
        value = number
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(problem)
    return Margin(float(value))


def margin_for(key: str, margins: Mapping[str, Any], margin: Any) -> tuple[Margin, str]:
    """The margin of the compared map ``key`` (``method@stage`` as written in the policy) and where it came from.

    Args:
        key: the gate as written (``grad@0``, ``chefer@encoder``, ``cam@-1``).
        margins: the ``margins`` table (per map).
        margin: ``margin`` (every map), or None when not given.
    """
    if key in margins:
        return parse_margin(margins[key], f"margins.{key}"), f"margins.{key}"
    if margin is not None:
        return parse_margin(margin), "margin"
    if key in DEFAULT_MARGINS:
        return parse_margin(DEFAULT_MARGINS[key]), "built-in default for this map"
    return parse_margin(FALLBACK_MARGIN), "built-in default"


def policy_lines(settings: Any) -> list[str]:
    """The header's account of the policy: what is gated (or that nothing is), k and the family-wise false-fail bound,
    and where each policy value came from."""
    from .settings import POLICY_OPTIONS
    from .stats import family_false_fail_bound

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
    from .settings import POLICY_OPTIONS
    from .stats import family_false_fail_bound

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
