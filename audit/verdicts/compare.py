"""Release gates against the released model: a candidate's audit paired image by image with its baseline's.

The baseline is the results file of an earlier run (the released model's audit, kept as a CI artefact). Images are
matched by the sha256 of their bytes, never by path. For every gated ``method@stage``:

- **non-inferiority of faithfulness**: per image d_i = ABPC_candidate,i - ABPC_baseline,i; the statistic is the
  mean d with a seeded paired bootstrap 95% CI (the same resamples for MoRF, LeRF and ABPC). Pass when the CI's
  lower bound is above -margin, fail when its upper bound is below -margin, otherwise (or with fewer than
  ``min_images`` pairs) inconclusive, which the check fails too: a candidate must *show* that it is no worse. The
  margin is absolute or relative to the baseline's mean ABPC over the pairs (:mod:`audit.config.policy`). Pairs where
  both models' curves are flat (the class probability never moved: ABPC 0 whatever the map) and pairs without a
  finite ABPC are left out of the statistics and counted;
- **explanation drift**: per image, the Spearman rank correlation between the baseline's map and the candidate's
  map *of the same class* (the baseline's explained class; the candidate is captured again with that target when
  its own top-1 differs), on the patch grid, or after bilinear upsampling to the candidate's input size when the
  grids differ; summarised by the median with a bootstrap CI, gated only when ``min_map_agreement`` is set; and
  top-1 agreement (the fraction of images whose class is unchanged, the changed ones listed).

A baseline whose recipe differs from the run's (steps, unit, fill, interpolation, amp, act, seed, or the data
config of a model of the same architecture) is refused: its numbers would not be comparable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..maps import compute_maps, needs_attention
from ..measure.stats import (
    CI_RULE,
    bootstrap_ci,
    detectable_difference,
    images_needed,
    one_sided_p,
    paired_difference,
    spearman,
)
from ..model.capture import capture
from ..model.images import PreparedImage, normalize
from ..model.layout import normalize_stage
from ..model.load import DATA_CONFIG_KEYS, LoadedModel, sha256_of
from .classes import class_table
from .gates import POWER, constant_curve
from .margins import Margin, parse_margin

__all__ = ["Baseline", "baseline_stage", "check_measured", "check_paired", "check_recipe", "compare_map",
           "load_baseline", "map_agreement", "maps_for_class", "paired_runs", "planning_power"]

SCHEMAS = ("vit-audit/1",)
LARGEST_LISTED = 3
PERTURBATION_KEYS = ("steps", "unit", "fill", "interpolation", "amp", "score")
PERTURBATION_DEFAULTS = {"score": "prob"}  # what a results file written before the key existed measured
SETTINGS_KEYS = ("act", "seed")


class Baseline:
    """The released model's audit: a results file read and checked, or the baseline model audited in this run.

    Attributes:
        source: the path as given (or what was audited); ``sha256``: of the file's bytes (None when audited here).
        results: the results dict (for an audited baseline: its schema, perturbation and settings).
        model: the baseline's model record (its one audited model).
        runs: image sha256 -> the baseline's run of that image (computed on first use for an audited baseline).
        unhashed: images of the baseline that have no sha256 in the file and whose file is no longer there to hash
            (a results file of an earlier version of the schema records none): they cannot be paired.
    """

    def __init__(self, source: str, sha256: str | None, results: dict[str, Any], model: dict[str, Any],
                 runs: dict[str, dict[str, Any]] | None = None,
                 compute_runs: Callable[[], dict[str, dict[str, Any]]] | None = None):
        self.source, self.sha256, self.results, self.model = source, sha256, results, model
        self._runs = runs if runs is not None or compute_runs is not None else {}
        self._compute_runs = compute_runs
        self.unhashed: list[str] = []

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        if self._runs is None:
            assert self._compute_runs is not None  # no runs are given only with compute_runs (__init__)
            self._runs = self._compute_runs()
        return self._runs

    def record(self) -> dict[str, Any]:
        recipe = {k: self.results.get("perturbation", {}).get(k) for k in PERTURBATION_KEYS}
        recipe.update({k: self.results.get("settings", {}).get(k) for k in SETTINGS_KEYS})
        return {"source": self.source, "sha256": self.sha256, "schema": self.results.get("schema"),
                "created": self.results.get("created"), "model": self.model.get("name"),
                "model_id": self.model.get("id"), "checkpoint": self.model.get("checkpoint"),
                "checkpoint_sha256": self.model.get("checkpoint_sha256"), "recipe": recipe,
                "images": len(self.runs), "images_without_sha256": self.unhashed}


def _fail(path: str, problem: str) -> ValueError:
    return ValueError(f"baseline: {path!r} {problem}")


def load_baseline(path: str | os.PathLike[str]) -> Baseline:
    """Read a baseline results file.

    Raises:
        ValueError: one line naming the file: missing, not a regular file, not JSON (a truncated file), not a
            vit-audit results file, a run that stopped before any check ran, or not exactly one audited model.
    """
    label = os.fspath(path)
    file = Path(label)
    if not file.exists():
        raise _fail(label, "not found: pass the results file (--audit-json) of the released model's audit")
    if not file.is_file():
        raise _fail(label, "is not a regular file; pass a results file")
    try:
        raw = file.read_bytes()
        results = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise _fail(label, f"is not a readable results file ({reason}); was it truncated?") from None
    if not isinstance(results, dict) or results.get("schema") not in SCHEMAS:
        raise _fail(label, f"is not a vit-audit results file (schema {', '.join(SCHEMAS)})")
    if results.get("error"):
        raise _fail(label, f"is the results file of a run that stopped ({results['error']}); audit the baseline again")
    models = [m for m in results.get("models") or [] if isinstance(m, dict) and not m.get("error")]
    if len(models) != 1:
        raise _fail(label, f"holds {len(models)} audited models; a baseline is the audit of one model")
    model = models[0]
    baseline = Baseline(source=label, sha256=hashlib.sha256(raw).hexdigest(), results=results, model=model, runs={})
    images = {image.get("id"): image for image in results.get("images") or [] if isinstance(image, dict)}
    for run in results.get("runs") or []:
        if not isinstance(run, dict) or run.get("model_id", model.get("id")) != model.get("id"):
            continue
        image = images.get(run.get("image_id"), {})
        digest = image.get("sha256") or _hash_if_there(run.get("image"))
        if digest is None:
            baseline.unhashed.append(str(run.get("image_id") or run.get("image")))
        else:
            baseline.runs.setdefault(digest, run)
    return baseline


def _hash_if_there(path: Any) -> str | None:
    try:
        return sha256_of(path) if isinstance(path, str) and Path(path).is_file() else None
    except OSError:
        return None


def _architecture(name: str | None) -> str:
    return str(name or "").split(".", 1)[0]


def check_recipe(baseline: Baseline, perturbation: dict[str, Any], settings: dict[str, Any],
                 loaded: LoadedModel) -> None:
    """Refuse a baseline whose numbers were made another way than the run's.

    Raises:
        ValueError: one line naming every difference, e.g. ``steps 20 (baseline) vs 10 (this run)``.
    """
    theirs = baseline.results
    differences = []
    for key in PERTURBATION_KEYS:
        mine = perturbation.get(key, PERTURBATION_DEFAULTS.get(key))
        other = (theirs.get("perturbation") or {}).get(key, PERTURBATION_DEFAULTS.get(key))
        if not _same(mine, other):
            differences.append(f"{key} {other!r} (baseline) vs {mine!r} (this run)")
    for key in SETTINGS_KEYS:
        mine, other = settings.get(key), (theirs.get("settings") or {}).get(key)
        if not _same(mine, other):
            differences.append(f"{key} {other!r} (baseline) vs {mine!r} (this run)")
    if _architecture(baseline.model.get("name")) == _architecture(loaded.name):
        config = loaded.data_config
        mine_config = {"input_size": list(config["input_size"]), **{k: config.get(k) for k in DATA_CONFIG_KEYS}}
        other_config = {"input_size": baseline.model.get("input_size"), **(baseline.model.get("data_config") or {})}
        for key, mine in mine_config.items():
            if not _same(mine, other_config.get(key)):
                differences.append(f"data config {key} {other_config.get(key)!r} (baseline) vs {mine!r} (this run)")
    if differences:
        raise ValueError(f"baseline: {baseline.source!r} was audited with another recipe: {'; '.join(differences)}; "
                         "audit both models with the same recipe")


def _same(one: Any, other: Any) -> bool:
    if isinstance(one, (list, tuple)) and isinstance(other, (list, tuple)):
        return len(one) == len(other) and all(_same(a, b) for a, b in zip(one, other))
    if isinstance(one, (int, float)) and isinstance(other, (int, float)) and not isinstance(one, bool):
        return math.isclose(float(one), float(other), rel_tol=1e-9, abs_tol=1e-12)
    return one == other


def baseline_stage(baseline: Baseline, stage: str) -> str:
    """The baseline's stage for a gate written as ``stage`` (negative block indices count from its own last)."""
    return normalize_stage(stage, int(baseline.model.get("depth") or 0))


