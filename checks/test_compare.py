"""Release gates against the released model (``--baseline``): paired, per-image comparison with its audit.

Collected only when a baseline is given. A comparison that does not show non-inferiority (inconclusive) fails;
the map-agreement gate, like the gates against a threshold, fails on inconclusive only under ``--strict``.
"""

from __future__ import annotations

import pytest

from .verdicts import decide


def test_no_regression(audit_comparison, audit_session, record_property):
    """Non-inferiority: the mean ABPC difference from the baseline, with its paired CI, against -margin.

    The candidate must show that it is no worse: an inconclusive comparison fails, with the number of paired images
    that would decide it.
    """
    record = audit_session.comparison(*audit_comparison)
    for key in ("statistic", "n_pairs", "margin", "verdict", "candidate_abpc", "baseline_abpc"):
        record_property(key, record[key])
    record_property("ci95", record["ci95"])
    decide(record["verdict"], record["reason"], audit_session.settings.strict, paired=True)


def test_map_agreement(audit_comparison, audit_session, record_property):
    """Explanation drift: the median Spearman with the baseline's map of the same class, and top-1 agreement."""
    drift = audit_session.comparison(*audit_comparison)["drift"]
    for key in ("statistic", "n_images", "top1_agreement", "verdict"):
        record_property(f"map_agreement_{key}", drift[key])
    record_property("map_agreement_ci95", drift["ci95"])
    decide(drift["verdict"], drift["reason"], audit_session.settings.strict)


def test_no_class_collapse(audit_model, audit_session, record_property):
    """Class by class: no class of the baseline whose top-1 agreement is shown below --min-class-agreement (exact
    binomial tests, Holm over the classes); the worst class is named."""
    if audit_model not in audit_session.models:
        pytest.skip(f"{audit_model} was not loaded (see test_model_loads)")
    record = audit_session.class_agreement(audit_model)
    record_property("class_agreement", record["agreement"])
    if record["worst"] is not None:
        record_property("worst_class", record["worst"]["class_name"] or record["worst"]["class"])
    if record["verdict"] == "not gated":
        pytest.skip(record["reason"])
    if record["verdict"] == "fail":
        pytest.fail(record["reason"], pytrace=False)
