"""Release gates: a faithfulness statistic over an image set, with its CI, against a threshold.

The statistic of a gated (method, stage) is the mean ABPC (LeRF AUC - MoRF AUC) over the images, with a seeded 95%
bootstrap CI resampling images (:data:`audit.measure.stats.CI_RULE` says which interval). A random map's expected ABPC
is exactly 0, so the default threshold 0 means "better than a random map":

- pass: the CI's lower bound is above the threshold, and every optional absolute limit is met by its own CI;
- fail: the CI's upper bound is below the threshold, or an absolute limit is broken by its whole CI;
- inconclusive: otherwise, or with fewer than ``min_images`` images. Never a pass.

Every gate also states its power: the per-image sd, the smallest distance from the threshold its CI resolves with 80%
power at its n, and the images an inconclusive gate would need.
"""
from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..measure.stats import (
    CI_METHOD,
    CI_RULE,
    N_BOOTSTRAP,
    bootstrap_ci,
    detectable_difference,
    holm,
    images_needed,
    one_sided_p,
)
from ..ranges import finite

__all__ = ["FLAT_TOLERANCE", "GateInput", "GateLimits", "LIMIT_NAMES", "apply_holm", "evaluate_gate", "gate_inputs",
           "MIN_IMAGES", "POWER", "VERDICTS", "constant_curve", "power_record", "power_text"]

MIN_IMAGES = 20  # docs/concepts/statistics.md: below it the 95% intervals under-cover
VERDICTS = ("pass", "fail", "inconclusive")
WORST_LISTED = 3


@dataclass(frozen=True)
class GateLimits:
    """Optional absolute limits on the means, checked beside the CI rule (None: not checked)."""

    max_morf_auc: float | None = None
    min_lerf_auc: float | None = None
    min_abpc: float | None = None
    # with --regions: the mean relevance mass on the objects (audit.verdicts.reasons)
    min_object_mass: float | None = None
    max_artefact_mass: float | None = None  # with --regions: the mean relevance mass on the artefacts

    @classmethod
    def from_mapping(cls, values: Mapping[str, float], where: str) -> GateLimits:
        """Limits from a table (``where`` names it in errors).

        Raises:
            ValueError: one line: an unknown limit name, or a value that is not a finite number (bools included).
        """
        unknown = set(values) - set(LIMIT_NAMES)
        if unknown:
            raise ValueError(f"{where}: unknown limits {sorted(unknown)}; allowed: {', '.join(LIMIT_NAMES)}")
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite(value):
                raise ValueError(f"{where}.{name}: expected a finite number, got {reprlib.repr(value)}")
        return cls(**{k: float(v) for k, v in values.items()})


LIMIT_NAMES = tuple(f.name for f in fields(GateLimits))



@dataclass
class _Stat:
    mean: float
    ci: tuple[float, float]


@dataclass
class GateInput:
    """Per-image AUCs of one gated map.

    ``degenerate`` lists the images where the map could not be ranked; ``flat`` the measured images whose class
    probability did not move under any removal (MoRF and LeRF curves constant), where ABPC is 0 whatever the map.
    """

    images: list[str] = field(default_factory=list)
    morf_auc: list[float] = field(default_factory=list)
    lerf_auc: list[float] = field(default_factory=list)
    degenerate: dict[str, str] = field(default_factory=dict)
    flat: list[str] = field(default_factory=list)


FLAT_TOLERANCE = 1e-12  # a class probability that moves less than this under every removal is constant


def gate_inputs(runs: Sequence[dict], method: str, stage: str) -> tuple[GateInput, GateInput, list[str]]:
    """The per-image AUCs of ``method@stage`` and of ``random@stage`` (its baseline) from a model's run records, and
    the images that could not be read."""
    data, baseline = GateInput(), GateInput()
    skipped = []
    for run in runs:
        if run.get("error"):
            skipped.append(run["image_id"])
            continue
        for target, key in ((data, f"{method}@{stage}"), (baseline, f"random@{stage}")):
            entry = run["maps"].get(key)
            if entry is None:
                continue
            if entry["morf_auc"] is None:
                target.degenerate[run["image_id"]] = entry["reason"] or "not measured"
                continue
            target.images.append(run["image_id"])
            target.morf_auc.append(entry["morf_auc"])
            target.lerf_auc.append(entry["lerf_auc"])
            if constant_curve(entry["morf"]) and constant_curve(entry["lerf"]):
                target.flat.append(run["image_id"])
    return data, baseline, skipped


def constant_curve(curve: list[float | None] | None) -> bool:
    values = [v for v in curve or [] if v is not None]
    return bool(values) and max(values) - min(values) <= FLAT_TOLERANCE


def _stat(values: Sequence[float], seed: int, n_boot: int) -> _Stat:
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return _Stat(float("nan"), (float("nan"), float("nan")))
    return _Stat(float(data.mean()), bootstrap_ci(data, seed=seed, n_boot=n_boot))


