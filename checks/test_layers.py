"""Per-layer sanity: finite stages and maps, degenerate maps, and model-parameter randomisation."""

from __future__ import annotations

import pytest


def test_stages_and_maps_are_finite(audit_run):
    if audit_run["error"]:
        pytest.fail(audit_run["error"], pytrace=False)
    bad_stages = [stage for stage, ok in audit_run["finite"].items() if not ok]
    assert not bad_stages, f"non-finite tokens or gradients at stages {bad_stages}"
    bad_maps = [key for key, m in audit_run["maps"].items()
                if m["grid"] is not None and not all(v is not None for row in m["grid"] for v in row)]
    assert not bad_maps, f"non-finite maps: {bad_maps}"


def test_map_is_informative(audit_map, audit_session, record_property):
    """A constant map ranks nothing: a gated one fails with the reason, others are skipped with it."""
    model_id, method, stage = audit_map
    key = f"{method}@{stage}"
    reasons: dict[str, list[str]] = {}
    for run in audit_session.runs_of(model_id):
        entry = run["maps"].get(key)
        if entry is None:
            continue
        if entry["grid"] is None:
            pytest.skip(entry["reason"])
        if entry["degenerate"]:
            reasons.setdefault(entry["reason"], []).append(run["image_id"])
    record_property("degenerate_images", sum(len(v) for v in reasons.values()))
    if reasons:
        message = "; ".join(f"{reason} ({len(images)} image(s): {', '.join(images[:3])})"
                            for reason, images in reasons.items())
        if audit_session.is_gated(model_id, method, stage):
            pytest.fail(f"gated map {key} is degenerate: {message}", pytrace=False)
        pytest.skip(f"{key} is degenerate: {message}")


def test_randomisation(audit_model_map, audit_session, record_property):
    """Adebayo et al. 2018: once every stage a map depends on is randomised, it must no longer match.

    The mean |Spearman| over images (and seeds) with its 95% bootstrap CI against the threshold: a gated map fails
    when the CI is at or above it and, when the CI straddles it, is skipped as inconclusive (failed with
    ``--strict``); a map that is not gated is skipped with its verdict and numbers unless it passes.
    """
    model_id, method, stage = audit_model_map
    record = audit_session.randomisation(model_id)
    curve = record["curves"].get(f"{method}@{stage}")
    if curve is None:
        pytest.skip(f"{method}@{stage} is not applicable to this model")
    for key in ("abs_spearman", "signed_spearman", "negative_images", "n_images", "verdict"):
        record_property(key, curve[key])
    record_property("ci95", curve["ci95"])
    verdict, reason = curve["verdict"], curve["reason"]
    if verdict == "pass":
        return
    if not audit_session.is_gated(model_id, method, stage):
        pytest.skip(f"not gated, {verdict}: {reason}")
    if verdict == "fail":
        pytest.fail(reason, pytrace=False)
    if audit_session.settings.strict:
        pytest.fail(f"inconclusive (--strict): {reason}", pytrace=False)
    pytest.skip(f"inconclusive: {reason}")
