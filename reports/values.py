"""Lenient readers of the results dict and the report's number formats.

A results file may be partial or hand-edited: every reader here tolerates missing, null or mistyped fields.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from audit.model.layout import stage_order

__all__ = ["as_dict", "as_list", "as_num", "as_pair", "as_records", "fill_text", "fmt", "fmt_ci", "sorted_stages",
           "stage_title"]


# -- small readers that tolerate missing or null fields -----------------------------------------------------------
def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def as_pair(value: Any) -> tuple[float | None, float | None] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return as_num(value[0]), as_num(value[1])
    return None


def as_records(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The records of a top-level list of the results (``runs``, ``gates``, ...); a non-dict record reads as ``{}``."""
    return [as_dict(record) for record in as_list(results.get(key))]


def fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    """A number for a table cell; ``n/a`` for null or non-numbers."""
    number = as_num(value)
    if number is None:
        return "n/a"
    return f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"


def fmt_ci(value: Any, digits: int = 3, signed: bool = False) -> str:
    pair = as_pair(value)
    if pair is None:
        return "n/a"
    return f"[{fmt(pair[0], digits, signed)}, {fmt(pair[1], digits, signed)}]"


# -- stages: patch_embed, embed, blocks 0..L-1, encoder -----------------------------------------------------------
FILL_WORDS = {
    "mean": "the model's normalisation mean (0 after normalising)",
    "blur": "the image under a Gaussian blur (sigma 5 px at 224 px, scaled with the input)",
    "road": "ROAD's noisy linear imputation from the kept neighbours (noise sigma 0.01, seeded)",
}


def fill_text(fill: Any) -> str:
    """The removal fill in words: ``0.498 = 127/255``, one value per channel in brackets, or a recipe's words."""
    if isinstance(fill, str):
        return FILL_WORDS.get(fill, fill)
    if isinstance(fill, (list, tuple)):
        return "(" + ", ".join(fmt(v, 3) for v in fill) + ")"
    return fmt(fill, 3) + (f" = {round(fill * 255)}/255" if as_num(fill) is not None else "")




def sorted_stages(stages: Iterable[object]) -> list[str]:
    return sorted(dict.fromkeys(str(s) for s in stages), key=stage_order)


def stage_title(stage: str) -> str:
    return {"input": "input", "patch_embed": "patch emb.", "embed": "embedding", "encoder": "encoder"}.get(
        stage, f"block {stage}")