def _fmt(stat: _Stat) -> str:
    return f"{stat.mean:+.3f} [95% CI {stat.ci[0]:+.3f}, {stat.ci[1]:+.3f}]"


def power_record(values: Sequence[float], distance: float | None = None, min_images: int = 2) -> dict:
    """What a statistic over these per-image values can resolve: the per-image sd, the smallest distance from a bound
    that the 95% CI separates from it with 80% power at this n, and (with ``distance``) the images needed to resolve
    that distance (:func:`audit.measure.stats.detectable_difference`, :func:`audit.measure.stats.images_needed`;
    never fewer than ``min_images``)."""
    data = np.asarray(values, dtype=np.float64)
    sd = float(data.std(ddof=1)) if data.size > 1 else float("nan")
    record: dict[str, float | None] = {
        "sd": sd, "n": int(data.size), "power": POWER,
        "detectable": detectable_difference(sd, int(data.size), power=POWER) if data.size > 1 else float("nan")}
    if distance is not None:
        record["distance"] = distance
        record["images_needed"] = (max(min_images, images_needed(sd, distance, power=POWER))
                                   if np.isfinite(sd) and sd > 0 and distance > 0 else None)
    return record


def power_text(power: dict, what: str = "the threshold") -> str:
    """The power record in words (one clause)."""
    if not np.isfinite(power.get("detectable", float("nan"))):
        return "power unknown (fewer than 2 images)"
    text = (f"per-image sd {power['sd']:.3f}: at n={power['n']} the CI resolves a distance of "
            f"{power['detectable']:.3f} from {what} with {power['power']:.0%} power")
    needed = power.get("images_needed")
    if needed is not None:
        text += f"; a distance of {power['distance']:.3f} needs n={needed}"
    return text


POWER = 0.8  # the power the gates plan with


def evaluate_gate(
    model: str,
    method: str,
    stage: str,
    data: GateInput,
    threshold: float = 0.0,
    seed: int = 0,
    n_boot: int = N_BOOTSTRAP,
    min_images: int = MIN_IMAGES,
    limits: GateLimits | None = None,
    baseline: GateInput | None = None,
) -> dict:
    """Decide one gate and explain the decision.

    Args:
        model, method, stage: what is gated.
        data: the per-image AUCs of the gated map.
        threshold: the mean-ABPC threshold.
        seed, n_boot: the bootstrap.
        min_images: fewer images make the gate inconclusive.
        limits: optional absolute limits on the mean MoRF AUC, LeRF AUC and ABPC, each decided on its CI: broken
            when the CI lies wholly on the wrong side, met when wholly on the right side, else undecided.
        baseline: the ``random`` map's AUCs at the same stage, shown beside the gated map.

    Returns:
        A gate record (``docs/results-schema.md``) with ``verdict``, a one-paragraph ``reason``, the ``power`` of the
        gate at its n, and ``p_fail``: the bootstrap p-value of "the mean ABPC is not below the threshold" (for
        ``--fail-correction holm``).
    """
    abpc = [lerf - morf for morf, lerf in zip(data.morf_auc, data.lerf_auc)]
    stat = _stat(abpc, seed, n_boot)
    morf, lerf = _stat(data.morf_auc, seed, n_boot), _stat(data.lerf_auc, seed, n_boot)
    n = len(abpc)
    worst = sorted(zip(data.images, abpc), key=lambda pair: pair[1])[:WORST_LISTED]
    flat = sorted(set(data.flat) & set(data.images))
    distance = abs(stat.mean - threshold) if np.isfinite(stat.mean) else None
    power = power_record(abpc, distance, min_images)
    record: dict[str, Any] = {
        "model": model, "method": method, "stage": stage, "statistic": stat.mean, "ci95": list(stat.ci),
        "threshold": threshold, "n_images": n,
        "morf_auc": morf.mean, "morf_auc_ci95": list(morf.ci), "lerf_auc": lerf.mean, "lerf_auc_ci95": list(lerf.ci),
        "worst_images": [{"image": image, "abpc": value} for image, value in worst],
        "degenerate_images": dict(data.degenerate), "flat_images": list(data.flat), "seed": seed, "n_boot": n_boot,
        "ci_method": CI_METHOD, "power": power,
        "p_fail": one_sided_p(abpc, threshold, "below", seed=seed, n_boot=n_boot) if n > 1 else float("nan"),
        "rule": (f"pass if the 95% CI of the mean ABPC is above {threshold}, fail if below, else inconclusive; "
                 f"at least {min_images} images; limits decided on their CIs; {CI_RULE}"),
    }
    if baseline is not None:
        base = _stat([lerf - morf for morf, lerf in zip(baseline.morf_auc, baseline.lerf_auc)], seed, n_boot)
        record["random_baseline"] = {"statistic": base.mean, "ci95": list(base.ci), "n_images": len(baseline.images)}

    pulled = ", ".join(f"{image} ({value:+.3f})" for image, value in worst)
    what = f"mean ABPC of {method}@{stage} over {n} images is {_fmt(stat)}"
    broken, undecided = _limits(limits, morf, lerf, stat) if n else ([], [])
    if n == 0:
        reasons = "; ".join(sorted(set(data.degenerate.values()))) or "no image was measured"
        verdict, reason = "fail", f"{method}@{stage} could not be scored on any image: {reasons}"
    elif len(flat) == n:
        verdict = "inconclusive"
        reason = (f"{what}, but the probability of the explained class is constant under every removal on all {n} "
                  "images (for example a 1-class head, whose softmax is always 1): ABPC is 0 whatever the map, so "
                  "faithfulness cannot be measured on this model")
    elif n < min_images:
        verdict = "inconclusive"
        reason = f"{what}; only {n} images, at least {min_images} are needed for a decisive CI"
    elif broken:
        verdict = "fail"
        reason = f"{what}; limit broken: {'; '.join(broken)}; images that pulled it down most: {pulled}"
    elif stat.ci[1] < threshold:
        verdict = "fail"
        reason = (f"{what}, below the threshold {threshold:+.3f}: the map ranks pixels worse than a random map "
                  f"would; images that pulled it down most: {pulled}")
    elif stat.ci[0] > threshold and not undecided:
        verdict, reason = "pass", f"{what}, above the threshold {threshold:+.3f}"
    elif stat.ci[0] > threshold:
        verdict = "inconclusive"
        reason = f"{what}, above the threshold {threshold:+.3f}, but a limit is undecided: {'; '.join(undecided)}"
    else:
        verdict = "inconclusive"
        reason = (f"{what}, which straddles the threshold {threshold:+.3f}: more images are needed to decide; "
                  f"lowest: {pulled}")
    if n >= 2 and verdict != "fail":
        reason += f"; {power_text(power)}"
    if flat and len(flat) < n:
        reason += f"; {len(flat)} image(s) flat (the class probability never moved: ABPC 0 whatever the map)"
    if data.degenerate:
        reason += f"; not ranked on {len(data.degenerate)} degenerate image(s)"
    if baseline is not None:
        base = record["random_baseline"]
        reason += (f"; random baseline at this stage {base['statistic']:+.3f} "
                   f"[{base['ci95'][0]:+.3f}, {base['ci95'][1]:+.3f}]")
    record["verdict"], record["reason"] = verdict, reason
    return record


