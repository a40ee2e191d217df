"""The margins of the comparisons with a baseline: how much a candidate may lose against the released model.

A comparison's non-inferiority margin is either absolute (a number: the mean ABPC difference the candidate may lose)
or relative (a string ``"N%"``: N percent of the baseline's mean ABPC over the paired images). It is set for every
map with ``margin`` (``--margin``), and per map in the ``margins`` table of a policy file, which wins over ``margin``::

    [tool.vit-audit.margins]
    "grad@0" = 0.10
    "chefer@encoder" = "25%"

With neither, a gated map takes its built-in default from :data:`DEFAULT_MARGINS`, and any other map
:data:`FALLBACK_MARGIN` (the documentation's margins page gives the measurement they rest on). The gates on regions,
probes and classes have their own defaults below.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_ATTRACTION_MARGIN", "DEFAULT_MARGINS", "DEFAULT_MIN_CLASS_AGREEMENT", "DEFAULT_REGION_MARGIN",
           "DEFAULT_STAMP_MARGIN", "FALLBACK_MARGIN", "Margin", "margin_for", "parse_margin"]

#: Built-in margins of the policy's gated maps, relative to the baseline's mean ABPC (docs/evidence/margins.md: the
#: smallest multiple of 5% under which no benign retrain of the embedded model fails).
DEFAULT_MARGINS: dict[str, str] = {"grad@0": "95%", "chefer@encoder": "20%"}
#: The margin of a compared map that has none of its own: absolute, the former default of every map.
FALLBACK_MARGIN = 0.05
#: Right for the right reasons (docs/guides/right-reasons.md): the margins of the paired gates on regions
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
