"""Release gates against the released model (audit.compare): paired statistics, baselines, and the checks.

The nested audits use the embedded Fashion-MNIST model on its sample images with a small recipe; the baseline is a
results file written by a real run of the checks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from audit.compare import load_baseline, map_agreement
from audit.plugin import _checks_dir
from audit.settings import DEFAULT_MARGIN
from audit.stats import paired_difference
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

RECIPE = ["--methods", "cam,grad_cls,random", "--layers", "encoder", "--steps", "10", "--gate", "cam@encoder",
          "--gate", "grad_cls@encoder"]
AUCS = st.lists(st.tuples(*[st.floats(0, 1, allow_subnormal=False)] * 4), min_size=1, max_size=30)


# -- paired statistics ----------------------------------------------------------------------------------------------
def _difference(rows, seed=0):
    cm, cl, bm, bl = (list(column) for column in zip(*rows))
    return paired_difference(cm, cl, bm, bl, seed=seed, n_boot=500)


@settings(max_examples=40)
@given(rows=AUCS)
def test_identical_models_differ_by_zero(rows):
    same = [(m, lerf, m, lerf) for m, lerf, _, _ in rows]
    diff = _difference(same)
    assert diff.abpc == diff.morf_auc == diff.lerf_auc == 0.0 and diff.abpc_ci == (0.0, 0.0)
    assert diff.n_pairs == len(rows)


@settings(max_examples=40)
@given(rows=AUCS)
def test_swapping_candidate_and_baseline_flips_the_sign(rows):
    diff = _difference(rows)
    swapped = _difference([(bm, bl, cm, cl) for cm, cl, bm, bl in rows])
    assert swapped.abpc == pytest.approx(-diff.abpc, abs=1e-12)
    assert swapped.abpc_ci[0] == pytest.approx(-diff.abpc_ci[1], abs=1e-12)
    assert swapped.abpc_ci[1] == pytest.approx(-diff.abpc_ci[0], abs=1e-12)


@settings(max_examples=40)
@given(rows=AUCS, shift=st.floats(-0.5, 0.5, allow_subnormal=False))
def test_a_constant_shift_moves_the_statistic_and_its_ci_by_that_shift(rows, shift):
    diff = _difference(rows)
    # The candidate's LeRF AUC higher by `shift` on every image: every d_i moves by exactly `shift`.
    shifted = _difference([(cm, cl + shift, bm, bl) for cm, cl, bm, bl in rows])
    assert shifted.abpc == pytest.approx(diff.abpc + shift, abs=1e-9)
    assert shifted.abpc_ci[0] == pytest.approx(diff.abpc_ci[0] + shift, abs=1e-9)
    assert shifted.abpc_ci[1] == pytest.approx(diff.abpc_ci[1] + shift, abs=1e-9)
    assert shifted.morf_auc_ci == diff.morf_auc_ci  # the MoRF AUCs did not move


def test_the_three_cis_resample_the_same_images():
    rng = np.random.default_rng(1)
    cm, bm = rng.random(12), rng.random(12)
    diff = paired_difference(cm, cm + 0.3, bm, bm + 0.1, seed=5, n_boot=2000)
    # LeRF - MoRF is a constant 0.3 - 0.1 per image: ABPC's CI is exactly the shift of nothing, (0.2, 0.2).
    assert diff.abpc_ci == pytest.approx((0.2, 0.2), abs=1e-12)
    # MoRF and LeRF differences are the same numbers shifted by 0.2: with the same resamples, the same CI shifted.
    assert diff.lerf_auc_ci[0] - diff.morf_auc_ci[0] == pytest.approx(0.2, abs=1e-12)
    assert diff.lerf_auc_ci[1] - diff.morf_auc_ci[1] == pytest.approx(0.2, abs=1e-12)


def test_map_agreement_on_the_grid_and_across_grids():
    grid = np.arange(16, dtype=float).reshape(4, 4)
    assert map_agreement(grid.tolist(), grid.tolist(), (8, 8)) == pytest.approx(1.0)
    assert map_agreement(grid.tolist(), (-grid).tolist(), (8, 8)) == pytest.approx(-1.0)
    coarse = grid.reshape(2, 2, 2, 2).mean(axis=(1, 3))  # the same picture on a 2x2 grid
    assert map_agreement(grid.tolist(), coarse.tolist(), (8, 8)) > 0.9
    assert np.isnan(map_agreement(grid.tolist(), np.zeros((4, 4)).tolist(), (8, 8)))  # a constant map ranks nothing
    assert np.isnan(map_agreement(None, grid.tolist(), (8, 8)))


# -- real runs ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Ten sample images, a baseline results file of the embedded model on them, and a degraded candidate."""
    root = tmp_path_factory.mktemp("compare")
    photos = root / "photos"
    photos.mkdir()
    for path in sorted(embedded_images().glob("*.png"))[::2]:
        shutil.copyfile(path, photos / path.name)
    state = load_file(str(embedded_checkpoint()))
    generator = torch.Generator().manual_seed(0)
    noisy = {k: (v + 1.5 * v.std() * torch.randn(v.shape, generator=generator) if "blocks" in k and v.ndim else v)
             .contiguous() for k, v in state.items()}
    save_file(noisy, str(root / "degraded.safetensors"))
    baseline = root / "baseline.json"
    run = subprocess.run([sys.executable, "-m", "pytest", str(_checks_dir()), "-p", "audit.plugin", "-p",
                          "no:cacheprovider", "--rootdir", str(root), "-q", "--model", EMBEDDED_MODEL, "--checkpoint",
                          str(embedded_checkpoint()), "--images", str(photos), *RECIPE, "--audit-json", str(baseline)],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"root": root, "photos": photos, "baseline": baseline, "degraded": root / "degraded.safetensors"}


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)


