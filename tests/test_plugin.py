"""The pytest plugin and the checks, run as nested pytest sessions (pytester) on timm's tiny test_vit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from conftest import nested_audit, save_tiny

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "cat")  # cat is chelsea: saved mirrored
# the randomisation check on 2 images and 1 seed: its default (10 x 3) is tests/test_sanity.py's to test
FAST = ["--methods", "cam,grad,random", "--layers", "encoder", "--steps", "10", "--batch-size", "32",
        "--randomisation-images", "2", "--randomisation-seeds", "1"]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """test_vit weights as safetensors, a folder of six real photos, and a corrupt one elsewhere."""
    root = tmp_path_factory.mktemp("audit-data")
    save_tiny("test_vit", root / "test_vit.safetensors")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        picture = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((200, 160))
        if name == "cat":  # skimage's cat is chelsea: identical bytes would be audited once
            picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        picture.save(photos / f"{name}.png")
    broken = root / "broken"
    broken.mkdir()
    for name in PHOTOS[:5]:
        (broken / f"{name}.png").write_bytes((photos / f"{name}.png").read_bytes())
    (broken / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return {"checkpoint": root / "test_vit.safetensors", "photos": photos, "broken": broken}


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    """Nested runs take their policy from the test's own folder, not from this project's pyproject.toml."""
    monkeypatch.chdir(pytester.path)


def _args(files, *extra, images=None):
    return [*nested_audit(), "--model", "test_vit",
            "--checkpoint", str(files["checkpoint"]), "--images", str(images or files["photos"]), *FAST, *extra]


@pytest.mark.e2e
def test_checks_are_parametrised_with_readable_ids(pytester, tiny_files):
    result = pytester.runpytest(*_args(tiny_files, "--gate", "cam@encoder", "--collect-only", "-q"))
    out = result.stdout.str()
    assert "test_restoration.py::test_restoration[test_vit-chelsea]" in out
    assert "test_faithfulness.py::test_gate[test_vit-cam@encoder]" in out
    assert "test_layers.py::test_map_is_informative[test_vit-grad@5]" in out
    assert "test_layers.py::test_randomisation[test_vit-cam@encoder]" in out
    assert "test_randomisation[test_vit-random@encoder]" not in out  # baselines do not depend on the model
    assert "param" not in out


@pytest.mark.e2e
def test_gates_pass_and_exit_0_with_a_reachable_threshold(pytester, tiny_files):
    json_path = pytester.path / "results.json"
    result = pytester.runpytest(*_args(tiny_files, "--gate", "cam@encoder", "--threshold", "-1",
                                       "--audit-json", str(json_path)))
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*PASS*test_vit cam@encoder: mean ABPC*vs -1, n=6*", f"results: {json_path}"])
    results = json.loads(json_path.read_text())
    assert results["schema"] == "vit-audit/1"
    assert {"torch", "timm", "device", "seed"} <= set(results["environment"])
    model = results["models"][0]
    assert model["name"] == "test_vit" and model["num_prefix_tokens"] == 1 and model["grid"] == [10, 10]
    assert model["embed_dim"] == 64 and model["depth"] == 6 and len(model["checkpoint_sha256"]) == 64
    assert len(results["runs"]) == 6
    run = results["runs"][0]
    assert isinstance(run["class"], int) and 0 < run["prob"] <= 1
    cam = run["maps"]["cam@encoder"]
    assert len(cam["grid"]) == 10 and len(cam["grid"][0]) == 10
    assert len(cam["morf"]) == len(cam["lerf"]) == 11 and cam["morf_auc"] is not None
    assert run["maps"]["cam@3"]["morf"] is None  # maps of every stage, faithfulness only where measured
    assert run["maps"]["grad@encoder"]["degenerate"] is True
    (gate,) = results["gates"]
    assert gate["verdict"] == "pass" and gate["n_images"] == 6 and gate["threshold"] == -1
    assert gate["ci95"][0] <= gate["statistic"] <= gate["ci95"][1]
    abpc = [r["maps"]["cam@encoder"]["lerf_auc"] - r["maps"]["cam@encoder"]["morf_auc"] for r in results["runs"]]
    assert gate["statistic"] == pytest.approx(np.mean(abpc))


@pytest.mark.e2e
def test_failing_gate_exits_1_with_statistic_ci_threshold_and_worst_images(pytester, tiny_files):
    result = pytester.runpytest(*_args(tiny_files, "--gate", "cam@encoder", "--threshold", "1"))
    assert result.ret == 1
    out = result.stdout.str()
    assert "FAILED" in out and "test_gate[test_vit-cam@encoder]" in out
    assert "mean ABPC of cam@encoder over 6 images is" in out and "[95% CI" in out
    assert "below the threshold +1.000" in out and "images that pulled it down most:" in out


@pytest.mark.e2e
def test_inconclusive_gate_is_skipped_and_fails_with_strict(pytester, tiny_files):
    images = [str(tiny_files["photos"] / f"{name}.png") for name in PHOTOS[:3]]
    args = _args(tiny_files, "--gate", "cam@encoder", "--images", images[1], "--images", images[2],
                 images=images[0])
    result = pytester.runpytest(*args, "-rs")
    assert result.ret == 0
    assert "only 3 images, at least 5 are needed" in result.stdout.str()
    strict = pytester.runpytest(*args, "--strict")
    assert strict.ret == 1
    assert "inconclusive (--strict)" in strict.stdout.str()


@pytest.mark.e2e
def test_degenerate_gated_map_fails_with_the_reason(pytester, tiny_files):
    result = pytester.runpytest(*_args(tiny_files, "--gate", "grad@encoder", "-k", "informative and grad"))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*gated map grad@encoder is degenerate: gradient does not reach patch tokens at the "
                                 "encoder output: the head reads only the class token*"])


@pytest.mark.e2e
@pytest.mark.parametrize("extra, message", [
    (["--model", "not_a_model", "--checkpoint", "x.safetensors", "--images", "."], "model 'not_a_model' is not a timm"),
    (["--model", "test_vit", "--checkpoint", "missing.safetensors", "--images", "."],
     "checkpoint 'missing.safetensors' not found"),
    (["--model", "test_vit", "--images", "."], "checkpoint: 0 checkpoints for 1 models"),
    (["--steps", "0"], "steps: expected a positive integer"),
    (["--methods", "cam,gradcam"], "methods: unknown ['gradcam']"),
    (["--device", "tpu"], "device: 'tpu' is not one of cpu, cuda, auto"),
    (["--layers", "head"], "layers: 'head' is not a block index"),
    (["--layers", "40"], "stage: block '40' does not exist"),
    (["--gate", "cam@3"], "gate: cam@3 gated but their stage is not in --layers"),
    (["--batch-size", "many"], "batch-size: 'many' is not a valid int"),
    (["--report", "."], "report: '.' is a folder; choose a writable file path"),
    (["--audit-json", "/proc/no-such-folder/r.json"], "audit-json: cannot create the folder of"),
])
def test_usage_errors_exit_4_with_one_line_naming_the_option(pytester, tiny_files, extra, message):
    if extra[0] == "--model":
        args = [*nested_audit(), *extra]
    else:
        args = _args(tiny_files, *extra)
    result = pytester.runpytest(*args)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], result.stderr.str()


@pytest.mark.e2e
def test_checkpoint_that_does_not_fit_is_a_usage_error(pytester, tiny_files):
    result = pytester.runpytest(*nested_audit(), "--model", "test_vit2", "--checkpoint",
                                str(tiny_files["checkpoint"]), "--images", str(tiny_files["photos"]))
    assert result.ret == 4
    assert "does not fit model 'test_vit2'" in result.stderr.str()


@pytest.mark.e2e
def test_a_usage_error_still_writes_the_results_file_and_the_report_with_the_error(pytester, tiny_files):
    result = pytester.runpytest(*_args(tiny_files, "--steps", "0", "--audit-json", "r.json", "--report", "r.html"))
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == ["ERROR: steps: expected a positive integer, got 0 (results file: r.json; report: r.html)"]
    results = json.loads((pytester.path / "r.json").read_text())
    assert results["error"] == "steps: expected a positive integer, got 0"
    assert results["schema"] == "vit-audit/1" and results["runs"] == results["checks"] == []
    html = (pytester.path / "r.html").read_text()
    assert 'class="verdict verdict-fail"' in html
    assert "The run stopped before any check ran: steps: expected a positive integer, got 0" in html
    # The paths come from the policy file when the command line names none, even if another policy value is wrong.
    pytester.makefile(".toml", pyproject='[tool.vit-audit]\nreport = "out/policy.html"\nsteps = "twenty"\n')
    result = pytester.runpytest(*_args(tiny_files))
    assert result.ret == 4 and "steps: 'twenty' is not a valid int" in result.stderr.str()
    stopped = "The run stopped before any check ran: steps: &#39;twenty&#39; is not a valid int"  # escaped quotes
    assert stopped in (pytester.path / "out/policy.html").read_text()


@pytest.mark.e2e
def test_a_model_that_does_not_load_fails_its_check_and_the_other_models_are_audited(pytester, tiny_files):
    checkpoint = str(tiny_files["checkpoint"])
    result = pytester.runpytest(*nested_audit(), "--model", "test_vit", "--checkpoint", checkpoint, "--model",
                                "test_vit2", "--checkpoint", checkpoint, "--images", str(tiny_files["photos"]), *FAST,
                                "--gate", "cam@encoder", "--threshold", "-1", "--audit-json", "r.json", "--report",
                                "r.html")
    assert result.ret == 1
    assert result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["test_vit2 (*): checkpoint * does not fit model 'test_vit2': 43 missing*",
                                 "*PASS*test_vit cam@encoder*n=6*",
                                 "FAILED *test_models.py::test_model_loads[[]test_vit2[]]*"])
    results = json.loads((pytester.path / "r.json").read_text())
    assert [m["id"] for m in results["models"]] == ["test_vit", "test_vit2"]
    assert "does not fit model 'test_vit2'" in results["models"][1]["error"]
    assert {r["model_id"] for r in results["runs"]} == {"test_vit"} and len(results["runs"]) == 6
    html = (pytester.path / "r.html").read_text()
    assert 'class="verdict verdict-fail"' in html and "Not loaded, not audited: checkpoint" in html


@pytest.mark.e2e
def test_no_images_found_is_a_usage_error(pytester, tiny_files):
    empty = pytester.mkdir("empty")
    result = pytester.runpytest(*_args(tiny_files, images=empty))
    assert result.ret == 4
    assert "images: no image files" in result.stderr.str()


@pytest.mark.e2e
def test_pyproject_policy_and_audit_config_file_with_command_line_precedence(pytester, tiny_files):
    pytester.makepyprojecttoml("""
        [tool.vit-audit]
        gate = ["cam@encoder"]
        threshold = -1.0
        methods = "cam,random"
        layers = "encoder"
        steps = 10
    """)
    base = [*nested_audit(), "--model", "test_vit", "--checkpoint",
            str(tiny_files["checkpoint"]), "--images", str(tiny_files["photos"]), "-k", "gate"]
    result = pytester.runpytest(*base)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*PASS*test_vit cam@encoder*vs -1, n=6*"])
    config = pytester.makefile(".toml", strict_policy="threshold = 1.0\n")
    assert pytester.runpytest(*base, "--audit-config", str(config)).ret == 1  # the file overrides pyproject
    assert pytester.runpytest(*base, "--audit-config", str(config), "--threshold", "-1").ret == 0  # CLI wins
    bad = pytester.makefile(".toml", bad_policy="treshold = 1.0\n")
    result = pytester.runpytest(*base, "--audit-config", str(bad))
    assert result.ret == 4 and "unknown key 'treshold'" in result.stderr.str()


@pytest.mark.e2e
def test_corrupt_image_fails_its_own_checks_and_the_rest_goes_on(pytester, tiny_files):
    json_path = pytester.path / "results.json"
    result = pytester.runpytest(*_args(tiny_files, "--gate", "cam@encoder", "--threshold", "-1",
                                       "--audit-json", str(json_path), images=tiny_files["broken"]))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*test_restoration[[]test_vit-corrupt[]]*",
                                 "image '*corrupt.png' is not a readable image (*); replace or remove it"])
    outcomes = result.parseoutcomes()
    assert outcomes["failed"] == 3  # restoration, finiteness and faithfulness of the corrupt image
    results = json.loads(json_path.read_text())
    (gate,) = results["gates"]
    assert gate["n_images"] == 5 and gate["verdict"] == "pass" and gate["unreadable_images"] == ["corrupt"]
    failed = [c for c in results["checks"] if c["outcome"] == "failed"]
    assert len(failed) == 3 and all("corrupt" in c["nodeid"] for c in failed)


@pytest.mark.e2e
def test_xdist_gives_the_same_results_and_one_merged_file(pytester, tiny_files):
    serial, parallel = pytester.path / "serial.json", pytester.path / "parallel.json"
    args = _args(tiny_files, "--gate", "cam@encoder", "--threshold", "-1")
    assert pytester.runpytest_subprocess(*args, "--audit-json", str(serial)).ret == 0
    result = pytester.runpytest_subprocess(*args, "-n", "2", "--audit-json", str(parallel))
    assert result.ret == 0
    assert "2 workers" in result.stdout.str()
    one, two = json.loads(serial.read_text()), json.loads(parallel.read_text())
    assert len(two["runs"]) == 6 and len(two["gates"]) == 1
    assert sorted(c["nodeid"] for c in one["checks"]) == sorted(c["nodeid"] for c in two["checks"])
    for a, b in zip(one["runs"], two["runs"]):
        assert a["image"] == b["image"] and a["class"] == b["class"]
        for key in a["maps"]:
            assert a["maps"][key]["morf_auc"] == pytest.approx(b["maps"][key]["morf_auc"], abs=1e-6)
    assert one["gates"][0]["statistic"] == pytest.approx(two["gates"][0]["statistic"], abs=1e-6)
    assert one["gates"][0]["verdict"] == two["gates"][0]["verdict"]
    assert sorted(p.name for p in pytester.path.glob("*.json")) == ["parallel.json", "serial.json"]


@pytest.mark.e2e
def test_plugin_leaves_other_test_runs_alone(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = pytester.runpytest("-p", "audit.plugin")
    assert result.ret == 0
    # pytest's header lists the installed plugins ("plugins: vit-audit-0.1.0, ..."): the plugin itself says nothing
    output = [line for line in result.stdout.lines if not line.startswith("plugins:")]
    assert "vit-audit" not in "\n".join(output)


@pytest.mark.e2e
def test_vit_audit_command_runs_the_packaged_checks_from_any_folder(tiny_files, tmp_path):
    import shutil
    import subprocess

    command = shutil.which("vit-audit")
    assert command, "the vit-audit console script is not installed: pip install -e '.[test]'"
    results = tmp_path / "results.json"
    run = subprocess.run([command, "--model", "test_vit", "--checkpoint", str(tiny_files["checkpoint"]), "--images",
                          str(tiny_files["photos"]), *FAST, "--gate", "cam@encoder", "--threshold", "-1", "-q",
                          "--min-images", "5", "--audit-json", str(results)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Warning" not in run.stdout + run.stderr  # e.g. no PytestAssertRewriteWarning for the plugin
    assert json.loads(results.read_text())["gates"][0]["verdict"] == "pass"
    # The policy is the current folder's: this project's own (report in out/, three gates) does not leak in, even
    # though the checks are installed from this checkout.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vit-audit-cache", "results.json"]  # and the cache
    assert json.loads(results.read_text())["policy"]["sources"] == ["command line"]
    (tmp_path / "pyproject.toml").write_text('[tool.vit-audit]\naudit-json = "policy.json"\nthreshold = -1\n')
    run = subprocess.run([command, "--model", "test_vit", "--checkpoint", str(tiny_files["checkpoint"]), "--images",
                          str(tiny_files["photos"]), *FAST, "--gate", "cam@encoder", "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    policy = json.loads((tmp_path / "policy.json").read_text())["policy"]
    assert policy["threshold"] == -1 and policy["sources"] == [f"{tmp_path / 'pyproject.toml'} [tool.vit-audit]",
                                                               "command line"]
    usage = subprocess.run([command, "--model", "test_vit", "--checkpoint", str(tmp_path / "none.safetensors"),
                            "--images", str(tiny_files["photos"])], cwd=tmp_path, capture_output=True, text=True)
    assert usage.returncode == 4 and "ERROR: checkpoint" in usage.stderr