def check_measured(baseline: Baseline, gates: list[tuple[str, str]]) -> None:
    """Refuse a baseline in which a gated map was not measured (its runs have no curves for it), or whose file does
    not keep that map's grids (``--results-detail summary``): the map agreement is computed from them."""
    measured: set[str] = set()
    without_grid: set[str] = set()  # measured, but the grid was not kept
    for run in baseline.runs.values():
        for key, m in (run.get("maps") or {}).items():
            if m.get("morf_auc") is not None:
                measured.add(key)
                if m.get("grid") is None:
                    without_grid.add(key)
    keys = [f"{method}@{baseline_stage(baseline, stage)}" for method, stage in gates]
    missing = [key for key in keys if key not in measured]
    if baseline.runs and missing:
        raise ValueError(f"baseline: {baseline.source!r} has no curves for {', '.join(missing)}; audit the baseline "
                         "with these maps in --methods and their stages in --layers")
    gridless = [key for key in keys if key in without_grid]
    if gridless:
        detail = (baseline.results.get("settings") or {}).get("results_detail")
        written = f", written with --results-detail {detail}," if isinstance(detail, str) else ""
        raise ValueError(f"baseline: {baseline.source!r}{written} keeps no map grids for {', '.join(gridless)}, which "
                         "the comparison needs; audit the baseline again with --results-detail full (the default) "
                         "or curves")


