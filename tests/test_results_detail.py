"""How much of each record the results file keeps (``--results-detail full|curves|summary``): what each level keeps
and drops, compact grids, the report and a ``--baseline`` comparison from a lighter file.

The nested audits use the embedded Fashion-MNIST model on six of its sample images: block 1 and the encoder
measured, ``cam@encoder`` gated, so that some measured maps are charted by the report and others are not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audit.config.settings import resolve_settings
from audit.plugin import _checks_dir
from audit.reports import render_report
from audit.results.detail import DETAILS, charted_maps, compact, trim_comparison, trim_run
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

# the randomisation check on 2 images and 1 seed: its default (10 x 3) is tests/test_sanity.py's to test
RECIPE = ["--methods", "cam,grad_cls,random", "--layers", "1,encoder", "--steps", "10", "--gate", "cam@encoder",
          "--randomisation-images", "2", "--randomisation-seeds", "1"]
TIMING_KEYS = ("seconds", "created", "duration")


def _audit(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", str(_checks_dir()), "-p", "audit.plugin", "-p",
                           "no:cacheprovider", "--rootdir", str(root), "-q", "--model", EMBEDDED_MODEL, "--checkpoint",
                           str(embedded_checkpoint()), "--images", str(root / "photos"), *RECIPE, *extra],
                          cwd=root, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One results file per level (the first run computes the records, the others are served by the cache) and one
    at the default level computed without the cache."""
    root = tmp_path_factory.mktemp("detail")
    photos = root / "photos"
    photos.mkdir()
    for path in sorted(embedded_images().glob("*.png"))[:6]:
        shutil.copyfile(path, photos / path.name)
    out = {"root": root, "photos": photos}
    for level in DETAILS:
        out[level] = root / f"{level}.json"
        run = _audit(root, "--results-detail", level, "--cache", str(root / "cache"), "--audit-json", str(out[level]))
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out["computed"] = root / "computed.json"
    run = _audit(root, "--no-cache", "--audit-json", str(out["computed"]))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _without(value, keys=TIMING_KEYS):
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def _maps(results: dict):
    for run in results["runs"]:
        for key, entry in run["maps"].items():
            yield run["image_id"], key, entry


@pytest.mark.e2e
def test_full_keeps_every_grid_curve_and_picture(files):
    full = _read(files["full"])
    assert full["settings"]["results_detail"] == "full"
    measured = [(key, m) for _, key, m in _maps(full) if m["morf_auc"] is not None]
    assert {key for key, _ in measured} >= {"cam@1", "grad_cls@1", "random@1", "cam@encoder", "random@encoder"}
    assert all(len(m["morf"]) == len(m["lerf"]) == 11 for _, m in measured)
    assert all(m["grid"] is not None for _, _, m in _maps(full) if m["applicable"])
    for run in full["runs"]:
        assert run["figures"]["input"].startswith("data:image/png;base64,")
        assert all(entry["png"].startswith("data:image/png;base64,") for stages in run["restorations"].values()
                   for entry in stages.values() if entry["shape"])


@pytest.mark.e2e
def test_curves_keeps_every_curve_and_the_gated_grids_and_drops_the_other_grids_and_the_pictures(files):
    full, curves = _read(files["full"]), _read(files["curves"])
    assert curves["settings"]["results_detail"] == "curves"
    full_maps = {(image, key): m for image, key, m in _maps(full)}
    dropped = 0
    for image, key, m in _maps(curves):
        whole = full_maps[(image, key)]
        assert (m["morf_auc"], m["lerf_auc"], m["abpc"]) == (whole["morf_auc"], whole["lerf_auc"], whole["abpc"])
        assert (m["morf"], m["lerf"]) == (whole["morf"], whole["lerf"])
        if key == "cam@encoder":  # the gated map: the comparison with a baseline reads its grid
            assert m["grid"] == whole["grid"] is not None
        elif whole["grid"] is not None:
            assert m["grid"] is None
            dropped += 1
    assert dropped >= 6 * 9  # every other map of every image
    for one, other in zip(full["runs"], curves["runs"]):
        assert set(other["figures"].values()) == {None}
        for reading, stages in other["restorations"].items():
            for stage, entry in stages.items():
                assert entry["png"] is None
                assert {**entry, "png": None} == {**one["restorations"][reading][stage], "png": None}


@pytest.mark.e2e
def test_summary_keeps_every_auc_and_no_grid_curve_or_picture(files):
    full, summary = _read(files["full"]), _read(files["summary"])
    full_maps = {(image, key): m for image, key, m in _maps(full)}
    for image, key, m in _maps(summary):
        whole = full_maps[(image, key)]
        assert m["grid"] is None and m["morf"] is None and m["lerf"] is None
        assert (m["morf_auc"], m["lerf_auc"], m["abpc"]) == (whole["morf_auc"], whole["lerf_auc"], whole["abpc"])
        assert (m["applicable"], m["degenerate"]) == (whole["applicable"], whole["degenerate"])
    for one, other in zip(full["runs"], summary["runs"]):
        assert set(other["figures"].values()) == {None}
        for reading, stages in other["restorations"].items():
            for stage, entry in stages.items():
                assert entry["png"] is None
                assert {**entry, "png": None} == {**one["restorations"][reading][stage], "png": None}