def _run(pytester, data, *extra, checkpoint=None, images=None, recipe=RECIPE):
    return pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint",
                              str(checkpoint or embedded_checkpoint()), "--images", str(images or data["photos"]),
                              *recipe, *extra)


def test_the_released_model_against_itself_passes_with_no_difference_and_full_agreement(pytester, data):
    result = _run(pytester, data, "--baseline", str(data["baseline"]), "--audit-json", "r.json", "--margin", "0.05",
                  "--min-map-agreement", "0.9", "--junitxml", "junit.xml")
    assert result.ret == 0, result.stdout.str()
    outcomes = result.parseoutcomes()
    result.stdout.fnmatch_lines(["*PASS*vit_fmnist vs baseline cam@encoder: mean ABPC difference +0.000 [[]+0.000, "
                                 "+0.000[]] vs -0.05, n=10; maps: median Spearman +1.000*same class on 100%*"])
    results = json.loads((pytester.path / "r.json").read_text())
    assert [(c["method"], c["verdict"], c["drift"]["verdict"]) for c in results["comparisons"]] == [
        ("cam", "pass", "pass"), ("grad_cls", "pass", "pass")]
    assert results["baseline"]["sha256"] and results["baseline"]["images_only_in_candidate"] == []
    assert all(p["d"] == 0 and p["spearman"] == pytest.approx(1.0) for p in results["comparisons"][0]["pairs"])
    junit = (pytester.path / "junit.xml").read_text()
    assert 'test_no_regression[vit_fmnist-vs-vit_fmnist-cam@encoder]' in junit and 'name="margin"' in junit
    assert outcomes["passed"] >= 4  # two comparisons x (no regression, map agreement)


def test_a_degraded_candidate_fails_with_the_statistic_margin_both_means_and_the_largest_drops(pytester, data):
    result = _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--margin", "0.05",
                  checkpoint=data["degraded"])
    assert result.ret == 1
    out = result.stdout.str()
    assert "FAILED" in out and "test_no_regression[vit_fmnist-vs-vit_fmnist-cam@encoder]" in out
    assert "less faithful than the baseline (the CI is below -0.050); ABPC dropped most on" in out
    assert "(candidate +" in out and ", baseline +" in out and "margin 0.050" in out
    # A wide enough margin lets the same candidate through: the verdict follows the margin, not the model alone.
    assert _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--margin", "1",
                checkpoint=data["degraded"]).ret == 0
    # The default margin (README, "Gating a release") is in the record and the reason.
    _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--audit-json", "default.json",
         checkpoint=data["degraded"])
    default = json.loads((pytester.path / "default.json").read_text())
    assert {c["margin"] for c in default["comparisons"]} == {DEFAULT_MARGIN}


def test_map_drift_gated_by_min_map_agreement(pytester, data):
    result = _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "map_agreement", "--margin", "1",
                  "--min-map-agreement", "0.99", checkpoint=data["degraded"])
    assert result.ret == 1
    assert "the explanations point at other evidence" in result.stdout.str()


