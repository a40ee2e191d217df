"""Right for the right reasons, end to end: ``--regions`` and ``--probe`` in nested audits of the embedded model, the
gates against a baseline (passing against itself, failing against a baseline that the stamp did not move, that
looked at the garments more, and that predicted Shirt where the candidate does not), and bad input."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest

from audit.config.settings import resolve_settings
from audit.errors import AuditError
from audit.measure.probes import ProbeError
from audit.plugin import _checks_dir
from audit.run.regions import RegionsError
from audit.run.session import AuditSession
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images, embedded_masks

from conftest import nested_audit

pytest_plugins = ["pytester"]

PROBE = "square:white:16@center"  # moves the embedded model: 60% of its sample images change class, most to Bag
RECIPE = ["--methods", "grad,random", "--gate", "grad@0", "--layers", "0", "--steps", "5", "--min-images", "5",
          "--regions", str(embedded_masks()), "--probe", PROBE]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Every other sample image of the embedded model: one per class."""
    folder = tmp_path_factory.mktemp("photos")
    for path in sorted(embedded_images().glob("*.png"))[::2]:
        shutil.copyfile(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("reasons")
    out = root / "baseline.json"
    run = subprocess.run([sys.executable, "-m", "pytest", str(_checks_dir()), "-p", "audit.plugin", "-p",
                          "no:cacheprovider", "--rootdir", str(root), "-q", "--model", EMBEDDED_MODEL, "--checkpoint",
                          str(embedded_checkpoint()), "--images", str(photos), *RECIPE,
                          "--randomisation-images", "2", "--randomisation-seeds", "1", "--audit-json", str(out)],
                         cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1), run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)


def _run(pytester, photos, baseline_results, *extra):
    path = pytester.path / "baseline.json"
    path.write_text(json.dumps(baseline_results))
    return pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                              "--images", str(photos), *RECIPE, "--baseline", str(path),
                              "--audit-json", "r.json", "-k", "reasons or compare", *extra)


@pytest.mark.e2e
def test_the_run_measures_regions_and_the_probe_on_every_image(baseline):
    runs = [r for r in baseline["runs"] if not r["error"]]
    assert len(runs) == 10
    for run in runs:
        assert set(run["localisation"]) == {"grad@0"} and run["regions"]["labels"] == ["1"]
        probe = run["probes"][PROBE]
        assert probe["at"] == [6, 6] and probe["area"] == pytest.approx(256 / 784)
    assert [(g["map"], g["n_images"]) for g in baseline["regions"]] == [("grad@0", 10)]
    record = baseline["probes"][0]
    assert record["probe"] == PROBE and record["verdict"] == "not gated"
    attraction = record["attraction"]
    clean = [run["probes"][PROBE]["clean_class"] for run in runs]
    stamped = [run["probes"][PROBE]["stamped_class"] for run in runs]
    k = attraction["argmax"]
    assert attraction["max"] == sum(c != k and s == k for c, s in zip(clean, stamped)) / sum(c != k for c in clean)
    assert attraction["flip_rate"] == sum(c != s for c, s in zip(clean, stamped)) / 10 > 0.3
    assert baseline["policy"]["probe"] == [PROBE] and baseline["policy"]["region_threshold"] is None
    assert baseline["regions"][0]["verdict"] == "not gated"


@pytest.mark.e2e
def test_the_released_model_against_itself_passes_every_new_gate(pytester, photos, baseline):
    result = _run(pytester, photos, baseline)
    out = result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    probe = results["probes"][0]["paired"]
    assert probe["verdict"] == "pass" and probe["attraction"]["statistic"] == 0.0, probe["reason"]
    assert results["regions"][0]["paired"]["verdict"] == "pass"
    assert results["classes"][0]["verdict"] == "pass" and results["classes"][0]["agreement"] == 1.0
    assert results["comparisons"][0]["classes"][0]["top1_agreement"] == 1.0
    assert result.ret == 0, out
    record = results["probes"][0]["attraction"]
    assert f"probe {PROBE}: largest attraction {record['max']:.3f}, flip rate {record['flip_rate']:.0%}; vs " \
           "baseline +0.000 [+0.000, +0.000] vs +0.05" in out
    assert "class agreement with the baseline 100%" in out


