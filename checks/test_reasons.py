"""Right for the right reasons: where the gated maps look (``--regions``) and what moves the model (``--probe``).

Collected with every audit; parametrised only by the regions and probes the run was given. Against a threshold (the
objects' relevance mass above chance, the policy's absolute probe limits) an inconclusive verdict fails only under
``--strict``; against a baseline an inconclusive comparison fails, as every comparison does.
"""

from __future__ import annotations

import pytest

from .verdicts import decide


def test_looks_at_objects(audit_region, audit_session, record_property):
    """The gated map's relevance mass on the objects, above chance (their area), with its 95% CI."""
    record = audit_session.region_gate(*audit_region)
    for key in ("statistic", "n_images", "verdict"):
        record_property(f"regions_{key}", record[key])
    record_property("regions_ci95", record["ci95"])
    decide(record["verdict"], record["reason"], audit_session.settings.strict)


def test_regions_no_regression(audit_region_pair, audit_session, record_property):
    """Against the baseline: object mass no lower, artefact mass no higher, than the margin allows."""
    record = audit_session.region_gate(*audit_region_pair)["paired"]
    record_property("regions_paired_verdict", record["verdict"])
    decide(record["verdict"], record["reason"], audit_session.settings.strict, paired=True)


def test_probe(audit_probe, audit_session, record_property):
    """A stamp on every image: against the baseline, the candidate may not be moved to a class, nor look at the
    stamp, more than the margins allow; without one, the policy's absolute limits (off by default)."""
    record = audit_session.probe(*audit_probe)
    attraction = record["attraction"]
    record_property("probe_max_attraction", attraction["max"])
    record_property("probe_flip_rate", attraction["flip_rate"])
    paired = record.get("paired")
    if paired is not None:
        record_property("probe_paired_verdict", paired["verdict"])
        if paired["verdict"] in ("fail", "inconclusive"):
            decide(paired["verdict"], paired["reason"], audit_session.settings.strict, paired=True)
    if record["verdict"] != "not gated":
        decide(record["verdict"], record["reason"], audit_session.settings.strict)
    if paired is None and record["verdict"] == "not gated":
        pytest.skip(f"measured, not gated (no baseline, no absolute limit): largest attraction "
                    f"{attraction['max']:.3f}, flip rate {attraction['flip_rate']:.1%}")