def _finite_abpc(entry: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    if not isinstance(entry, dict):
        return False
    morf, lerf = entry.get("morf_auc"), entry.get("lerf_auc")
    return (isinstance(morf, (int, float)) and isinstance(lerf, (int, float)) and math.isfinite(morf)
            and math.isfinite(lerf))


def check_paired(baseline: Baseline, digests: list[str | None], gates: list[tuple[str, str]]) -> None:
    """Refuse a baseline that shares no image with the run (matched by the sha256 of the bytes), or whose gated maps
    have no finite ABPC on any shared image: nothing could be compared.

    Raises:
        ValueError: one line naming the file and what to do.
    """
    if not baseline.runs:
        return
    shared = [baseline.runs[d] for d in dict.fromkeys(digests) if d and d in baseline.runs]
    if not shared:
        raise ValueError(f"baseline: {baseline.source!r} shares no image with this run (images are matched by the "
                         "sha256 of their bytes); audit the candidate on the baseline's images")
    for method, stage in gates:
        key = f"{method}@{baseline_stage(baseline, stage)}"
        if not any(_finite_abpc((run.get("maps") or {}).get(key)) for run in shared if not run.get("error")):
            raise ValueError(f"baseline: {baseline.source!r} has no finite ABPC of {key} on any of the "
                             f"{len(shared)} image(s) it shares with this run; audit the baseline again")


def planning_power(baseline: Baseline, digests: list[str | None], method: str, base_stage: str,
                   margin: Margin) -> str:
    """Before the run, in words: how many paired images the comparison of ``method@base_stage`` will have, what
    difference it can resolve with 80% power, and how many pairs its margin needs.

    The sd of the per-image differences is not known before the candidate is audited: it is planned as sqrt(2) x
    the baseline's per-image ABPC sd on the shared images (a candidate whose ABPC is as spread as the baseline's and
    independent of it; a fine-tuned candidate agrees more and needs fewer). A baseline audited in this run is not
    measured yet: its power is stated at the end, with each comparison.
    """
    if baseline.sha256 is None:
        return "power measured at the end (the baseline is audited in this run)"
    key = f"{method}@{base_stage}"
    shared = [baseline.runs[d] for d in dict.fromkeys(digests) if d and d in baseline.runs]
    values = [m["lerf_auc"] - m["morf_auc"] for run in shared if not run.get("error")
              for m in [(run.get("maps") or {}).get(key)] if _finite_abpc(m)]
    n = len(values)
    if n < 2:
        return f"{n} paired image(s) at most: power unknown"
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1)) * math.sqrt(2.0)
    bound = margin.resolve(mean)
    text = (f"at most {n} pairs; planned sd of d {sd:.3f} (sqrt 2 x the baseline's per-image ABPC sd): the CI "
            f"resolves {detectable_difference(sd, n, power=POWER):.3f} with 80% power")
    if bound > 0 and sd > 0:
        text += f"; the margin {bound:.3f} needs about {images_needed(sd, bound, power=POWER)} pairs"
    return text