@pytest.mark.e2e
def test_every_level_has_the_same_gates_summaries_and_checks_and_the_sizes_shrink(files):
    levels = {level: _without(_read(files[level])) for level in DETAILS}
    for results in levels.values():
        results["settings"].pop("results_detail"), results["settings"].pop("audit_json")
    for name in ("gates", "summaries", "randomisation", "models", "images", "settings"):
        assert levels["full"][name] == levels["curves"][name] == levels["summary"][name], name
    assert [c["outcome"] for c in levels["full"]["checks"]] == [c["outcome"] for c in levels["summary"]["checks"]]
    sizes = [files[level].stat().st_size for level in DETAILS]
    assert sizes[0] > 4 * sizes[1] and sizes[1] > sizes[2], sizes  # the pictures are most of a record


@pytest.mark.e2e
def test_each_level_holds_the_full_runs_trimmed_as_benchmarks_bench_results_size_measures_them(files):
    full = _read(files["full"])
    for level in DETAILS:
        runs = _read(files[level])["runs"]
        assert [trim_run(run, level, [("cam", "encoder")]) for run in full["runs"]] == runs, level


@pytest.mark.e2e
def test_a_record_from_the_cache_and_a_computed_one_give_the_same_file(files):
    served, computed = _without(_read(files["full"])), _without(_read(files["computed"]))
    for results in (served, computed):
        for key in ("audit_json", "cache", "no_cache"):
            results["settings"].pop(key)
        results["settings"].pop("origins")  # where each option came from: the two runs were given different ones
    assert served == computed


@pytest.mark.e2e
def test_compact_grids_are_the_float32_maps_to_1e_6_relative_and_keep_their_shape(files):
    # the cache keeps whole records: every grid as float32 exactly (9 significant digits)
    cached = [json.loads(path.read_text())["record"] for path in (files["root"] / "cache" / "runs").glob("*.json")]
    exact_grids = {(run["image_name"], key): m["grid"] for run in cached for key, m in run["maps"].items()
                   if m["grid"] is not None}
    full = _read(files["full"])
    compared = 0
    for image, key, m in _maps(full):
        if m["grid"] is None:
            continue
        exact = np.asarray(exact_grids[(image, key)], dtype=np.float64)
        assert isinstance(m["grid"], list) and all(isinstance(row, list) for row in m["grid"])
        kept = np.asarray(m["grid"], dtype=np.float64)
        assert kept.shape == exact.shape
        assert np.all(np.abs(kept - exact) <= 1e-6 * np.abs(exact)), key
        assert m["grid"] == compact(exact_grids[(image, key)], 7)
        compared += 1
    assert compared >= 6 * 10
    text = files["full"].read_text()
    assert text == json.dumps(json.loads(text), separators=(",", ":"))  # without the optional spaces


@pytest.mark.e2e
def test_the_default_level_file_renders_a_report_and_is_a_baseline(files, pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    default = files["computed"]
    assert _read(default)["settings"]["results_detail"] == "full"
    html = render_report(_read(default), pytester.path / "default.html").read_text()
    curves = render_report(_read(files["curves"]), pytester.path / "curves.html").read_text()
    assert "not kept" not in html and "could not be drawn" not in html
    assert "not kept at this detail (--results-detail curves)" in curves and "could not be drawn" not in curves
    assert html.count('<svg class="chart"') == curves.count('<svg class="chart"')  # every chart of the numbers
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                "--images", str(files["photos"]), *RECIPE, "--baseline", str(default), "--no-cache",
                                "-k", "compare", "--audit-json", "r.json", "--min-map-agreement", "0.9")
    assert result.ret == 0, result.stdout.str()
    (comparison,) = _read(pytester.path / "r.json")["comparisons"]
    assert comparison["n_pairs"] == 6 and comparison["statistic"] == 0.0
    assert comparison["drift"]["statistic"] == pytest.approx(1.0) and comparison["drift"]["verdict"] == "pass"


