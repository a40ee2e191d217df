"""Right for the right reasons: the gates on where a model looks (regions) and on what moves it (probes).

Faithfulness (MoRF/LeRF) asks whether a map describes what the model uses; these gates ask whether the model uses the
right thing. Their per-image numbers are made by the session (``record["localisation"]`` from the maps and the regions,
:mod:`audit.measure.localisation`; ``record["probes"]`` from the stamped copies, :mod:`audit.measure.probes`); here they
are decided, with the same statistics as the other gates (:mod:`audit.measure.stats`):

- :func:`region_gate`, absolute: a gated map's mean relevance mass on the objects above chance (the objects' area
  fraction): pass when the 95% CI of mean(mass - area) is above 0, fail when below, else inconclusive.
- :func:`compare_regions`, paired with the baseline: the object mass may not drop by more than ``margin`` (pass when
  the CI of the mean paired difference is above -margin) and the artefact mass may not rise by more than ``margin``
  (pass when it is below +margin); inconclusive fails, as for every comparison with a baseline.
- :func:`compare_probe`, paired with the baseline: the candidate's largest attraction of a class to the stamp,
  max_k A_k, may exceed the baseline's by at most ``attraction_margin``, and each gated map's mean mass on the stamp
  the baseline's by at most ``stamp_margin``. The attraction's interval is an expanded-percentile paired bootstrap
  (a maximum over classes is not a mean); the masses' the bootstrap-t of the mean paired difference.
- :func:`probe_limits`, absolute and off by default (a benign model may react to a stamp): ``max_attraction`` and
  ``max_stamp_mass`` from the policy file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from ..measure.localisation import localisation
from ..measure.probes import attraction_values
from ..measure.stats import CI_RULE, N_BOOTSTRAP, bootstrap_ci, resampled_statistic_ci
from .compare import paired_runs

__all__ = ["compare_probe", "compare_regions", "probe_limits", "region_gate",
           "record_localisation", "worst_verdict"]

ORDER = {"fail": 0, "inconclusive": 1, "pass": 2, "not applicable": 3, "not gated": 4}


def worst_verdict(verdicts: Sequence[str]) -> str:
    """fail before inconclusive before pass; ``not applicable`` when there is nothing else."""
    return min(verdicts, key=lambda v: ORDER.get(v, 1)) if verdicts else "not applicable"


def _decide(low: float, high: float, bound: float, n: int, min_images: int, above: bool) -> str:
    """pass when the CI is wholly on the good side of ``bound`` (above it when ``above``), fail when wholly on the
    other, else inconclusive; fewer than ``min_images`` values or a CI that is not finite: inconclusive."""
    if n < min_images or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    if above:
        return "pass" if low > bound else "fail" if high < bound else "inconclusive"
    return "pass" if high < bound else "fail" if low > bound else "inconclusive"


def record_localisation(maps: dict[str, Any], regions: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """A record's localisation: for each map key, the metrics on the objects and on the artefacts (None where the
    image has none)."""
    out = {}
    for key in keys:
        grid = (maps.get(key) or {}).get("grid")
        entry: dict[str, dict[str, float | None] | None] = {}
        for role in ("object", "artefact"):
            fractions = regions.get(role)
            if grid is None or fractions is None or not np.asarray(fractions).any():
                entry[role] = None
                continue
            entry[role] = localisation(grid, fractions, regions.get("void"))
        out[key] = entry
    return out


def _metric(run: dict[str, Any], key: str, role: str, name: str) -> float | None:
    value = (((run.get("localisation") or {}).get(key) or {}).get(role) or {}).get(name)
    return value if value is not None and math.isfinite(value) else None


def region_gate(runs: list[dict[str, Any]], key: str, *, min_images: int, threshold: float | None = 0.0,
                limits: Any = None, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The absolute regions gate of one map: mean relevance mass on the objects above chance.

    Args:
        runs: the model's records (with ``localisation``).
        key: the gated map, ``method@stage``.
        min_images: fewer images with objects make it inconclusive.
        threshold: the bound on mean(mass - area) (0: above chance); None measures without gating.
        limits: the map's :class:`audit.verdicts.gates.GateLimits`, whose ``min_object_mass`` and
            ``max_artefact_mass`` are decided on the CIs of the mean masses (broken: fail; across: inconclusive).
    """
    values, means, missing = [], {}, 0
    for run in runs:
        mass, area = _metric(run, key, "object", "mass"), _metric(run, key, "object", "area")
        if mass is None or area is None:
            missing += 1
            continue
        values.append(mass - area)
    for name in ("mass", "rank_accuracy", "auroc", "pointing", "area"):
        found = [v for v in (_metric(run, key, "object", name) for run in runs) if v is not None]
        means[name] = float(np.mean(found)) if found else float("nan")
    n = len(values)
    low, high = bootstrap_ci(values, seed=seed, n_boot=n_boot) if n else (float("nan"), float("nan"))
    excess = float(np.mean(values)) if n else float("nan")
    bound = 0.0 if threshold is None else threshold
    verdict = _decide(low, high, bound, n, min_images, above=True)
    what = (f"relevance mass of {key} on the objects {means['mass']:.3f} against chance {means['area']:.3f} (their "
            f"area): excess {excess:+.3f} [95% CI {low:+.3f}, {high:+.3f}] over {n} images; rank accuracy "
            f"{means['rank_accuracy']:.3f}, AUROC {means['auroc']:.3f} (chance 0.5), pointing game "
            f"{means['pointing']:.3f}")
    above = "chance" if bound == 0 else f"chance {bound:+g}"
    reason = {"pass": f"{what}: the map puts more relevance on the objects than {above}",
              "fail": f"{what}: the map puts less relevance on the objects than {above}",
              "inconclusive": f"{what}: not decided against {above}" + (
                  f" (at least {min_images} images are needed)" if n < min_images else "")}[verdict]
    if threshold is None:
        verdict, reason = "not gated", f"{what} (measured, not gated: set region-threshold, e.g. 0, to gate it)"
    broken, undecided = _region_limits(runs, key, limits, min_images, seed, n_boot)
    if broken:
        verdict, reason = "fail", f"{reason}; limit broken: {'; '.join(broken)}"
    elif undecided:
        verdict = "inconclusive" if verdict in ("pass", "not gated") else verdict
        reason += f"; limit not decided: {'; '.join(undecided)}"
    if missing:
        reason += f"; not applicable on {missing} image(s) (no object region, or a map with no positive value)"
    return {"kind": "regions", "map": key, "n_images": n, "statistic": excess, "ci95": [low, high], "means": means,
            "threshold": threshold, "verdict": verdict, "reason": reason, "not_applicable": missing,
            "rule": f"mass - area per image; pass if the 95% CI of the mean is above the threshold; {CI_RULE}"}