def _flat(entry: dict[str, Any]) -> bool:
    """Both curves of a map constant: the class probability did not move under any removal."""
    return constant_curve(entry.get("morf")) and constant_curve(entry.get("lerf"))


def maps_for_class(loaded: LoadedModel, prepared: PreparedImage, target: int, keys: list[tuple[str, str]],
                   act: str, seed: int, device: torch.device | str) -> dict[str, Any]:
    """The model's maps of class ``target`` (not its own top-1) at ``keys`` ((method, stage)), as raw grids."""
    model = loaded.model.to(device)
    methods = list(dict.fromkeys(method for method, _ in keys))
    cap = capture(model, normalize(prepared.pixel.to(device), loaded.mean, loaded.std), target=target,
                  attention=needs_attention(methods))
    stages = list(dict.fromkeys(stage for _, stage in keys))
    maps = compute_maps(model, cap, methods=methods, stages=stages, act=act, seed=seed, image=prepared.name)
    grids = {key: result.values.float().tolist() for key, result in maps.items() if result.values is not None}
    return {f"{m}@{s}": grids.get(f"{m}@{s}") for m, s in keys}  # ig@input: not made for another class


def _on_input(grid: list, size: tuple[int, int]) -> torch.Tensor:
    values = torch.as_tensor(grid, dtype=torch.float64)[None, None]
    return F.interpolate(values, size=size, mode="bilinear", align_corners=False)[0, 0]


def map_agreement(baseline_grid: list | None, candidate_grid: list | None, input_size: tuple[int, int]) -> float:
    """Spearman between two maps: on their grid when the grids match, else after bilinear upsampling both to
    ``input_size``; nan when either is missing or constant."""
    if baseline_grid is None or candidate_grid is None:
        return float("nan")
    one: np.ndarray | torch.Tensor  # the grids, or both upsampled to the input
    other: np.ndarray | torch.Tensor
    one, other = np.asarray(baseline_grid, dtype=np.float64), np.asarray(candidate_grid, dtype=np.float64)
    if one.shape != other.shape:
        one, other = _on_input(baseline_grid, input_size), _on_input(candidate_grid, input_size)
    return spearman(one, other)


