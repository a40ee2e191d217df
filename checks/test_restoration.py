"""Restoration (Figs. 2-4): image -> tokens of constant shape through every block -> pictures, both readings."""

from __future__ import annotations

import pytest

ROUND_TRIP_TOLERANCE = 1e-4


def _fail_unreadable(run):
    if run["error"]:
        pytest.fail(run["error"], pytrace=False)


def test_restoration(audit_run, audit_session, record_property):
    _fail_unreadable(audit_run)
    model = audit_session.models[audit_run["model_id"]]
    layout = model.layout
    channels, height, width = model.data_config["input_size"]
    assert audit_run["input_shape"] == [1, channels, height, width]
    tokens = [1, layout.num_tokens, layout.embed_dim]
    shapes = audit_run["token_shapes"]
    wrong = {stage: shape for stage, shape in shapes.items() if stage != "patch_embed" and shape != tokens}
    assert not wrong, f"token shape changes through the model: expected {tokens}, got {wrong}"
    assert shapes["patch_embed"] == [1, layout.num_patches, layout.embed_dim]

    for reading, stages in audit_run["restorations"].items():
        assert list(stages) == audit_run["stages"], f"{reading}: a stage is missing"
        for stage, entry in stages.items():
            if entry["shape"] is None:
                assert entry["reason"].startswith("not applicable"), (reading, stage, entry["reason"])
                continue
            assert entry["finite"], f"{reading} restoration of stage {stage} has non-finite values"
    inverse = audit_run["restorations"]["inverse"]["embed"]
    record_property("inverse_psnr_db", inverse.get("psnr"))
    record_property("inverse_max_abs_error", inverse.get("max_abs_error"))
    if audit_run["inverse_exact"]:
        assert inverse["max_abs_error"] < ROUND_TRIP_TOLERANCE, (
            f"the patch embedding is invertible (D >= C*P*P) but the inverse restoration of the embedding misses "
            f"the input by {inverse['max_abs_error']:.2e} (tolerance {ROUND_TRIP_TOLERANCE:g})")