@pytest.mark.parametrize("extra, message", [
    (["--steps", "5"], "steps 10 (baseline) vs 5 (this run)"),
    (["--seed", "3"], "seed 0 (baseline) vs 3 (this run)"),
    (["--act", "relu"], "act 'gelu' (baseline) vs 'relu' (this run)"),
    (["--fill", "0"], "fill 0.4980392156862745 (baseline) vs 0.0 (this run)"),
    (["--fill", "road"], "fill 0.4980392156862745 (baseline) vs 'road' (this run)"),
    (["--score", "top1"], "score 'prob' (baseline) vs 'top1' (this run)"),
])
def test_a_baseline_made_with_another_recipe_is_a_usage_error_naming_what_differs(pytester, data, extra, message):
    result = _run(pytester, data, "--baseline", str(data["baseline"]), *extra)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "was audited with another recipe" in errors[0] and message in errors[0], errors


def test_a_gated_map_the_baseline_did_not_measure_is_a_usage_error(pytester, data):
    recipe = ["--methods", "cam,grad,random", "--layers", "0,encoder", "--steps", "10", "--gate", "grad@0"]
    result = _run(pytester, data, "--baseline", str(data["baseline"]), recipe=recipe)
    assert result.ret == 4 and "has no curves for grad@0" in result.stderr.str()


def test_images_only_in_one_run_are_listed_and_too_few_pairs_are_inconclusive(pytester, data):
    few = pytester.path / "few"
    few.mkdir()
    names = sorted(p.name for p in data["photos"].iterdir())
    for name in names[:3]:
        shutil.copyfile(data["photos"] / name, few / name)
    other = sorted(embedded_images().glob("*.png"))[1]  # not among the baseline's images
    shutil.copyfile(other, few / f"new-{other.name}")
    result = _run(pytester, data, "--baseline", str(data["baseline"]), "--audit-json", "r.json", "-k", "compare",
                  "-rs", images=few)
    assert result.ret == 0
    assert "only 3 paired images, at least 5 are needed" in result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    assert results["baseline"]["images_only_in_candidate"] == [f"new-{other.stem}"]
    assert sorted(results["baseline"]["images_only_in_baseline"]) == sorted(Path(n).stem for n in names[3:])
    assert all(c["verdict"] == "inconclusive" and c["n_pairs"] == 3 for c in results["comparisons"])
    assert results["comparisons"][0]["unpaired_images"] == {f"new-{other.stem}": "not in the baseline"}


def test_a_baseline_from_the_previous_schema_version_is_paired_by_hashing_its_files(pytester, data, tmp_path):
    old = json.loads(data["baseline"].read_text())
    for image in old["images"]:
        del image["sha256"]  # results files before this version recorded no sha256
    old.pop("images_left_out", None)
    older = tmp_path / "older.json"
    older.write_text(json.dumps(old))
    assert len(load_baseline(older).runs) == 10
    result = _run(pytester, data, "--baseline", str(older), "-k", "no_regression")
    assert result.ret == 0 and "n=10" in result.stdout.str()
    for run in old["runs"]:
        run["image"] = str(tmp_path / "moved" / Path(run["image"]).name)  # the files are gone: nothing to hash
    older.write_text(json.dumps(old))
    gone = load_baseline(older)
    assert gone.runs == {} and len(gone.unhashed) == 10


