"""Faithfulness (Figs. 10-13): MoRF/LeRF per image, and the release gates over the image set."""

from __future__ import annotations

import pytest

from .verdicts import decide


def test_faithfulness(audit_run, audit_session, record_property):
    if audit_run["error"]:
        pytest.fail(audit_run["error"], pytrace=False)
    steps = audit_session.settings.steps
    measured = {key: m for key, m in audit_run["maps"].items() if m["morf"] is not None}
    chosen = audit_run.get("curves_for")  # None: every rankable map of the measured stages
    expected = {key for key, m in audit_run["maps"].items()
                if m["stage"] in audit_run["measured_stages"] and m["grid"] is not None and not m["degenerate"]
                and (chosen is None or key in chosen)}
    assert set(measured) == expected, f"maps not measured: {sorted(expected - set(measured))}"
    for key, m in measured.items():
        assert len(m["morf"]) == len(m["lerf"]) == steps + 1, key
        assert all(v is not None and 0.0 <= v <= 1.0 for v in m["morf"] + m["lerf"]), f"{key}: bad probabilities"
        record_property(f"{key}:abpc", m["abpc"])
    record_property("class", audit_run["class"])
    record_property("prob", audit_run["prob"])


def test_gate(audit_gate, audit_session, record_property):
    """The gate: mean ABPC over the images with its 95% bootstrap CI, against the threshold."""
    model_id, method, stage = audit_gate
    gate = audit_session.gate(model_id, method, stage)
    for key in ("statistic", "n_images", "verdict"):
        record_property(key, gate[key])
    record_property("ci95", gate["ci95"])
    decide(gate["verdict"], gate["reason"], audit_session.settings.strict)