@pytest.mark.e2e
def test_a_summary_file_renders_a_report_that_says_what_was_not_kept(files, tmp_path):
    html = render_report(_read(files["summary"]), tmp_path / "summary.html").read_text()
    assert "could not be drawn" not in html
    assert "not kept at this detail (--results-detail summary)" in html
    assert "Results detail</th><td>summary" in html
    done = subprocess.run([sys.executable, "-m", "reports", str(files["summary"]), str(tmp_path / "again.html")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_a_summary_file_as_a_baseline_is_a_one_line_usage_error(files, pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                "--images", str(files["photos"]), *RECIPE, "--baseline", str(files["summary"]),
                                "--no-cache")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == [f"ERROR: baseline: {str(files['summary'])!r}, written with --results-detail summary, keeps no "
                      "map grids for cam@encoder, which the comparison needs; audit the baseline again with "
                      "--results-detail full (the default) or curves"], errors


@pytest.mark.parametrize("cli, config, message", [
    ({"results_detail": "everything"}, None, "results-detail: 'everything' is not one of full, curves, summary"),
    ({"results_detail": "Full"}, None, "results-detail: 'Full' is not one of full, curves, summary"),
    ({}, 'results-detail = "grids"', "results-detail: 'grids' is not one of full, curves, summary (in CONFIG)"),
    ({}, "results-detail = 3", "results-detail: 3 is not a valid string (in CONFIG)"),
])
def test_a_bad_results_detail_is_a_one_line_error_naming_the_levels(tmp_path, cli, config, message):
    path = None
    if config is not None:
        path = tmp_path / "audit.toml"
        path.write_text(config + "\n")
    with pytest.raises(ValueError) as err:
        resolve_settings(cli, path)
    assert str(err.value) == message.replace("CONFIG", str(path))
    assert resolve_settings({}).results_detail == "full"


@pytest.mark.e2e
def test_a_bad_results_detail_on_the_command_line_stops_the_run_with_exit_4(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    result = pytester.runpytest(*nested_audit(), "--results-detail", "all")
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert errors == ["ERROR: results-detail: 'all' is not one of full, curves, summary"], errors


# -- the trimming itself ---------------------------------------------------------------------------------------------
def _entry(method: str, stage: str, measured: bool) -> dict:
    return {"method": method, "stage": stage, "applicable": True, "grid": [[0.123456789, -2.0], [None, 3]],
            "degenerate": False, "reason": None, "morf": [0.1234567891234, 0.5] if measured else None,
            "lerf": [0.5, 0.25] if measured else None, "morf_auc": 0.3 if measured else None,
            "lerf_auc": 0.4 if measured else None, "abpc": 0.1 if measured else None}


def test_without_gates_the_report_charts_every_map_but_the_baselines_at_the_last_measured_stage():
    maps = {f"{m}@{s}": _entry(m, s, s != "4") for m in ("cam", "grad", "random", "center") for s in ("2", "10", "4")}
    assert charted_maps(maps, []) == [("cam", "10"), ("grad", "10")]
    assert charted_maps(maps, [("grad", "2"), ("cam", "7")]) == [("grad", "2")]  # gated maps the run has


def test_trimming_keeps_the_gated_grids_at_curves_and_rounds_grids_and_curve_points():
    maps = {f"{m}@{s}": _entry(m, s, s != "4") for m in ("cam", "random") for s in ("2", "4")}
    run = {"maps": maps, "restorations": {"inverse": {"2": {"shape": [3, 8, 8], "png": "data:image/png;base64,AA=="}}},
           "figures": {"input": "data:image/png;base64,AA=="}}
    full = trim_run(run, "full", [("cam", "2")])
    assert full["maps"]["cam@4"]["grid"] == [[0.1234568, -2.0], [None, 3]]  # 7 significant digits
    assert full["maps"]["cam@2"]["morf"] == [0.123456789, 0.5]  # float32 digits
    assert full["figures"] == run["figures"] and full["restorations"] == run["restorations"]
    curves = trim_run(run, "curves", [("cam", "2")])
    assert {key for key, m in curves["maps"].items() if m["grid"] is not None} == {"cam@2"}
    assert {key for key, m in curves["maps"].items() if m["morf"] is not None} == {"cam@2", "random@2"}
    assert curves["figures"] == {"input": None} and curves["restorations"]["inverse"]["2"]["png"] is None
    summary = trim_run(run, "summary", [("cam", "2")])
    assert all(m["grid"] is None and m["morf"] is None for m in summary["maps"].values())
    assert summary["maps"]["cam@2"]["abpc"] == 0.1
    assert run["maps"]["cam@2"]["morf"] == [0.1234567891234, 0.5]  # the record itself is left as it was


def test_compact_keeps_the_shape_the_ints_and_the_nulls():
    assert compact([[1.23456789, None], [7, True]], 3) == [[1.23, None], [7, True]]
    assert compact(0.000123456789, 2) == 0.00012
    assert compact(None, 7) is None


def test_a_comparison_keeps_its_curves_and_grids_unless_summary():
    pairs = [{"image": name, "candidate_morf": [0.1234567891234], "baseline_lerf": [0.5]} for name in "abcd"]
    drops = [{"image": "b", "baseline_grid": [[1.23456789]], "candidate_grid": None}]
    record = {"pairs": pairs, "largest_drops": drops}
    for level in ("full", "curves"):
        kept = trim_comparison(record, level)
        assert [p["candidate_morf"] for p in kept["pairs"]] == [[0.123456789]] * 4
        assert kept["largest_drops"][0]["baseline_grid"] == [[1.234568]]
    summary = trim_comparison(record, "summary")
    assert all(p["candidate_morf"] is None for p in summary["pairs"]) and summary["largest_drops"][0]["baseline_grid"] \
        is None
    with pytest.raises(ValueError, match=r"^results-detail: 'x' is not one of full, curves, summary$"):
        trim_comparison(record, "x")
