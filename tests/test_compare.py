"""Release gates against the released model (audit.verdicts.compare): paired statistics, baselines, and the checks.

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

from audit.measure.stats import paired_difference
from audit.plugin import _checks_dir
from audit.verdicts.compare import Baseline, compare_map, load_baseline, map_agreement
from audit.verdicts.margins import FALLBACK_MARGIN, Margin
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

RECIPE = ["--methods", "cam,grad_cls,random", "--layers", "encoder", "--steps", "10", "--gate", "cam@encoder",
          "--gate", "grad_cls@encoder", "--min-images", "5"]  # 10 photos: the logic, not a release's n
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


@pytest.mark.e2e
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


@pytest.mark.e2e
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
    # The default margin of maps the built-in policy does not gate (README, "Gating a release") is in the record.
    _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--audit-json", "default.json",
         checkpoint=data["degraded"])
    default = json.loads((pytester.path / "default.json").read_text())
    margins = {(c["margin"], c["margin_source"]) for c in default["comparisons"]}
    assert margins == {(FALLBACK_MARGIN, "built-in default")}
    # A relative margin: a share of the baseline's mean ABPC over the pairs.
    _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "compare", "--audit-json", "relative.json",
         "--margin", "50%", checkpoint=data["degraded"])
    for c in json.loads((pytester.path / "relative.json").read_text())["comparisons"]:
        assert c["margin"] == pytest.approx(0.5 * max(0.0, c["baseline_abpc"])) and c["margin_rule"] == "50%"


@pytest.mark.e2e
def test_map_drift_gated_by_min_map_agreement(pytester, data):
    result = _run(pytester, data, "--baseline", str(data["baseline"]), "-k", "map_agreement", "--margin", "1",
                  "--min-map-agreement", "0.99", checkpoint=data["degraded"])
    assert result.ret == 1
    assert "the explanations point at other evidence" in result.stdout.str()


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_gated_map_the_baseline_did_not_measure_is_a_usage_error(pytester, data):
    recipe = ["--methods", "cam,grad,random", "--layers", "0,encoder", "--steps", "10", "--gate", "grad@0"]
    result = _run(pytester, data, "--baseline", str(data["baseline"]), recipe=recipe)
    assert result.ret == 4 and "has no curves for grad@0" in result.stderr.str()


@pytest.mark.e2e
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
    assert result.ret == 1  # the candidate has not shown that it is no worse: undecided does not ship
    out = result.stdout.str()
    assert "inconclusive (not shown to be no worse)" in out and "only 3 paired images, at least 5 are needed" in out
    results = json.loads((pytester.path / "r.json").read_text())
    assert results["baseline"]["images_only_in_candidate"] == [f"new-{other.stem}"]
    assert sorted(results["baseline"]["images_only_in_baseline"]) == sorted(Path(n).stem for n in names[3:])
    assert all(c["verdict"] == "inconclusive" and c["n_pairs"] == 3 for c in results["comparisons"])
    assert results["comparisons"][0]["unpaired_images"] == {f"new-{other.stem}": "not in the baseline"}


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_without_a_baseline_the_comparison_checks_are_not_collected(pytester, data):
    result = _run(pytester, data, "--collect-only", "-q")
    assert "test_compare.py" not in result.stdout.str() and result.ret == 0


@pytest.mark.e2e
def test_xdist_gives_the_same_comparison(pytester, data):
    args = [*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(data["degraded"]), "--images",
            str(data["photos"]), *RECIPE, "--baseline", str(data["baseline"]), "--margin", "1"]
    assert pytester.runpytest_subprocess(*args, "--audit-json", "serial.json").ret == 0
    assert pytester.runpytest_subprocess(*args, "-n", "2", "--audit-json", "parallel.json").ret == 0
    one, two = (json.loads((pytester.path / name).read_text())["comparisons"] for name in ("serial.json",
                                                                                            "parallel.json"))
    assert [(c["statistic"], c["ci95"], c["drift"]["statistic"]) for c in one] == \
        [(c["statistic"], c["ci95"], c["drift"]["statistic"]) for c in two]


@pytest.mark.e2e
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


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_baseline_of_the_same_architecture_with_another_data_config_is_a_usage_error(pytester, data, tmp_path):
    other = json.loads(data["baseline"].read_text())
    other["models"][0]["data_config"]["mean"] = [0.5]
    changed = tmp_path / "other-mean.json"
    changed.write_text(json.dumps(other))
    result = _run(pytester, data, "--baseline", str(changed))
    assert result.ret == 4
    assert "data config mean [0.5] (baseline) vs (0.286,) (this run)" in result.stderr.str()


@pytest.mark.parametrize("cli, message", [
    ({"margin": "-0.1"}, "margin: '-0.1' is not a margin: give an ABPC difference in [0, 1] (e.g. 0.05) or a "
                         "percentage of the baseline's mean ABPC in [0%, 1000%] (e.g. \"25%\")"),
    ({"margin": "nan"}, "margin: 'nan' is not a margin: give an ABPC difference in [0, 1] (e.g. 0.05) or a "
                        "percentage of the baseline's mean ABPC in [0%, 1000%] (e.g. \"25%\")"),
    ({"margin": "-5%"}, "margin: '-5%' is not a margin: give an ABPC difference in [0, 1] (e.g. 0.05) or a "
                        "percentage of the baseline's mean ABPC in [0%, 1000%] (e.g. \"25%\")"),
    ({"min_map_agreement": "1.5"}, "min-map-agreement: expected a Spearman correlation in [-1, 1], got 1.5"),
    ({"min_map_agreement": "high"}, "min-map-agreement: 'high' is not a valid float"),
])
def test_comparison_options_out_of_range_are_one_line_naming_the_option(cli, message):
    from audit.config.settings import resolve_settings

    with pytest.raises(ValueError) as err:
        resolve_settings(cli)
    assert str(err.value) == message


@pytest.mark.e2e
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


# -- the non-inferiority rule on synthetic pairs ------------------------------------------------------------------
def _entry(abpc, flat=False):
    curve = [0.5] * 3 if flat else [0.9, 0.5, 0.1]
    return {"morf_auc": 0.3, "lerf_auc": 0.3 + abpc, "morf": curve, "lerf": curve, "grid": [[1.0, 0.0], [0.0, 1.0]]}


def _pairs(candidate, baseline, flat=()):
    """Candidate runs, digests and a baseline holding one map ``cam@encoder`` per image."""
    runs, base, digests = [], {}, {}
    for i, (c, b) in enumerate(zip(candidate, baseline)):
        digests[f"i{i}"] = f"d{i}"
        runs.append({"image_id": f"i{i}", "class": 1, "maps": {"cam@encoder": _entry(c, i in flat)}})
        base[f"d{i}"] = {"image_id": f"i{i}", "class": 1, "maps": {"cam@encoder": _entry(b, i in flat)}}
    return runs, digests, Baseline("b.json", "x", {}, {"name": "m"}, runs=base)


def _compare(runs, digests, baseline, margin, min_images=5):
    return compare_map(runs, digests, baseline, "cam", "encoder", "encoder", model_id="m", model_name="m",
                       input_size=(2, 2), margin=margin, min_images=min_images, n_boot=2000)


def test_flat_pairs_are_left_out_of_the_statistics_and_counted():
    rng = np.random.default_rng(0)
    base = list(rng.normal(0.3, 0.1, 30))
    cand = [b - 0.1 + 0.02 * rng.standard_normal() for b in base]
    flat = set(range(10))  # both models' curves flat: d would be 0 whatever happened
    for i in flat:
        base[i] = cand[i] = 0.0
    record = _compare(*_pairs(cand, base, flat), margin=0.05)
    assert record["n_pairs"] == 20 and sorted(record["flat_pairs"]) == sorted(f"i{i}" for i in flat)
    assert record["statistic"] == pytest.approx(np.mean([c - b for c, b in zip(cand, base)][10:]))
    assert record["verdict"] == "fail" and "10 flat pair(s) left out" in record["reason"]


def test_a_pair_without_a_finite_abpc_is_not_paired():
    runs, digests, baseline = _pairs([0.3] * 6, [0.3] * 6)
    baseline.runs["d0"]["maps"]["cam@encoder"]["lerf_auc"] = float("nan")
    record = _compare(runs, digests, baseline, margin=0.05)
    assert record["n_pairs"] == 5 and record["unpaired_images"] == {"i0": "ABPC not finite in the baseline"}


def test_a_relative_margin_is_a_share_of_the_baseline_mean_abpc_over_the_pairs():
    rng = np.random.default_rng(1)
    base = list(rng.normal(0.4, 0.05, 25))
    cand = [b - 0.06 + 0.01 * rng.standard_normal() for b in base]
    relative = _compare(*_pairs(cand, base), margin="25%")
    assert relative["margin"] == pytest.approx(0.25 * np.mean(base)) and relative["verdict"] == "pass"
    assert "25% of the baseline's mean ABPC" in relative["reason"]
    assert _compare(*_pairs(cand, base), margin=Margin(0.05))["verdict"] == "fail"  # absolute 0.05: a drop of 0.06
    assert Margin(0.5, relative=True).resolve(-0.1) == 0.0  # a baseline no better than random: no room at all


def test_an_undecided_comparison_says_how_many_pairs_would_decide_it():
    rng = np.random.default_rng(2)
    base = list(rng.normal(0.3, 0.1, 20))
    cand = [b + 0.25 * rng.standard_normal() for b in base]
    record = _compare(*_pairs(cand, base), margin=0.05, min_images=20)
    assert record["verdict"] == "inconclusive"
    power = record["power"]
    assert power["images_needed"] > 20 and f"{power['images_needed']} paired images would decide it" in record["reason"]
    assert 0 < record["p_fail"] <= 1 and record["power"]["sd"] == pytest.approx(
        np.std([c - b for c, b in zip(cand, base)], ddof=1))


@pytest.mark.e2e
def test_the_results_file_of_the_baseline_is_never_written_over(pytester, data):
    """``--audit-json`` naming the baseline (directly, through a link or another spelling) is a usage error, and the
    stopped run writes nothing over it."""
    before = data["baseline"].read_bytes()
    link = pytester.path / "link.json"
    link.symlink_to(data["baseline"])
    spelled = data["baseline"].parent / ".." / data["baseline"].parent.name / data["baseline"].name
    for target in (data["baseline"], link, spelled):
        result = _run(pytester, data, "--baseline", str(data["baseline"]), "--audit-json", str(target))
        errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
        assert result.ret == 4 and len(errors) == 1, result.stderr.str()
        assert "is the baseline file" in errors[0] and "give --audit-json another path" in errors[0]
        assert data["baseline"].read_bytes() == before
    labels = pytester.path / "labels.csv"
    labels.write_text("file,class_index\n")
    result = _run(pytester, data, "--labels", str(labels), "--report", str(labels))
    assert result.ret == 4 and "is the labels file" in result.stderr.str()
    assert labels.read_text() == "file,class_index\n"


@pytest.mark.e2e
def test_a_baseline_that_shares_no_image_or_has_no_finite_abpc_is_a_usage_error(pytester, data):
    other = pytester.path / "other"
    other.mkdir()
    for path in sorted(embedded_images().glob("*.png"))[1::2][:5]:  # the photos the baseline was not audited on
        shutil.copyfile(path, other / path.name)
    result = _run(pytester, data, "--baseline", str(data["baseline"]), images=other)
    assert result.ret == 4 and "shares no image with this run" in result.stderr.str()
    broken = json.loads(data["baseline"].read_text())
    for run in broken["runs"]:
        for entry in run["maps"].values():
            if entry.get("lerf_auc") is not None:
                entry["lerf_auc"] = float("nan")
    path = pytester.path / "nan.json"
    path.write_text(json.dumps(broken))
    result = _run(pytester, data, "--baseline", str(path))
    assert result.ret == 4 and "has no finite ABPC of cam@encoder" in result.stderr.str()