def paired_runs(candidate_runs: list[dict[str, Any]], digests: dict[str, str | None],
                baseline_runs: dict[str, dict[str, Any]]) -> tuple[list[tuple[dict, dict]], dict[str, str]]:
    """(candidate run, baseline run) of every image both models audited, matched by the sha256 of its bytes, and
    image -> why the others are not paired ("not in the baseline", "could not be audited (candidate)")."""
    pairs, unpaired = [], {}
    for run in candidate_runs:
        image = cast(str, run.get("image_id"))  # a candidate run: the session sets it
        digest = digests.get(image)
        other = baseline_runs.get(digest) if digest else None
        if other is None:
            unpaired[image] = "not in the baseline"
        elif run.get("error") or other.get("error"):
            unpaired[image] = f"could not be audited ({'candidate' if run.get('error') else 'baseline'})"
        else:
            pairs.append((run, other))
    return pairs, unpaired


def _verdict(low: float, high: float, bound: float, n: int, min_images: int) -> str:
    if n < min_images or not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive"
    return "pass" if low > bound else "fail" if high < bound else "inconclusive"


def compare_map(
    candidate_runs: list[dict[str, Any]], image_digests: dict[str, str | None], baseline: Baseline, method: str,
    stage: str, base_stage: str, *, model_id: str, model_name: str, input_size: tuple[int, int],
    margin: float | str | Margin, min_images: int = 20, min_map_agreement: float | None = None, seed: int = 0,
    n_boot: int = 10_000, margin_source: str = "margin",
) -> dict[str, Any]:
    """Compare one gated map of a candidate with the baseline, image by image.

    Args:
        candidate_runs: the candidate's run records (``audit.run.session``), one per image.
        image_digests: image id -> sha256 of its bytes.
        baseline: the baseline.
        method, stage: the gated map, ``stage`` normalised for the candidate.
        base_stage: the same gate's stage normalised for the baseline (:func:`baseline_stage` of the gate as
            written: ``-1`` is each model's own last block).
        model_id, model_name, input_size: the candidate.
        margin: the non-inferiority margin on the mean ABPC difference: absolute (a number) or relative to the
            baseline's mean ABPC over the pairs (``"25%"``, or a :class:`audit.verdicts.margins.Margin`).
        min_images: fewer pairs make every verdict inconclusive.
        min_map_agreement: gate the median Spearman's CI lower bound against this (None: measured, not gated).
        seed, n_boot: the bootstrap.
        margin_source: where the margin came from, for the record.

    Returns:
        A comparison record (``docs/results-schema.md``).
    """
    key = f"{method}@{stage}"
    base_key = f"{method}@{base_stage}"
    rule = parse_margin(margin)
    both, unpaired = paired_runs(candidate_runs, image_digests, baseline.runs)
    pairs, grids, flat = [], {}, []
    for run, other in both:
        image = cast(str, run.get("image_id"))  # a candidate run: the session sets it
        digest = image_digests.get(image)
        mine, theirs = (run.get("maps") or {}).get(key) or {}, (other.get("maps") or {}).get(base_key) or {}
        if mine.get("morf_auc") is None or theirs.get("morf_auc") is None:
            unpaired[image] = "map not ranked (degenerate) in " + ("the candidate" if mine.get("morf_auc") is None
                                                                   else "the baseline")
            continue
        if not (_finite_abpc(mine) and _finite_abpc(theirs)):
            unpaired[image] = "ABPC not finite in " + ("the candidate" if not _finite_abpc(mine) else "the baseline")
            continue
        if _flat(mine) and _flat(theirs):
            flat.append(image)
            continue
        same_class = run.get("class") == other.get("class")
        candidate_grid = mine.get("grid") if same_class else (run.get("baseline_class_maps") or {}).get(key)
        grids[image] = (theirs.get("grid"), candidate_grid)
        pairs.append({
            "image": image, "sha256": digest,
            "candidate_class": run.get("class"), "baseline_class": other.get("class"),
            "candidate_class_name": run.get("class_name"), "baseline_class_name": other.get("class_name"),
            "candidate_morf_auc": mine["morf_auc"], "candidate_lerf_auc": mine["lerf_auc"],
            "baseline_morf_auc": theirs["morf_auc"], "baseline_lerf_auc": theirs["lerf_auc"],
            "candidate_abpc": mine["lerf_auc"] - mine["morf_auc"],
            "baseline_abpc": theirs["lerf_auc"] - theirs["morf_auc"],
            "candidate_morf": mine.get("morf"), "candidate_lerf": mine.get("lerf"),
            "baseline_morf": theirs.get("morf"), "baseline_lerf": theirs.get("lerf"),
            "spearman": map_agreement(theirs.get("grid"), candidate_grid, input_size),
        })
    for pair in pairs:
        pair["d"] = pair["candidate_abpc"] - pair["baseline_abpc"]
    n = len(pairs)
    diff = paired_difference([p["candidate_morf_auc"] for p in pairs], [p["candidate_lerf_auc"] for p in pairs],
                             [p["baseline_morf_auc"] for p in pairs], [p["baseline_lerf_auc"] for p in pairs],
                             seed=seed, n_boot=n_boot)
    candidate_mean = float(np.mean([p["candidate_abpc"] for p in pairs])) if n else float("nan")
    baseline_mean = float(np.mean([p["baseline_abpc"] for p in pairs])) if n else float("nan")
    bound = rule.resolve(baseline_mean)
    largest = sorted(pairs, key=lambda p: p["d"])[:LARGEST_LISTED]
    d_values = [p["d"] for p in pairs]
    sd = float(np.std(d_values, ddof=1)) if n > 1 else float("nan")
    detectable = detectable_difference(sd, n, power=POWER) if n > 1 else float("nan")
    needed = max(min_images, images_needed(sd, bound, power=POWER)) if n > 1 and sd > 0 and bound > 0 else None
    power = {"sd": sd, "n": n, "power": POWER, "detectable": detectable, "distance": bound,
             "images_needed": needed}
    verdict = _verdict(diff.abpc_ci[0], diff.abpc_ci[1], -bound, n, min_images) if math.isfinite(bound) \
        else "inconclusive"
    shown_margin = f"margin {bound:.3f}" + (f" ({rule.text()})" if rule.relative else "")
    what = (f"{method}@{stage} of {model_id} vs the baseline {baseline.model.get('name')}: mean ABPC difference "
            f"{diff.abpc:+.3f} [95% CI {diff.abpc_ci[0]:+.3f}, {diff.abpc_ci[1]:+.3f}] over {n} paired images "
            f"(candidate {candidate_mean:+.3f}, baseline {baseline_mean:+.3f}), {shown_margin}")
    dropped = ", ".join(f"{p['image']} ({p['baseline_abpc']:+.3f} -> {p['candidate_abpc']:+.3f})" for p in largest)
    decide = (f"{needed} paired images would decide it at 80% power if the candidate were as faithful as the "
              f"baseline (sd of d {sd:.3f})" if needed is not None else "the number of images that would decide it "
              "is unknown (fewer than 2 pairs, or no spread)")
    if n < min_images:
        reason = f"{what}; only {n} paired images, at least {min_images} are needed; {decide}"
    elif verdict == "pass":
        reason = f"{what}: not less faithful than the baseline (the CI is above -{bound:.3f})"
    elif verdict == "fail":
        reason = (f"{what}: less faithful than the baseline (the CI is below -{bound:.3f}); ABPC dropped most on "
                  f"{dropped}")
    else:
        reason = (f"{what}: the CI straddles -{bound:.3f}, so the candidate has not shown it is no less faithful; "
                  f"{decide}; dropped most: {dropped}")
    classes = class_table(pairs, grids)
    worst = min((row for row in classes if row["n"] > 1), key=lambda row: row["d"], default=None)
    if worst is not None and len(classes) > 1:
        reason += (f"; worst class {worst['class_name'] or worst['class']}: d {worst['d']:+.3f} over {worst['n']} "
                   f"images, top-1 agreement {worst['top1_agreement']:.0%}, mean-map drift {worst['drift']:.2f}")
    if flat:
        reason += f"; {len(flat)} flat pair(s) left out (both models' class probability never moved)"
    if unpaired:
        reason += f"; {len(unpaired)} image(s) not paired"
    return {
        "model": model_name, "model_id": model_id, "baseline_model": baseline.model.get("name"),
        "method": method, "stage": stage, "baseline_stage": base_stage, "n_pairs": n,
        "margin": bound, "margin_rule": str(rule), "margin_source": margin_source,
        "statistic": diff.abpc, "ci95": list(diff.abpc_ci),
        "morf_auc_difference": diff.morf_auc, "morf_auc_difference_ci95": list(diff.morf_auc_ci),
        "lerf_auc_difference": diff.lerf_auc, "lerf_auc_difference_ci95": list(diff.lerf_auc_ci),
        "candidate_abpc": candidate_mean, "baseline_abpc": baseline_mean, "verdict": verdict, "reason": reason,
        "power": power, "p_fail": (one_sided_p(d_values, -bound, "below", seed=seed, n_boot=n_boot)
                                   if n > 1 and math.isfinite(bound) else float("nan")),
        "rule": (f"d = ABPC(candidate) - ABPC(baseline) per paired image; pass if the 95% CI of the mean d is above "
                 f"-margin ({rule.text()}), fail if below, else inconclusive, which fails the check too (the "
                 f"candidate has not shown it is no worse); at least {min_images} pairs; pairs flat in both models "
                 f"left out; {CI_RULE}"),
        "largest_drops": [{"image": p["image"], "d": p["d"], "candidate_abpc": p["candidate_abpc"],
                           "baseline_abpc": p["baseline_abpc"], "baseline_grid": grids[p["image"]][0],
                           "candidate_grid": grids[p["image"]][1]} for p in largest],
        "drift": _drift(pairs, min_map_agreement, min_images, seed, n_boot, f"{method}@{stage}"),
        "classes": classes,
        "unpaired_images": unpaired, "flat_pairs": flat, "pairs": pairs, "seed": seed, "n_boot": n_boot,
    }


