"""Class by class: a comparison with the baseline, per class of the baseline, and the gate that fails a candidate
whose one class collapsed.

A model that learned a shortcut for one class can keep its overall agreement with the released model and its maps'
faithfulness on the other classes: only the class itself shows it (a candidate that learned a stamp for Shirt stops
predicting Shirt on clean shirts). Each class c is the set of paired images the baseline predicts as c.

- :func:`class_table`: per class, for one compared map, the top-1 agreement, the mean ABPC difference d, the median
  Spearman of the maps, and the drift of the class's mean map: 1 - cosine between the candidate's and the baseline's
  mean of r⁺ / sum(r⁺) over the class's images (0: the same mean map; 1: disjoint).
- :func:`class_agreement`: the gate. Per class, the exact one-sided binomial p-value of H0 "the candidate agrees with
  the baseline on at least ``floor`` of the class's images"; Holm's step-down over the classes; a class fails when its
  adjusted p is below 0.05. A class of few images cannot fail (its p stays large), and the record says how many such
  classes there were. The 95% Clopper-Pearson interval of each class's agreement is reported.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta, binom

from ..measure.stats import holm

__all__ = ["LEVEL", "class_agreement", "class_table", "mean_map_drift", "normalised_positive"]

LEVEL = 0.05  # the family-wise error rate of the per-class fail verdicts (Holm)


def normalised_positive(grid: Any) -> np.ndarray | None:
    """r⁺ / sum(r⁺) of a map, as float64; None when the map is missing or has no positive value."""
    if grid is None:
        return None
    values = np.maximum(np.asarray(grid, dtype=np.float64), 0.0)
    total = values.sum()
    return values / total if total > 0 and np.isfinite(total) else None


def _on_grid(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if values.shape == shape:
        return values
    tensor = torch.as_tensor(values)[None, None]
    return F.interpolate(tensor, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def mean_map_drift(baseline_grids: Sequence[Any], candidate_grids: Sequence[Any]) -> float:
    """1 - cosine between the mean normalised r⁺ map of the candidate and of the baseline (nan without a map).

    The candidate's maps are resampled (bilinear) to the baseline's grid where the grids differ.
    """
    base = [m for m in (normalised_positive(g) for g in baseline_grids) if m is not None]
    cand = [m for m in (normalised_positive(g) for g in candidate_grids) if m is not None]
    if not base or not cand:
        return float("nan")
    one = np.mean(base, axis=0)
    other = np.mean([_on_grid(m, one.shape) for m in cand], axis=0)
    norm = float(np.linalg.norm(one) * np.linalg.norm(other))
    return float(1.0 - (one * other).sum() / norm) if norm > 0 else float("nan")


def class_table(pairs: list[dict[str, Any]], grids: dict[str, tuple[Any, Any]]) -> list[dict[str, Any]]:
    """One row per class of the baseline (most images first), for one compared map.

    Args:
        pairs: a comparison's pairs (``audit.verdicts.compare.compare_map``): ``image``, ``baseline_class``,
            ``baseline_class_name``, ``candidate_class``, ``d``, ``spearman``.
        grids: image -> (baseline grid, candidate grid of the baseline's class).
    """
    by_class: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for pair in pairs:
        by_class[pair["baseline_class"]].append(pair)
    rows = []
    for cls, members in by_class.items():
        rho = [p["spearman"] for p in members if p["spearman"] is not None and math.isfinite(p["spearman"])]
        rows.append({
            "class": cls, "class_name": members[0].get("baseline_class_name"), "n": len(members),
            "top1_agreement": float(np.mean([p["candidate_class"] == cls for p in members])),
            "d": float(np.mean([p["d"] for p in members])),
            "spearman": float(np.median(rho)) if rho else float("nan"),
            "drift": mean_map_drift([grids.get(p["image"], (None, None))[0] for p in members],
                                    [grids.get(p["image"], (None, None))[1] for p in members]),
        })
    return sorted(rows, key=lambda r: (-r["n"], str(r["class"])))


def _clopper_pearson(agree: int, n: int, level: float = 0.95) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low = float(beta.ppf(tail, agree, n - agree + 1)) if agree > 0 else 0.0
    high = float(beta.ppf(1.0 - tail, agree + 1, n - agree)) if agree < n else 1.0
    return low, high


def class_agreement(pairs: list[tuple[int, str | None, int]], floor: float | None,
                    level: float = LEVEL) -> dict[str, Any]:
    """The per-class collapse gate over paired images.

    Args:
        pairs: (baseline class, its name, candidate class) of every paired image both models could audit.
        floor: the agreement below which a class has collapsed (None: measured, not gated).
        level: the family-wise error rate of the fail verdicts.

    Returns:
        A record: ``classes`` (per class: n, agree, agreement, ci95, p, p_holm, verdict), ``worst`` (the class of
        lowest agreement, then fewest images), ``verdict`` (``pass``, ``fail`` or ``not gated``) and ``reason``.
    """
    by_class: dict[int, list[int]] = defaultdict(list)
    names: dict[int, str | None] = {}
    for base, name, cand in pairs:
        by_class[base].append(int(cand == base))
        names[base] = name
    rows: list[dict[str, Any]] = []
    for cls, hits in by_class.items():
        n, agree = len(hits), int(sum(hits))
        p = float(binom.cdf(agree, n, floor)) if floor is not None else float("nan")
        rows.append({"class": cls, "class_name": names[cls], "n": n, "agree": agree, "agreement": agree / n,
                     "ci95": list(_clopper_pearson(agree, n)), "p": p})
    if floor is not None and rows:
        for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
            row["p_holm"] = adjusted
            row["verdict"] = "fail" if adjusted < level else "pass"
    rows.sort(key=lambda r: (r["agreement"], -r["n"], str(r["class"])))
    worst = rows[0] if rows else None
    failed = [r for r in rows if r.get("verdict") == "fail"]
    # the fewest images on which a class with no agreement at all would fail on its own (Holm's last step)
    decidable = next((n for n in range(1, 10_000) if floor is not None and floor > 0 and
                      (1.0 - floor) ** n < level), None)
    small = [r for r in rows if decidable is not None and r["n"] < decidable]
    total = len(pairs)
    overall = sum(r["agree"] for r in rows) / total if total else float("nan")

    def show(row: dict[str, Any]) -> str:
        name = row["class_name"] or row["class"]
        return (f"{name}: {row['agree']}/{row['n']} ({row['agreement']:.0%}, 95% CI {row['ci95'][0]:.0%}-"
                f"{row['ci95'][1]:.0%})")

    what = (f"top-1 agreement with the baseline {overall:.1%} over {total} paired images in {len(rows)} classes"
            + (f"; lowest {show(worst)}" if worst else ""))
    if floor is None:
        verdict, reason = "not gated", f"{what} (not gated: set --min-class-agreement to gate it)"
    elif failed:
        verdict = "fail"
        reason = (f"{what}; {len(failed)} class(es) agree with the baseline on fewer than {floor:.0%} of their images "
                  f"(one-sided binomial test, Holm over {len(rows)} classes at {level:g}): "
                  + "; ".join(show(r) for r in failed))
    else:
        verdict = "pass"
        reason = f"{what}; no class is shown to agree on fewer than {floor:.0%} of its images"
        if small:
            reason += (f" ({len(small)} class(es) have fewer than {decidable} images, too few to show a collapse "
                       "even with no agreement at all)")
    return {"floor": floor, "level": level, "n_pairs": total, "agreement": overall, "classes": rows,
            "worst": worst, "verdict": verdict, "reason": reason, "failed": [r["class"] for r in failed],
            "decidable_n": decidable,
            "rule": ("per class of the baseline: exact one-sided binomial test of H0 'agreement >= floor'; Holm's "
                     f"step-down over the classes at {level:g}; a class fails when its adjusted p is below it")}