@pytest.mark.parametrize("content, message", [
    (lambda text: text[: len(text) // 2], "is not a readable results file ("),
    (lambda text: "not json", "is not a readable results file (Expecting value"),
    (lambda text: '{"schema": "something-else"}', "is not a vit-audit results file"),
    (lambda text: '{"schema": "vit-audit/1", "error": "steps: bad"}', "is the results file of a run that stopped"),
])
def test_a_baseline_that_is_not_a_usable_results_file_is_one_line_and_nothing_else_is_lost(pytester, data, content,
                                                                                            message):
    bad = pytester.path / "bad.json"
    bad.write_text(content(data["baseline"].read_text()))
    result = _run(pytester, data, "--baseline", str(bad), "--audit-json", "r.json", "--report", "r.html")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: baseline: ") and message in errors[0], errors
    assert json.loads((pytester.path / "r.json").read_text())["error"].startswith("baseline: ")
    assert (pytester.path / "r.html").stat().st_size > 0


def test_without_a_baseline_the_comparison_checks_are_not_collected(pytester, data):
    result = _run(pytester, data, "--collect-only", "-q")
    assert "test_compare.py" not in result.stdout.str() and result.ret == 0


def test_xdist_gives_the_same_comparison(pytester, data):
    args = [*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(data["degraded"]), "--images",
            str(data["photos"]), *RECIPE, "--baseline", str(data["baseline"]), "--margin", "1"]
    assert pytester.runpytest_subprocess(*args, "--audit-json", "serial.json").ret == 0
    assert pytester.runpytest_subprocess(*args, "-n", "2", "--audit-json", "parallel.json").ret == 0
    one, two = (json.loads((pytester.path / name).read_text())["comparisons"] for name in ("serial.json",
                                                                                            "parallel.json"))
    assert [(c["statistic"], c["ci95"], c["drift"]["statistic"]) for c in one] == \
        [(c["statistic"], c["ci95"], c["drift"]["statistic"]) for c in two]


def test_a_baseline_model_audited_in_the_same_run_gives_the_numbers_of_its_results_file(pytester, data):
    from_file = _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--margin", "1",
                     "--audit-json", "file.json", checkpoint=data["degraded"])
    in_run = _run(pytester, data, "--baseline-model", EMBEDDED_MODEL, "--baseline-checkpoint",
                  str(embedded_checkpoint()), "-k", "compare", "--margin", "1", "--audit-json", "run.json",
                  checkpoint=data["degraded"])
    assert from_file.ret == in_run.ret == 0
    one, two = (json.loads((pytester.path / name).read_text()) for name in ("file.json", "run.json"))
    assert any("vit_fmnist-vs-baseline-vit_fmnist-cam@encoder" in c["nodeid"] for c in two["checks"])
    for a, b in zip(one["comparisons"], two["comparisons"]):
        assert (a["statistic"], a["ci95"]) == (b["statistic"], b["ci95"])
        assert a["drift"]["statistic"] == b["drift"]["statistic"]
    assert two["baseline"]["source"].endswith("audited in this run") and len(two["runs"]) == 10  # candidate's only


@pytest.mark.parametrize("extra, message", [
    (["--baseline", "x.json", "--baseline-model", EMBEDDED_MODEL, "--baseline-checkpoint", "y"],
     "baseline: give either --baseline"),
    (["--baseline-model", EMBEDDED_MODEL], "--baseline-model and --baseline-checkpoint go together"),
    (["--baseline-model", "test_vit", "--baseline-checkpoint", "EMBEDDED"], "does not fit model 'test_vit'"),
])
def test_baseline_model_usage_errors(pytester, data, extra, message):
    extra = [str(embedded_checkpoint()) if a == "EMBEDDED" else a for a in extra]
    result = _run(pytester, data, *extra)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], errors


def test_a_baseline_of_the_same_architecture_with_another_data_config_is_a_usage_error(pytester, data, tmp_path):
    other = json.loads(data["baseline"].read_text())
    other["models"][0]["data_config"]["mean"] = [0.5]
    changed = tmp_path / "other-mean.json"
    changed.write_text(json.dumps(other))
    result = _run(pytester, data, "--baseline", str(changed))
    assert result.ret == 4
    assert "data config mean [0.5] (baseline) vs (0.286,) (this run)" in result.stderr.str()


@pytest.mark.parametrize("cli, message", [
    ({"margin": "-0.1"}, "margin: expected an ABPC difference in [0, 1], got -0.1"),
    ({"margin": "nan"}, "margin: expected an ABPC difference in [0, 1], got nan"),
    ({"min_map_agreement": "1.5"}, "min-map-agreement: expected a Spearman correlation in [-1, 1], got 1.5"),
    ({"min_map_agreement": "high"}, "min-map-agreement: 'high' is not a valid float"),
])
def test_comparison_options_out_of_range_are_one_line_naming_the_option(cli, message):
    from audit.settings import resolve_settings

    with pytest.raises(ValueError) as err:
        resolve_settings(cli)
    assert str(err.value) == message


def test_a_baseline_path_that_is_missing_a_folder_or_several_models_is_one_line(data, tmp_path):
    with pytest.raises(ValueError, match=r"^baseline: '.*missing\.json' not found: pass the results file"):
        load_baseline(tmp_path / "missing.json")
    with pytest.raises(ValueError, match=r"^baseline: '.*' is not a regular file; pass a results file$"):
        load_baseline(tmp_path)
    two = json.loads(data["baseline"].read_text())
    two["models"].append(dict(two["models"][0], id="other"))
    (tmp_path / "two.json").write_text(json.dumps(two))
    with pytest.raises(ValueError, match=r"holds 2 audited models; a baseline is the audit of one model$"):
        load_baseline(tmp_path / "two.json")