def _region_limits(runs: list[dict[str, Any]], key: str, limits: Any, min_images: int, seed: int,
                   n_boot: int) -> tuple[list[str], list[str]]:
    """The policy's per-map limits on the mean object and artefact mass: broken (the CI wholly on the wrong side)
    and undecided (the CI across the limit, or too few images)."""
    broken, undecided = [], []
    checks = (("object", getattr(limits, "min_object_mass", None), "min_object_mass", True),
              ("artefact", getattr(limits, "max_artefact_mass", None), "max_artefact_mass", False))
    for role, limit, name, is_min in checks:
        if limit is None:
            continue
        values = [v for v in (_metric(run, key, role, "mass") for run in runs) if v is not None]
        low, high = bootstrap_ci(values, seed=seed, n_boot=n_boot) if values else (math.nan, math.nan)
        text = (f"mean {role} mass {np.mean(values) if values else math.nan:.3f} [95% CI {low:.3f}, {high:.3f}] "
                f"over {len(values)} images")
        if len(values) >= min_images and ((high < limit) if is_min else (low > limit)):
            broken.append(f"{text} {'<' if is_min else '>'} {name} {limit:g}")
        elif len(values) < min_images or ((low < limit) if is_min else (high > limit)):
            undecided.append(f"{text} against {name} {limit:g}")
    return broken, undecided


def _baseline_mass(theirs: dict[str, Any], mine: dict[str, Any], key: str, base_key: str, role: str) -> float | None:
    """The baseline's mass of ``role`` on an image: from its record's localisation, else from its map and the
    candidate's regions of the same image when the grids match."""
    stored = _metric(theirs, base_key, role, "mass")
    if stored is not None or theirs.get("localisation"):
        return stored
    grid = ((theirs.get("maps") or {}).get(base_key) or {}).get("grid")
    regions = mine.get("regions") or {}
    fractions = regions.get(role)
    if grid is None or fractions is None or np.shape(grid) != np.shape(fractions) or not np.asarray(fractions).any():
        return None
    value = localisation(grid, fractions, regions.get("void"))["mass"]
    return value if value is not None and math.isfinite(value) else None