def _drift(pairs: list[dict[str, Any]], threshold: float | None, min_images: int, seed: int, n_boot: int,
           key: str) -> dict[str, Any]:
    values = [p["spearman"] for p in pairs if p["spearman"] is not None and math.isfinite(p["spearman"])]
    not_ranked = [p["image"] for p in pairs if p["spearman"] is None or not math.isfinite(p["spearman"])]
    median = float(np.median(values)) if values else float("nan")
    low, high = bootstrap_ci(values, seed=seed, n_boot=n_boot, statistic="median")
    changed = [{"image": p["image"], "baseline_class": p["baseline_class"], "candidate_class": p["candidate_class"],
                "baseline_class_name": p["baseline_class_name"], "candidate_class_name": p["candidate_class_name"]}
               for p in pairs if p["candidate_class"] != p["baseline_class"]]
    what = (f"median Spearman of {key} with the baseline's map of the same class {median:+.3f} "
            f"[95% CI {low:+.3f}, {high:+.3f}] over {len(values)} images")
    if threshold is None:
        verdict, reason = "not gated", f"{what} (not gated: set --min-map-agreement to gate it)"
    else:
        verdict = _verdict(low, high, threshold, len(values), min_images)
        reason = {"pass": f"{what}, above {threshold:+.3f}",
                  "fail": f"{what}, below {threshold:+.3f}: the explanations point at other evidence",
                  "inconclusive": f"{what}, which does not decide against {threshold:+.3f}"}[verdict]
    if not_ranked:
        reason += f"; not ranked on {len(not_ranked)} image(s) (a constant map)"
    top1 = (len(pairs) - len(changed)) / len(pairs) if pairs else float("nan")
    return {"statistic": median, "ci95": [low, high], "n_images": len(values), "threshold": threshold,
            "verdict": verdict, "reason": reason, "not_ranked": not_ranked, "top1_agreement": top1,
            "class_changed": changed}
