"""What a run measures: which maps get curves under --layers auto, all or a list, and the forwards it costs."""

from __future__ import annotations

import pytest

from audit.config.settings import AuditSettings
from audit.model.load import load_model
from audit.run.plan import ModelPlan, forwards_per_image, plan_lines, plan_model

from conftest import save_tiny


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = save_tiny("test_vit", tmp_path_factory.mktemp("plan") / "test_vit.safetensors")
    return load_model("test_vit", str(path))


def _settings(**options) -> AuditSettings:
    return AuditSettings(model=["test_vit"], checkpoint=["x"], **options)


def test_auto_with_gates_measures_the_gated_maps_and_random_at_their_stages(loaded):
    plan = plan_model(_settings(methods=["cam", "grad", "chefer", "random"], gate=["grad@0", "chefer@encoder"]),
                      loaded)
    assert plan.measured == ["0", "encoder"]
    assert plan.curves_for == ["grad@0", "chefer@encoder", "random@0", "random@encoder"]
    assert "gated maps and random at their stages only" in plan.rule()


def test_auto_with_a_listed_stage_adds_every_map_there(loaded):
    plan = plan_model(_settings(methods=["cam", "grad", "random"], gate=["grad@0"], layers=["auto", "2"]), loaded)
    assert plan.measured == ["2", "0"]
    assert plan.curves_for == ["grad@0", "random@0", "cam@2", "grad@2", "random@2"]


def test_auto_without_gates_and_all_measure_every_map_of_every_stage(loaded):
    depth = loaded.layout.depth
    for settings in (_settings(methods=["cam", "random"], gate=[]),
                     _settings(methods=["cam"], gate=["cam@0"], layers=["all"])):
        plan = plan_model(settings, loaded)
        assert plan.curves_for is None and plan.measured == [str(k) for k in range(depth)] + ["encoder"]
        assert "curves for every map at stages" in plan.rule()


def test_ig_gets_curves_under_auto_only_when_gated(loaded):
    gated = plan_model(_settings(methods=["grad", "ig", "random"], gate=["ig@input"]), loaded)
    assert gated.measured == ["input"] and gated.curves_for == ["ig@input"]
    other = plan_model(_settings(methods=["grad", "ig", "random"], gate=["grad@1"]), loaded)
    assert "input" not in other.measured and "ig@input" not in other.curves_for
    listed = plan_model(_settings(methods=["grad", "ig"], layers=["1"], gate=[]), loaded)
    assert listed.measured == ["1", "input"] and listed.curves_for is None


def test_a_gate_outside_listed_layers_is_still_refused(loaded):
    with pytest.raises(ValueError, match="gated but their stage is not in --layers"):
        plan_model(_settings(methods=["cam"], gate=["cam@0"], layers=["1"]), loaded)


def test_forwards_and_the_plan_line(loaded):
    settings = _settings(methods=["grad", "random"], gate=["grad@0"], steps=10)
    plan = plan_model(settings, loaded)
    assert forwards_per_image(plan, settings, loaded.layout.depth) == (2, 3 + 2 + 2 * 9 * 2)
    every = ModelPlan(plan.measured, plan.gates, None)
    assert forwards_per_image(every, settings, loaded.layout.depth)[0] == 2  # two methods at stage 0
    rule, line = plan_lines(plan, settings, loaded, 7, "cpu")
    assert rule == plan.rule()
    assert line.startswith(f"plan: 7 images x 2 maps with curves x 18 removal forwards (+ capture and shared ones) "
                           f"= {7 * 41:,} forwards at most; ETA ~")
    assert "forwards/s timed on cpu" in line