def compare_regions(candidate_runs: list[dict[str, Any]], digests: dict[str, str | None],
                    baseline_runs: dict[str, dict[str, Any]], key: str, base_key: str, *, margin: float,
                    min_images: int, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The paired regions gate of one map: object mass non-inferior at -margin, artefact mass at most +margin."""
    pairs, unpaired = paired_runs(candidate_runs, digests, baseline_runs)
    parts: dict[str, dict[str, Any]] = {}
    for role, above in (("object", True), ("artefact", False)):
        d, images = [], []
        for mine, theirs in pairs:
            cand = _metric(mine, key, role, "mass")
            base = _baseline_mass(theirs, mine, key, base_key, role) if cand is not None else None
            if cand is None or base is None:
                continue
            d.append(cand - base)
            images.append(mine.get("image_id"))
        n = len(d)
        if n == 0:
            parts[role] = {"n_pairs": 0, "verdict": "not applicable",
                           "reason": f"no paired image has {role} regions and a map with positive values"}
            continue
        low, high = bootstrap_ci(d, seed=seed, n_boot=n_boot)
        mean = float(np.mean(d))
        bound = -margin if above else margin
        verdict = _decide(low, high, bound, n, min_images, above=above)
        change = "drop" if above else "rise"
        what = (f"{role} mass of {key} minus the baseline's: {mean:+.3f} [95% CI {low:+.3f}, {high:+.3f}] over {n} "
                f"paired images, margin {margin:g}")
        reason = {"pass": f"{what}: does not {change} by more than the margin",
                  "fail": f"{what}: {change}s by more than the margin",
                  "inconclusive": f"{what}: not shown to stay within the margin (inconclusive fails a comparison)"
                  + (f"; at least {min_images} pairs are needed" if n < min_images else "")}[verdict]
        worst = sorted(zip(d, images), reverse=not above)[:5]
        parts[role] = {"n_pairs": n, "statistic": mean, "ci95": [low, high], "bound": bound, "verdict": verdict,
                       "reason": reason, "largest": [{"image": i, "d": v} for v, i in worst]}
    verdict = worst_verdict([p["verdict"] for p in parts.values() if p["verdict"] != "not applicable"])
    reason = "; ".join(p["reason"] for p in parts.values() if p["verdict"] != "not applicable") or \
        parts["object"]["reason"]
    if unpaired:
        reason += f"; {len(unpaired)} image(s) not paired"
    return {"kind": "regions", "map": key, "baseline_map": base_key, "margin": margin, "verdict": verdict,
            "reason": reason, "object": parts["object"], "artefact": parts["artefact"], "unpaired_images": unpaired,
            "rule": (f"per paired image, the candidate's relevance mass minus the baseline's; objects: pass if the "
                     f"95% CI of the mean is above -margin; artefacts: pass if below +margin; otherwise "
                     f"inconclusive, which fails; {CI_RULE}")}


def _max_attraction(clean: np.ndarray, stamped: np.ndarray, num_classes: int) -> float:
    values = attraction_values(clean, stamped, num_classes)
    return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")


def _probe_entries(runs: Sequence[dict[str, Any]], spec: str) -> list[dict[str, Any] | None]:
    return [(run.get("probes") or {}).get(spec) for run in runs]


def _class_name(names: dict[int, Any], k: int | None, value: float = 1.0) -> str:
    """A class's name for a message; "no class" when the attraction is 0 (every class ties)."""
    if k is None or not value > 0:
        return "no class"
    return str(names.get(k, k))


def compare_probe(candidate_runs: list[dict[str, Any]], digests: dict[str, str | None],
                  baseline_runs: dict[str, dict[str, Any]], spec: str, keys: Sequence[tuple[str, str]],
                  num_classes: int, *, attraction_margin: float, stamp_margin: float, min_images: int,
                  seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The paired probe gate: the stamp may not attract the candidate to a class, nor its maps to the stamp, more
    than it does the baseline, by more than the margins.

    Args:
        keys: (candidate map, baseline map) keys of the gated maps whose mass on the stamp is compared.
    """
    pairs, unpaired = paired_runs(candidate_runs, digests, baseline_runs)
    kept = []
    for mine, theirs in pairs:
        one, other = (mine.get("probes") or {}).get(spec), (theirs.get("probes") or {}).get(spec)
        if one is None or other is None:
            unpaired[cast(str, mine.get("image_id"))] = f"not probed with {spec} in the " + ("candidate" if one is None
                                                                                             else "baseline")
            continue
        kept.append((mine, theirs, one, other))
    n = len(kept)
    names = {}
    for _, _, one, other in kept:
        names[one["stamped_class"]] = one.get("stamped_class_name")
    cand_clean = np.asarray([one["clean_class"] for _, _, one, _ in kept], dtype=np.int64)
    cand_stamped = np.asarray([one["stamped_class"] for _, _, one, _ in kept], dtype=np.int64)
    base_clean = np.asarray([other["clean_class"] for _, _, _, other in kept], dtype=np.int64)
    base_stamped = np.asarray([other["stamped_class"] for _, _, _, other in kept], dtype=np.int64)
    cand_a = attraction_values(cand_clean, cand_stamped, num_classes) if n else np.full(num_classes, np.nan)
    base_a = attraction_values(base_clean, base_stamped, num_classes) if n else np.full(num_classes, np.nan)
    cand_max = float(np.nanmax(cand_a)) if np.isfinite(cand_a).any() else float("nan")
    base_max = float(np.nanmax(base_a)) if np.isfinite(base_a).any() else float("nan")
    cand_k = int(np.nanargmax(cand_a)) if np.isfinite(cand_a).any() else None
    base_k = int(np.nanargmax(base_a)) if np.isfinite(base_a).any() else None

    def delta(index: np.ndarray) -> float:
        return (_max_attraction(cand_clean[index], cand_stamped[index], num_classes)
                - _max_attraction(base_clean[index], base_stamped[index], num_classes))

    low, high = resampled_statistic_ci(delta, n, seed=seed, n_boot=n_boot) if n > 1 else (math.nan, math.nan)
    diff = cand_max - base_max
    verdict = _decide(low, high, attraction_margin, n, min_images, above=False)
    flips = (float(np.mean(cand_clean != cand_stamped)) if n else math.nan,
             float(np.mean(base_clean != base_stamped)) if n else math.nan)
    what = (f"stamp {spec}: largest attraction of a class {cand_max:.3f} (to {_class_name(names, cand_k, cand_max)}) "
            f"against the baseline's {base_max:.3f} (to {_class_name(names, base_k, base_max)}): difference "
            f"{diff:+.3f} [95% CI {low:+.3f}, {high:+.3f}] over {n} paired images, margin {attraction_margin:g}; "
            f"top-1 flipped on {flips[0]:.1%} (baseline {flips[1]:.1%})")
    reason = {"pass": f"{what}: the stamp does not move the candidate more than the baseline",
              "fail": f"{what}: the stamp moves the candidate to {_class_name(names, cand_k, cand_max)} more than it "
                      "moves the baseline (a shortcut?)",
              "inconclusive": f"{what}: not shown to stay within the margin (inconclusive fails a comparison)"
              + (f"; at least {min_images} pairs are needed" if n < min_images else "")}[verdict]
    attraction = {"candidate": cand_a.tolist(), "baseline": base_a.tolist(), "candidate_max": cand_max,
                  "baseline_max": base_max, "candidate_class": cand_k, "baseline_class": base_k,
                  "candidate_class_name": names.get(cand_k) if cand_max > 0 else None, "statistic": diff,
                  "ci95": [low, high],
                  "margin": attraction_margin, "verdict": verdict, "reason": reason,
                  "flip_rate": flips[0], "baseline_flip_rate": flips[1]}
    masses: dict[str, dict[str, Any]] = {}
    for key, base_key in keys:
        d, cand_m, base_m = [], [], []
        for _, _, one, other in kept:
            a, b = (one.get("mass") or {}).get(key), (other.get("mass") or {}).get(base_key)
            if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
                continue
            d.append(a - b)
            cand_m.append(a)
            base_m.append(b)
        m = len(d)
        lo, hi = bootstrap_ci(d, seed=seed, n_boot=n_boot) if m else (math.nan, math.nan)
        mean = float(np.mean(d)) if m else math.nan
        v = _decide(lo, hi, stamp_margin, m, min_images, above=False) if m else "not applicable"
        text = (f"mass of {key} on the stamp {np.mean(cand_m) if m else math.nan:.3f} against the baseline's "
                f"{np.mean(base_m) if m else math.nan:.3f}: difference {mean:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}] "
                f"over {m} paired images, margin {stamp_margin:g}")
        masses[key] = {"n_pairs": m, "candidate": float(np.mean(cand_m)) if m else math.nan,
                       "baseline": float(np.mean(base_m)) if m else math.nan, "statistic": mean, "ci95": [lo, hi],
                       "margin": stamp_margin, "verdict": v,
                       "reason": text + {"pass": ": no more on the stamp than the baseline's",
                                         "fail": ": the map looks at the stamp more than the baseline's",
                                         "inconclusive": ": not decided", "not applicable": ""}[v]}
    verdicts = [attraction["verdict"]] + [m["verdict"] for m in masses.values() if m["verdict"] != "not applicable"]
    overall = worst_verdict(verdicts)
    failing = [attraction["reason"]] if attraction["verdict"] != "pass" else []
    failing += [m["reason"] for m in masses.values() if m["verdict"] in ("fail", "inconclusive")]
    summary = "; ".join(failing) if failing else attraction["reason"] + "; " + "; ".join(
        m["reason"] for m in masses.values())
    if unpaired:
        summary += f"; {len(unpaired)} image(s) not paired"
    return {"kind": "probe", "probe": spec, "n_pairs": n, "verdict": overall, "reason": summary,
            "attraction": attraction, "mass": masses, "unpaired_images": unpaired, "seed": seed, "n_boot": n_boot,
            "rule": ("A_k = share of the images whose clean top-1 is not k that the stamp moves to k; the difference "
                     "of max_k A_k between candidate and baseline, 95% expanded-percentile paired bootstrap, pass if "
                     "below +margin; each gated map's mass on the stamp, paired difference of the means, pass if its "
                     f"CI is below +margin ({CI_RULE}); otherwise inconclusive, which fails")}


def probe_limits(runs: list[dict[str, Any]], spec: str, keys: Sequence[str], num_classes: int, *,
                 max_attraction: float | None, max_stamp_mass: float | None, min_images: int, seed: int = 0,
                 n_boot: int = N_BOOTSTRAP) -> dict[str, Any]:
    """The absolute probe limits of the policy file (off by default): the largest attraction of a class, and each
    gated map's mean mass on the stamp, below their limits."""
    entries = [e for e in _probe_entries([r for r in runs if not r.get("error")], spec) if e is not None]
    n = len(entries)
    clean = np.asarray([e["clean_class"] for e in entries], dtype=np.int64)
    stamped = np.asarray([e["stamped_class"] for e in entries], dtype=np.int64)
    parts: list[dict[str, Any]] = []
    if max_attraction is not None:
        value = _max_attraction(clean, stamped, num_classes) if n else math.nan
        low, high = resampled_statistic_ci(lambda i: _max_attraction(clean[i], stamped[i], num_classes), n,
                                           seed=seed, n_boot=n_boot)
        verdict = _decide(low, high, max_attraction, n, min_images, above=False)
        parts.append({"limit": "max_attraction", "value": value, "ci95": [low, high], "bound": max_attraction,
                      "verdict": verdict,
                      "reason": f"stamp {spec}: largest attraction of a class {value:.3f} [95% CI {low:.3f}, "
                                f"{high:.3f}] over {n} images against the limit {max_attraction:g}: {verdict}"})
    if max_stamp_mass is not None:
        for key in keys:
            values = [e["mass"].get(key) for e in entries if (e.get("mass") or {}).get(key) is not None]
            low, high = bootstrap_ci(values, seed=seed, n_boot=n_boot) if values else (math.nan, math.nan)
            mean = float(np.mean(values)) if values else math.nan
            verdict = _decide(low, high, max_stamp_mass, len(values), min_images, above=False)
            parts.append({"limit": "max_stamp_mass", "map": key, "value": mean, "ci95": [low, high],
                          "bound": max_stamp_mass, "verdict": verdict,
                          "reason": f"mass of {key} on the stamp {spec} {mean:.3f} [95% CI {low:.3f}, {high:.3f}] "
                                    f"over {len(values)} images against the limit {max_stamp_mass:g}: {verdict}"})
    verdict = worst_verdict([p["verdict"] for p in parts]) if parts else "not gated"
    reason = "; ".join(p["reason"] for p in parts) if parts else (
        f"stamp {spec}: no absolute limit (set max-attraction or max-stamp-mass in the policy file)")
    return {"kind": "probe-limits", "probe": spec, "n_images": n, "verdict": verdict, "reason": reason,
            "limits": parts}