@pytest.mark.e2e
def test_a_candidate_that_the_stamp_moves_that_looks_away_and_drops_a_class_fails_each_gate(pytester, photos,
                                                                                            baseline):
    """The same model against a doctored baseline: one the stamp never moved and whose maps never looked at it,
    whose maps put 0.4 more of their relevance on the garments, and which predicted Shirt on 9 of the 10 images."""
    doctored = copy.deepcopy(baseline)
    for run in doctored["runs"]:
        if not run["error"]:
            entry = run["probes"][PROBE]
            entry["stamped_class"], entry["mass"] = run["class"], {"grad@0": 0.0}
            for role in run["localisation"]["grad@0"].values():
                if role is not None:
                    role["mass"] = min(1.0, role["mass"] + 0.4)
    for run in [run for run in doctored["runs"] if not run["error"] and run["class"] != 6][:9]:
        run["class"], run["class_name"] = 6, "Shirt"
    result = _run(pytester, photos, doctored)
    assert result.ret == 1
    out = result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    paired = results["probes"][0]["paired"]
    moved_to = paired["attraction"]["candidate_class_name"]
    assert "FAILED" in out and f"test_probe[vit_fmnist-{PROBE}]" in out
    assert f"the stamp moves the candidate to {moved_to} more than it moves the baseline" in out
    assert paired["attraction"]["ci95"][0] > 0.05 and paired["mass"]["grad@0"]["verdict"] == "fail"
    assert "test_regions_no_regression[vit_fmnist-grad@0]" in out and "object mass of grad@0 minus" in out
    assert "test_no_class_collapse[vit_fmnist]" in out and "Shirt: " in out
    assert "agree with the baseline on fewer than 50% of their images" in out
    assert results["classes"][0]["worst"]["class_name"] == "Shirt" and results["classes"][0]["failed"] == [6]
    row = results["comparisons"][0]["classes"][0]  # every paired image is the baseline's Shirt now
    assert (row["class_name"], row["n"], row["top1_agreement"]) == ("Shirt", 10, pytest.approx(0.1))


@pytest.mark.e2e
def test_a_baseline_made_without_the_probe_is_a_usage_error(pytester, photos, baseline):
    stripped = copy.deepcopy(baseline)
    stripped["settings"]["probe"] = []
    result = _run(pytester, photos, stripped)
    assert result.ret == 4
    assert "was made without --probe square:white:16@center" in result.stderr.str() + result.stdout.str()


def _settings(**cli):
    return resolve_settings({"model": [EMBEDDED_MODEL], "checkpoint": [str(embedded_checkpoint())],
                             "images": [str(embedded_images())], **cli})


@pytest.mark.parametrize("cli, error, words", [
    ({"probe": ["square:white:40"]}, ProbeError, "larger than the model's input"),
    ({"probe": ["missing.png@top-left"]}, ProbeError, "does not exist"),
    ({"regions": "missing.json"}, RegionsError, "missing.json"),
])
def test_bad_regions_and_probes_stop_the_run_with_one_line(tmp_path, cli, error, words):
    with pytest.raises(error, match=words) as err:
        AuditSession(_settings(**cli), tmp_path)
    assert "\n" not in str(err.value) and isinstance(err.value, (ValueError, AuditError))


def test_an_image_without_regions_is_counted_not_applicable(tmp_path, photos):
    masks = tmp_path / "masks"
    masks.mkdir()
    for path in sorted(photos.glob("*.png"))[:3]:
        (masks / path.name).write_bytes((embedded_masks() / path.name).read_bytes())
    settings = _settings(regions=str(masks), methods=["grad", "random"], gate=["grad@0"], layers=["0"], steps=2,
                         no_cache=True, region_threshold=0.0)
    settings.images = [str(photos)]
    session = AuditSession(settings, tmp_path / "work")
    runs = session.runs_of(session.model_ids[0])
    assert sum("localisation" in run for run in runs) == 3
    assert sum(run["regions"].get("problem") == "no regions for this image" for run in runs) == 7
    record = session.region_gate(session.model_ids[0], "grad", "0")
    assert record["n_images"] == 3 and record["not_applicable"] == 7 and record["verdict"] == "inconclusive"


@pytest.mark.parametrize("table, words", [
    ({"region-roles": {"watermark": "background"}}, "region-roles.watermark: 'background' is not object or artefact"),
    ({"region-roles": "artefact"}, "region-roles: expected a table"),
    ({"attraction-margin": 2}, "attraction-margin: expected a share of images in [0, 1], got 2"),
])
def test_bad_policy_values_are_one_line(tmp_path, table, words):
    lines = ["[tool.vit-audit]"]
    for key, value in table.items():
        lines.append(f"{key} = {json.dumps(value)}" if not isinstance(value, dict) else
                     f"{key} = {{{', '.join(f'{k} = {json.dumps(v)}' for k, v in value.items())}}}")
    config = tmp_path / "policy.toml"
    config.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        resolve_settings({}, config)


def test_probe_options_keep_their_commas():
    assert _settings(probe=["square:white:4@0.25,0.5"]).probe == ["square:white:4@0.25,0.5"]