def _limits(limits: GateLimits | None, morf: _Stat, lerf: _Stat, abpc: _Stat) -> tuple[list[str], list[str]]:
    """The limits broken (their CI wholly on the wrong side) and undecided (the CI across the limit)."""
    if limits is None:
        return [], []
    broken, undecided = [], []
    checks = (("MoRF AUC", morf, limits.max_morf_auc, "max_morf_auc", True),
              ("LeRF AUC", lerf, limits.min_lerf_auc, "min_lerf_auc", False),
              ("ABPC", abpc, limits.min_abpc, "min_abpc", False))
    for label, stat, limit, name, is_max in checks:
        if limit is None:
            continue
        low, high = stat.ci
        text = f"mean {label} {stat.mean:.3f} [95% CI {low:.3f}, {high:.3f}]"
        if (low > limit) if is_max else (high < limit):
            broken.append(f"{text} {'>' if is_max else '<'} {name} {limit:.3f}")
        elif (high > limit) if is_max else (low < limit):
            undecided.append(f"{text} across {name} {limit:.3f}")
    return broken, undecided


def apply_holm(records: list[dict], level: float = 0.05) -> None:
    """Holm's step-down correction of the fail verdicts of several gates (``--fail-correction holm``), in place.

    A gate failed on its threshold stays failed only when its Holm-adjusted p-value (over every gate in
    ``records`` with a p-value) is below the one-sided level (1 - 0.95) / 2; otherwise it becomes inconclusive and
    says why. Passes and limits are never corrected: a false pass of any one gate is already bounded by one gate's
    rate under strict gating (intersection-union).
    """
    tested = [r for r in records if np.isfinite(r.get("p_fail", float("nan")))]
    if not tested:
        return
    adjusted = holm([r["p_fail"] for r in tested])
    for record, p in zip(tested, adjusted):
        record["p_fail_holm"] = p
        if record["verdict"] == "fail" and record.get("ci95") and record["ci95"][1] < record["threshold"] \
                and "limit broken" not in record["reason"] and p >= level / 2:
            record["verdict"] = "inconclusive"
            record["reason"] += (f"; not failed after Holm's correction over {len(tested)} gates (adjusted p "
                                 f"{p:.3f} >= {level / 2:g})")
