"""Every model of the run loads: the checkpoint is read without running code and fits the architecture."""

from __future__ import annotations

import pytest


def test_model_loads(audit_model, audit_session, record_property):
    error = audit_session.model_errors.get(audit_model)
    if error is not None:  # the other models of the run are audited all the same
        pytest.fail(f"{error['name']} ({error['checkpoint']}): {error['error']}", pytrace=False)
    loaded = audit_session.models[audit_model]
    record_property("checkpoint_sha256", loaded.checkpoint_sha256)
    assert loaded.num_classes > 0 and not loaded.model.training
