"""audit.maps.registry: a map method is declared once, and every part of a run reads it from there.

The end-to-end test registers a toy method (the norm of each patch token) in one place and audits the embedded model
with it: the options accept it, the plan measures it at every stage, the curves, the gate, the randomisation check,
the results file and the report all carry it.
"""

from __future__ import annotations

import json

import pytest
import torch

from audit import capture, compute_maps, load_model, normalize, prepare_image
from audit.config.settings import resolve_settings
from audit.maps import METHODS, registry
from audit.maps.registry import MapContext, MapMethod, MapResult
from audit.measure.randomisation import dependency_step
from audit.run.plan import map_keys
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

TOY = "token_norm"


def _token_norm(ctx: MapContext, stage: str) -> MapResult:
    layout = ctx.cap.layout
    tokens = layout.patch_tokens(ctx.cap.tokens[stage])
    return MapResult(TOY, stage, layout.to_grid(tokens.double().norm(dim=-1).float()))


@pytest.fixture
def toy_method():
    method = registry.register(MapMethod(TOY, "example", "the norm of each patch token", "-", _token_norm))
    yield method
    registry.unregister(TOY)


def test_the_built_in_methods_are_registered_in_order():
    assert METHODS == ("cam", "cam_hidden", "grad", "grad_cls", "random", "center", "attention", "rollout", "chefer",
                       "attn_gradcam", "ig")
    assert registry.names(baseline=True) == ("random", "center")
    assert registry.names(stages="input") == ("ig",)
    assert registry.needs_attention(["grad", "chefer"]) and not registry.needs_attention(["grad", "ig"])
    rows = {row["name"]: row for row in registry.methods_table()}
    assert rows["chefer"]["citation"].startswith("Chefer et al. 2021") and rows["ig"]["stages"] == "input"


def test_a_method_is_declared_once_and_checked():
    with pytest.raises(ValueError, match="registered already"):
        registry.register(MapMethod("grad", "paper", "again", "-", _token_norm))
    with pytest.raises(ValueError, match="lower-case"):
        MapMethod("Token Norm", "example", "x", "-", _token_norm)
    with pytest.raises(ValueError, match="reads 'weights' is not one of"):
        MapMethod(TOY, "example", "x", "-", _token_norm, reads="weights")
    with pytest.raises(ValueError, match=f"methods: unknown {TOY!r}; choose from cam, "):
        registry.get(TOY)


def test_an_unregistered_method_is_a_usage_error():
    with pytest.raises(Exception, match=f"methods: unknown \\['{TOY}'\\]"):
        resolve_settings({"model": ["m"], "checkpoint": ["c"], "methods": [TOY]})


def test_a_registered_method_is_read_by_options_plan_maps_and_randomisation(toy_method):
    settings = resolve_settings({"model": ["m"], "checkpoint": ["c"], "methods": [TOY, "random"],
                                 "gate": [f"{TOY}@encoder"]})
    assert settings.methods == [TOY, "random"]
    assert map_keys(settings.methods, 2) == [(TOY, "0"), ("random", "0"), (TOY, "1"), ("random", "1"),
                                             (TOY, "encoder"), ("random", "encoder")]
    assert dependency_step("encoder", 6, TOY) == 7 and dependency_step("2", 6, TOY) == 5
    loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())
    image = prepare_image(sorted(embedded_images().glob("*.png"))[0], loaded.data_config)
    cap = capture(loaded.model, normalize(image.pixel, loaded.mean, loaded.std))
    maps = compute_maps(loaded.model, cap, methods=[TOY], stages=["encoder"])
    expected = cap.layout.to_grid(cap.layout.patch_tokens(cap.tokens["encoder"]).double().norm(dim=-1).float())
    assert list(maps) == [f"{TOY}@encoder"] and torch.equal(maps[f"{TOY}@encoder"].values, expected)


@pytest.mark.e2e
def test_a_toy_method_audits_end_to_end(toy_method, pytester, monkeypatch):
    """One module's registration is all it takes: the nested run gates the toy map, checks its randomisation, and
    writes it into the results file and the report."""
    monkeypatch.chdir(pytester.path)
    images = sorted(embedded_images().glob("*.png"))[:5]
    results, report = pytester.path / "results.json", pytester.path / "report.html"
    run = pytester.runpytest(
        *nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
        *[a for p in images for a in ("--images", str(p))], "--methods", f"{TOY},random", "--layers", "encoder",
        "--gate", f"{TOY}@encoder", "--steps", "5", "--no-cache", "--audit-json", str(results),
        "--report", str(report))
    written = json.loads(results.read_text())
    assert run.ret in (0, 1), run.stdout.str()
    assert [f"{g['method']}@{g['stage']}" for g in written["gates"]] == [f"{TOY}@encoder"]
    assert written["gates"][0]["verdict"] in ("pass", "fail", "inconclusive") and written["gates"][0]["n_images"] == 5
    for record in written["runs"]:
        entry = record["maps"][f"{TOY}@encoder"]
        assert entry["method"] == TOY and entry["abpc"] == pytest.approx(entry["lerf_auc"] - entry["morf_auc"])
    curves = written["randomisation"][0]["curves"]
    assert curves[f"{TOY}@encoder"]["dependency_step"] == 1 + loaded_depth()
    assert TOY in report.read_text()


def loaded_depth() -> int:
    return len(load_model(EMBEDDED_MODEL, embedded_checkpoint()).model.blocks)


class _EntryPoint:
    def __init__(self, name, value, load):
        self.name, self.value, self.load = name, value, load


def test_installed_packages_register_methods_through_entry_points(monkeypatch):
    """A package's entry point in ``vit_audit.maps`` is imported (and registers its method); one that fails to import
    is a one-line warning naming it, and the others still load."""
    def load_toy():
        registry.register(MapMethod(TOY, "example", "the norm of each patch token", "-", _token_norm))

    def broken():
        raise ImportError("no module named 'gone'")

    points = [_EntryPoint("broken", "gone.maps", broken), _EntryPoint(TOY, "toy.maps", load_toy)]
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: points if group == registry.ENTRY_POINTS else [])
    try:
        with pytest.warns(UserWarning, match=r"entry point 'broken' \(gone.maps\) failed to load \(ImportError: no "
                                             r"module named 'gone'\); fix or uninstall"):
            assert registry.load_entry_points() == [TOY]
        assert registry.names()[-1] == TOY
    finally:
        registry.unregister(TOY)
