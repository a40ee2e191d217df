"""Settings: command line over --audit-config over [tool.vit-audit], each value validated with its option named."""

from __future__ import annotations

import pytest

from audit.settings import output_settings, resolve_settings

BASE = {"model": ["test_vit"], "checkpoint": ["w.safetensors"], "images": ["photos"]}


def test_precedence_command_line_then_config_file_then_pyproject(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.vit-audit]\nsteps = 10\nthreshold = 0.1\ngate = ["cam@encoder"]\nseed = 3\n')
    config = tmp_path / "policy.toml"
    config.write_text("threshold = 0.2\nbatch-size = 16\n")
    settings = resolve_settings({**BASE, "seed": "5"}, config, pyproject)
    assert (settings.steps, settings.threshold, settings.batch_size, settings.seed) == (10, 0.2, 16, 5)
    assert settings.gate == ["cam@encoder"]
    assert settings.sources == [f"{pyproject} [tool.vit-audit]", str(config), "command line"]


def test_config_file_may_hold_a_tool_table_and_limits(tmp_path):
    config = tmp_path / "audit.toml"
    config.write_text('[tool.vit-audit]\nmethods = ["cam", "random"]\n'
                      '[tool.vit-audit.limits."cam@encoder"]\nmax_morf_auc = 0.3\n')
    settings = resolve_settings(BASE, config)
    assert settings.methods == ["cam", "random"]
    assert settings.limits["cam@encoder"].max_morf_auc == 0.3


def test_comma_lists_and_repeated_options_are_both_lists():
    settings = resolve_settings({**BASE, "methods": ["cam,grad", "random"], "layers": ["0,encoder"]})
    assert settings.methods == ["cam", "grad", "random"] and settings.layers == ["0", "encoder"]


@pytest.mark.parametrize("cli, message", [
    ({"steps": "0"}, "steps: expected a positive integer, got 0"),
    ({"steps": "2.5"}, "steps: '2.5' is not a valid int"),
    ({"threshold": "high"}, "threshold: 'high' is not a valid float"),
    ({"fill": "1.5"}, "fill: 1.5 is outside \\[0, 1\\]"),
    ({"unit": "superpixel"}, "unit: 'superpixel' is not pixel or patch"),
    ({"amp": "int8"}, "amp: 'int8' is not bfloat16 or float16"),
    ({"act": "tanh"}, "act: 'tanh' is not one of"),
    ({"gate": ["cam-encoder"]}, "gate: 'cam-encoder' is not method@stage"),
    ({"methods": ["cam"], "gate": ["grad@0"]}, "gate: 'grad@0' gates a map that --methods does not compute"),
    ({"checkpoint": []}, "checkpoint: 0 checkpoints for 1 models"),
])
def test_bad_values_name_the_option(cli, message):
    with pytest.raises(ValueError, match=message):
        resolve_settings({**BASE, **cli})


def test_unknown_key_and_bad_toml_are_reported_with_the_file(tmp_path):
    typo = tmp_path / "typo.toml"
    typo.write_text("treshold = 0.1\n")
    with pytest.raises(ValueError, match="typo.toml: unknown key 'treshold'"):
        resolve_settings(BASE, typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("threshold = = 0.1\n")
    with pytest.raises(ValueError, match="audit-config: .*broken.toml' is not valid TOML"):
        resolve_settings(BASE, broken)
    with pytest.raises(ValueError, match="audit-config: .*missing.toml' not found"):
        resolve_settings(BASE, tmp_path / "missing.toml")


def test_output_settings_are_read_leniently_for_a_run_that_cannot_start(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.vit-audit]\nreport = "out/r.html"\nsteps = "twenty"\nreport-thumbnail = 96\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("audit-json = \n")  # not TOML: passed over
    with pytest.raises(ValueError, match="steps"):
        resolve_settings(BASE, None, pyproject)
    out = output_settings({"audit_json": "r.json", "report_max_mb": "many"}, broken, pyproject)
    assert out == {"audit_json": "r.json", "report": "out/r.html", "report_thumbnail": 96, "report_max_mb": 5.0}
    out = output_settings({"report": "cli.html", "report_thumbnail": "0"}, None, pyproject)
    assert out["report"] == "cli.html" and out["report_thumbnail"] == 96  # 0 px is no thumbnail: not taken
    # An empty --report turns the policy's report off, as it does for a run that starts.
    assert output_settings({"report": ""}, None, pyproject)["report"] is None
    assert resolve_settings({**BASE, "report": ""}).report is None
