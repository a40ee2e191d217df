"""The report's "right for the right reasons" section, rendered from a synthetic results file: the regions drawn on
the pictures and the regions gates, clean and stamped strips and the probe table, the class tables, SpRAy's clusters,
the overall verdict they change, the size plan that drops their pictures, and a run without them that renders as
before. No model runs: the records are made by hand, one set by the audit's own functions."""

from __future__ import annotations

import base64
import copy
import io
import re
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from audit.figures import png_data_uri
from audit.measure.probes import attraction
from audit.reports import overall_verdict, render_report
from audit.reports.pictures import heat_map, region_overlay
from audit.reports.sizing import describe_reasons_cuts, reasons_plans
from audit.verdicts.classes import class_agreement
from audit.verdicts.reasons import compare_probe, compare_regions, probe_limits, record_localisation, region_gate

from conftest import HtmlTags

MODEL = "vit_t"
KEY = "grad@0"
PROBE = "square:white:8@top-left"
CLASSES = {0: "tabby", 1: "shirt", 2: "tench"}
GRID = 4  # a 4x4 token grid over a 32x32 input (patch 8)


def _picture(rng: np.random.Generator, stamp: bool = False) -> tuple[torch.Tensor, str]:
    pixels = torch.from_numpy(rng.uniform(0.2, 0.8, (3, 32, 32))).float()
    if stamp:
        pixels = pixels.clone()
        pixels[:, :8, :8] = 1.0
    return pixels, png_data_uri(pixels, 160)


def _map(rng: np.random.Generator, where: str) -> list[list[float]]:
    """A map whose relevance sits in the top-left corner or in the centre, with a little noise."""
    grid = rng.uniform(0.0, 0.05, (GRID, GRID))
    if where == "corner":
        grid[0, 0] += 1.0
    else:
        grid[1:3, 1:3] += 1.0
    return grid.round(6).tolist()


def _regions() -> dict[str, Any]:
    """The object in the centre 2x2 tokens, an artefact (a watermark) in the top-left token."""
    obj = np.zeros((GRID, GRID))
    obj[1:3, 1:3] = 1.0
    obj[1, 3] = 0.25  # an edge token a quarter inside
    artefact = np.zeros((GRID, GRID))
    artefact[0, 0] = 1.0
    return {"object": obj.tolist(), "artefact": artefact.tolist(), "void": None, "labels": ["cat", "watermark"],
            "notes": ["1 box reaches out of the crop"]}


def _runs() -> list[dict[str, Any]]:
    """26 runs: 12 tabbies whose maps look at the watermark corner, 12 at the centre (two SpRAy clusters), and two
    shirts; each with regions, its localisation and a stamped copy; the shirts' stamp flips them to tabby."""
    rng = np.random.default_rng(0)
    runs = []
    for i in range(26):
        label = 0 if i < 24 else 1
        where = "corner" if i < 12 else "centre"
        _, uri = _picture(rng)
        _, stamped_uri = _picture(rng, stamp=True)
        grid = _map(rng, where)
        regions = _regions()
        maps = {KEY: {"method": "grad", "stage": "0", "applicable": True, "grid": grid, "degenerate": False,
                      "reason": None, "morf": None, "lerf": None, "morf_auc": 0.3, "lerf_auc": 0.5, "abpc": 0.2}}
        flipped = label == 1
        stamped_grid = _map(rng, "corner")
        on_stamp = float(np.asarray(stamped_grid)[0, 0] / np.asarray(stamped_grid).sum())
        runs.append({
            "model": MODEL, "model_id": MODEL, "image": f"photos/img{i}.png", "image_id": f"img{i}",
            "class": label, "class_name": CLASSES[label], "prob": 0.9, "removed_prob": 0.1, "error": None,
            "maps": maps, "figures": {"input": uri}, "input_shape": [1, 3, 32, 32],
            "regions": regions, "localisation": record_localisation(maps, regions, [KEY]),
            "probes": {PROBE: {"probe": PROBE, "at": [0, 0], "area": 1 / 16, "clean_class": label,
                               "stamped_class": 0 if flipped else label,
                               "stamped_class_name": CLASSES[0 if flipped else label], "stamped_prob": 0.8,
                               "clean_class_prob_stamped": 0.15 if flipped else 0.8, "flipped": flipped,
                               "mass": {KEY: on_stamp}, "grids": {KEY: stamped_grid}, "figure": stamped_uri}}})
    runs.append({"model": MODEL, "model_id": MODEL, "image": "photos/blank.png", "image_id": "blank", "class": 2,
                 "class_name": CLASSES[2], "prob": 0.5, "error": None, "maps": {}, "figures": {"input": None},
                 "regions": {"problem": "no regions for this image"}})
    return runs


def _plain() -> dict[str, Any]:
    """A run audited with one gate (grad@0): no regions, no probe, no baseline."""
    runs = _runs()
    for run in runs:
        for name in ("regions", "localisation", "probes"):
            run.pop(name, None)
    return {"schema": "vit-audit/1", "created": "2026-11-26T04:12:00+0000",
            "images": [{"id": r["image_id"], "path": r["image"]} for r in runs],
            "models": [{"name": MODEL, "id": MODEL, "grid": [GRID, GRID], "patch_size": [8, 8],
                        "input_size": [32, 32]}],
            "policy": {"gate": [KEY], "strict": False},
            "runs": runs,
            "gates": [{"model": MODEL, "model_id": MODEL, "method": "grad", "stage": "0", "verdict": "pass",
                       "statistic": 0.2, "ci95": [0.1, 0.3], "threshold": 0.0, "n_images": 26}],
            "checks": [{"nodeid": "checks/test_faithfulness.py::test_gate", "outcome": "passed"}]}


REGION_RECORD = {
    "kind": "regions", "model_id": MODEL, "method": "grad", "stage": "0", "map": KEY, "n_images": 26,
    "statistic": 0.162, "ci95": [0.051, 0.274], "verdict": "pass", "not_applicable": 1,
    "means": {"mass": 0.412, "rank_accuracy": 0.537, "auroc": 0.731, "pointing": 0.615, "area": 0.25},
    "reason": "relevance mass of grad@0 on the objects 0.412 against chance 0.250: the map puts more relevance on "
              "the objects than chance",
    "paired": {"verdict": "fail", "reason": "object mass of grad@0 minus the baseline's: drops by more than the margin",
               "margin": 0.05,
               "object": {"n_pairs": 26, "statistic": -0.121, "ci95": [-0.2, -0.07], "verdict": "fail",
                          "reason": "drops"},
               "artefact": {"n_pairs": 0, "verdict": "not applicable", "reason": "no artefact"}}}


def _probe_record(paired: str = "fail") -> dict[str, Any]:
    a = [0.0, 0.0, 0.0]
    a[0] = 1.0  # both shirts moved to tabby
    return {"kind": "probe-limits", "probe": PROBE, "model_id": MODEL, "model": MODEL, "n_images": 26,
            "verdict": "not gated", "reason": f"stamp {PROBE}: no absolute limit", "limits": [],
            "attraction": {"A": a, "eligible": [2, 24, 26], "max": 1.0, "argmax": 0, "flip_rate": 2 / 26, "n": 26},
            "mean_mass": {KEY: 0.613},
            "paired": {"verdict": paired, "reason": f"stamp {PROBE}: the stamp moves the candidate to tabby",
                       "attraction": {"candidate": a, "baseline": [0.0, 0.125, 0.0], "candidate_max": 1.0,
                                      "baseline_max": 0.125, "candidate_class": 0, "candidate_class_name": "tabby",
                                      "statistic": 0.875, "ci95": [0.5, 1.0], "margin": 0.05, "verdict": paired,
                                      "flip_rate": 2 / 26, "baseline_flip_rate": 3 / 26},
                       "mass": {KEY: {"candidate": 0.613, "baseline": 0.2, "statistic": 0.413, "ci95": [0.35, 0.47],
                                      "margin": 0.05, "verdict": "fail", "reason": "looks at the stamp"}}}}


def _class_record(verdict: str = "fail") -> dict[str, Any]:
    rows = [{"class": 0, "class_name": "tabby", "n": 20, "agree": 19, "agreement": 0.95, "ci95": [0.75, 0.999],
             "p": 1.0, "p_holm": 1.0, "verdict": "pass"},
            {"class": 1, "class_name": "shirt", "n": 10, "agree": 1, "agreement": 0.1, "ci95": [0.0025, 0.445],
             "p": 0.0107, "p_holm": 0.0214, "verdict": verdict},
            {"class": 2, "class_name": "tench", "n": 6, "agree": 5, "agreement": 5 / 6, "ci95": [0.36, 0.996],
             "p": 0.98, "p_holm": 1.0, "verdict": "pass"}]
    return {"model_id": MODEL, "model": MODEL, "floor": 0.5, "n_pairs": 36, "agreement": 25 / 36, "classes": rows,
            "worst": rows[1], "verdict": verdict,
            "reason": "top-1 agreement with the baseline 69.4% over 36 paired images in 3 classes; lowest shirt"}


def _comparison() -> dict[str, Any]:
    return {"model": MODEL, "model_id": MODEL, "baseline_model": "vit_t_released", "method": "grad", "stage": "0",
            "baseline_stage": "0", "n_pairs": 36, "margin": 0.05, "statistic": 0.01, "ci95": [-0.02, 0.04],
            "verdict": "pass", "reason": "no worse", "pairs": [], "largest_drops": [],
            "drift": {"verdict": "not gated"},
            "classes": [{"class": 0, "class_name": "tabby", "n": 20, "top1_agreement": 0.95, "d": 0.02,
                         "spearman": 0.81, "drift": 0.04},
                        {"class": 1, "class_name": "shirt", "n": 10, "top1_agreement": 0.1, "d": -0.21,
                         "spearman": 0.12, "drift": 0.57}]}


def _reasoned(probe: str = "fail", classes: str = "fail", region: str = "pass") -> dict[str, Any]:
    """``_plain`` audited with --regions, --probe and a baseline."""
    results = _plain()
    results["runs"] = _runs()
    record = copy.deepcopy(REGION_RECORD)
    record["verdict"] = region
    if region != "pass":
        record.pop("paired")
    results["regions"] = [record]
    results["probes"] = [_probe_record(probe)]
    results["classes"] = [_class_record(classes)]
    results["baseline"] = {"model": "vit_t_released", "model_id": MODEL, "images": 36}
    results["comparisons"] = [_comparison()]
    return results


def _section(html: str) -> str:
    return html[html.index('<section id="reasons">'):html.index('<section id="checks">')]


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _decoded(attrs: dict[str, str]) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1])))
    picture.load()
    return picture.convert("RGB")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("reasons") / "r.html"
    return render_report(_reasoned(), path).read_text()


def test_the_section_follows_the_comparison_and_shows_the_regions_gate_and_the_images_with_their_regions(page):
    assert page.index('id="comparison"') < page.index('<section id="reasons">') < page.index('id="checks"')
    assert '<a href="#reasons">Right for the right reasons</a>' in page
    section = _section(page)
    dom = HtmlTags(section)
    (row,) = dom.find("tr", "regions-gate")
    assert row["data-verdict"] == "pass"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section.split('<tr class="regions-gate ')[1].split("</tr>")[0], re.S)
    assert [_text(c) for c in cells[:10]] == ["vit_t", "grad@0", "26 n/a on 1", "0.412", "0.250",
                                              "+0.162 [+0.051, +0.274]", "0.537", "0.731", "0.615", "pass"]
    assert "objects -0.121 [-0.200, -0.070] over 26 pairs" in _text(cells[10]) and "fail" in _text(cells[10])
    assert "drops by more than the margin" in section
    # Six images, the lowest object mass first, each with its regions drawn and its map, and the numbers.
    figures = dom.find("figure", "region")
    runs = {r["image_id"]: r for r in _runs()}
    masses = sorted((r["localisation"][KEY]["object"]["mass"], r["image_id"]) for r in runs.values()
                    if r.get("localisation"))
    assert [f["data-image"] for f in figures] == [image for _, image in masses[:6]]
    first = runs[figures[0]["data-image"]]["localisation"][KEY]["object"]
    assert f"<td>{first['mass']:.3f}</td><td>{first['area']:.3f}</td>" in section
    pictures = {a["alt"]: _decoded(a) for a in dom.find("img")}
    drawn = pictures[f"regions {figures[0]['data-image']}"]
    assert drawn.size == (32, 32)
    # The object's tokens are tinted green (Okabe-Ito bluish green), the watermark's orange, the rest untouched.
    centre, corner = np.asarray(drawn)[12:20, 12:20].astype(float), np.asarray(drawn)[2:6, 2:6].astype(float)
    assert centre[..., 1].mean() > centre[..., 0].mean() + 30 and corner[..., 0].mean() > corner[..., 2].mean() + 30
    assert f"{KEY} {figures[0]['data-image']}" in pictures
    assert "Regions: cat, watermark." in section and "1 box reaches out of the crop" in section
    assert "1 image(s) without usable regions: no regions for this image (1)." in _text(section)


def test_clean_and_stamped_strips_show_both_pictures_their_maps_and_the_probe_table(page):
    section = _section(page)
    dom = HtmlTags(section)
    (row,) = dom.find("tr", "probe")
    assert row["data-probe"] == PROBE and row["data-verdict"] == "not gated"
    line = _text(section.split('<tr class="probe ')[1].split("</tr>")[0])
    assert "1.000 (tabby (0))" in line and "8%" in line and f"{KEY} 0.613" in line
    assert "largest attraction 1.000 against 0.125: +0.875 [+0.500, +1.000] (to tabby (0))" in line
    assert f"mass of {KEY} on the stamp 0.613 against 0.200: +0.413 [+0.350, +0.470]" in line
    # The attraction per class, candidate against baseline, largest first.
    bars = [_text(r) for r in re.findall(r'<tr class="attraction-row">(.*?)</tr>', section, re.S)]
    assert bars == ["tabby (0) 1.000 0.000", "shirt (1) 0.000 0.125"]
    # The flipped shirts first, then the highest mass on the stamp; each strip has four pictures.
    runs = {r["image_id"]: r for r in _runs()}
    order = sorted((not r["probes"][PROBE]["flipped"], -r["probes"][PROBE]["mass"][KEY], r["image_id"])
                   for r in runs.values() if r.get("probes"))
    strips = dom.find("figure", "probe-strip")
    assert [s["data-image"] for s in strips] == [image for _, _, image in order[:4]]
    assert {s["data-image"] for s in strips[:2]} == {"img24", "img25"}
    pictures = {a["alt"]: _decoded(a) for a in dom.find("img")}
    for alt in ("clean img24", "clean map img24", "stamped img24", "stamped map img24"):
        assert pictures[alt].size == (32, 32), alt
    stamped = np.asarray(pictures["stamped img24"])
    assert stamped[:8, :8].min() == 255 and stamped[8:, 8:].max() < 255  # the white square, top-left
    words = _text(section)
    assert "Clean: shirt (1), p = 0.900. Stamped: tabby (0), p = 0.800; shirt (1) p = 0.150." in words


def test_the_class_tables_name_and_highlight_the_worst_class(page):
    section = _section(page)
    table = section.split('<table class="list class-agreement"')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="class-row([^"]*)"[^>]*>(.*?)</tr>', table, re.S)
    assert [_text(r).split(" (")[0] for _, r in rows] == ["shirt", "tench", "tabby"]  # worst first
    assert rows[0][0] == " worst" and not rows[1][0] and not rows[2][0]
    assert _text(rows[0][1]) == "shirt (1) (worst) 10 1/10 10% [0%, 44%] 0.011 0.021 fail"
    assert "worst: shirt (1)" in section
    per_class = section.split('<table class="list comparison-classes"')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="comparison-class([^"]*)">(.*?)</tr>', per_class, re.S)
    assert [(flag, _text(r)) for flag, r in rows] == [(" worst", "shirt (1) (worst) 10 10% -0.210 +0.120 0.570"),
                                                      ("", "tabby (0) 20 95% +0.020 +0.810 0.040")]


def test_spray_shows_each_class_its_clusters_their_where_and_exemplars(page):
    section = _section(page)
    table = section.split('<table class="list spray"')[1].split("</table>")[0]
    rows = re.findall(r'<tr class="spray-cluster" data-clusters="(\d+)">(.*?)</tr>', table, re.S)
    assert [k for k, _ in rows] == ["2", "2", "1"]  # tabby: two clusters; shirt: one cluster, one line
    tabby = [_text(r) for _, r in rows[:2]]
    assert tabby[0].startswith("tabby (0) 24 maps, 2 clusters 1 12 ")
    wheres = sorted(re.findall(r'<td class="where">([^<]*)</td>', table)[:2])
    assert wheres[0].startswith("centre (") and wheres[1].startswith("top-left corner (")
    dom = HtmlTags(table)
    exemplars = [a for a in dom.find("img") if a["alt"].startswith("exemplar ")]
    assert len(exemplars) == 4 + 4 + 2  # up to 4 per cluster: 12, 12 and the 2 shirts
    assert len([a for a in dom.find("img") if a["alt"].startswith("mean map ")]) == 3
    assert "shirt (1)" in _text(rows[2][1]) and "2 maps" in _text(rows[2][1])
    assert "tench" not in table  # its one run has no map
    assert "1 run(s) without a usable map left out" in section


@pytest.mark.parametrize("probe, classes, region, expected", [
    pytest.param("pass", "pass", "pass", ("fail", ["1 comparison(s) of regions with the baseline failed"]),
                 id="paired-regions-fail"),
    pytest.param("fail", "pass", "inconclusive", ("fail", ["1 comparison(s) of a probe with the baseline failed"]),
                 id="probe-fails"),
    pytest.param("inconclusive", "pass", "inconclusive",
                 ("fail", ["1 comparison(s) of a probe with the baseline did not show the candidate is no worse "
                           "(inconclusive)"]), id="inconclusive-probe-fails"),
    pytest.param("pass", "fail", "inconclusive",
                 ("fail", ["1 model(s) with a class whose agreement with the baseline collapsed"]), id="class-fails"),
    pytest.param("pass", "pass", "inconclusive", ("inconclusive", ["1 regions gate(s) inconclusive"]),
                 id="absolute-inconclusive"),
])
def test_failed_probes_classes_and_paired_regions_fail_the_report(tmp_path, probe, classes, region, expected):
    results = _reasoned(probe, classes, region)
    assert overall_verdict(results) == expected
    html = render_report(results, tmp_path / "r.html").read_text()
    assert f'class="verdict verdict-{expected[0]}">{expected[0].upper()}<' in html
    if region == "inconclusive":
        results["policy"]["strict"] = True
        assert overall_verdict(results)[0] == "fail"


def test_all_passing_reasons_pass_and_say_so():
    results = _reasoned("pass", "pass")
    results["regions"][0]["paired"]["verdict"] = "pass"
    verdict, reasons = overall_verdict(results)
    assert verdict == "pass"
    assert reasons == ["1 gate(s) passed", "1 comparison(s) with the baseline passed", "1 regions gate(s) passed",
                       "1 comparison(s) of regions with the baseline passed",
                       "1 comparison(s) of a probe with the baseline passed", "1 class-agreement gate(s) passed",
                       "1 check(s) without failure"]


def test_a_run_without_regions_probes_or_classes_has_no_section_and_renders_as_before(tmp_path):
    plain = _plain()
    html = render_report(plain, tmp_path / "plain.html").read_text()
    assert 'id="reasons"' not in html and "#reasons" not in html and "Right for the right reasons" not in html
    assert "tr.worst" not in html  # nor its styles
    full = render_report(_reasoned("pass", "pass"), tmp_path / "full.html").read_text()
    strip = lambda text: re.sub(r"rendered in [0-9.]+ s", "", text)  # noqa: E731
    # The image sections and everything after them are the same page with or without the section.
    assert strip(full.split('<section id="checks">')[1]) == strip(html.split('<section id="checks">')[1])
    assert full.split("</header>")[0].count("<p>") == html.split("</header>")[0].count("<p>")


def test_the_section_takes_its_share_of_the_size_limit_and_drops_its_pictures_to_keep_it(tmp_path):
    results = _reasoned()
    roomy = render_report(results, tmp_path / "roomy.html").read_text()
    assert "Nothing was left out" in roomy and 'class="note">Left out to stay under' not in _section(roomy)
    tight = render_report(results, tmp_path / "tight.html", max_mb=0.35)
    html = tight.read_text()
    section = _section(html)
    assert len(section) < len(_section(roomy)) / 2
    (cuts,) = re.findall(r'<li><a href="#reasons">Right for the right reasons</a>: ([^<]*)</li>', html)
    assert cuts in section
    assert len(HtmlTags(section).find("tr", "spray-cluster")) == 3  # the tables stay
    assert 'class="regions-gate verdict-row-pass"' in section and "worst: shirt (1)" in section
    assert tight.stat().st_size <= 0.35e6
    # The plans step down to tables only, and say so.
    plans = reasons_plans(64)
    assert plans[0].pictures == 64 and plans[-1].pictures == 0
    assert describe_reasons_cuts(plans[0], plans[0]) == []
    assert describe_reasons_cuts(plans[-1], plans[0])[0].startswith("pictures left out")
    smallest = render_report(results, tmp_path / "smallest.html", max_mb=0.05).read_text()
    assert "<img" not in _section(smallest) and "pictures left out" in _section(smallest)


def test_the_records_the_audit_makes_render(tmp_path):
    """Regions gates, probes and class agreement made by the audit's own functions from the runs."""
    results = _plain()
    runs = _runs()
    results["runs"] = runs
    baseline = {f"{i:064x}": copy.deepcopy(r) for i, r in enumerate(runs)}
    digests = {r["image_id"]: f"{i:064x}" for i, r in enumerate(runs)}
    record = region_gate(runs, KEY, min_images=5, n_boot=200)
    record.update(model_id=MODEL, method="grad", stage="0")
    record["paired"] = compare_regions(runs, digests, baseline, KEY, KEY, margin=0.05, min_images=5, n_boot=200)
    probe = probe_limits(runs, PROBE, [KEY], 3, max_attraction=None, max_stamp_mass=0.5, min_images=5, n_boot=200)
    entries = [r["probes"][PROBE] for r in runs if r.get("probes")]
    probe.update(model_id=MODEL, model=MODEL,
                 attraction=attraction([e["clean_class"] for e in entries], [e["stamped_class"] for e in entries], 3),
                 mean_mass={KEY: float(np.mean([e["mass"][KEY] for e in entries]))})
    probe["paired"] = compare_probe(runs, digests, baseline, PROBE, [(KEY, KEY)], 3, attraction_margin=0.05,
                                    stamp_margin=0.05, min_images=5, n_boot=200)
    classes = class_agreement([(r["class"], r["class_name"], r["class"]) for r in runs if r.get("maps")], 0.5)
    classes.update(model_id=MODEL, model=MODEL)
    results.update(regions=[record], probes=[probe], classes=[classes])
    html = render_report(results, tmp_path / "r.html").read_text()
    section = _section(html)
    dom = HtmlTags(section)
    assert len(dom.find("tr", "regions-gate")) == 1 and len(dom.find("tr", "probe")) == 1
    assert len(dom.find("figure", "region")) == 6 and len(dom.find("figure", "probe-strip")) == 4
    assert len(dom.find("tr", "class-row")) == 2 and "verdict-row-fail" in section  # the stamp's mass over 0.5
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


@pytest.mark.parametrize("cut", ["nulls", "garbage"])
def test_partial_records_still_render(tmp_path, cut):
    results = _reasoned()
    if cut == "nulls":
        results["regions"] = [{k: None for k in REGION_RECORD}]
        results["probes"] = [{k: None for k in _probe_record()}]
        results["classes"] = [{k: None for k in _class_record()}]
        for run in results["runs"]:
            run["localisation"] = None
            run["probes"] = {PROBE: {k: None for k in run.get("probes", {}).get(PROBE, {"figure": 1})}}
    else:
        results["regions"].append("not a record")
        results["probes"][0]["attraction"]["A"] = ["high", None]
        results["classes"][0]["classes"] = ["not a row", {"class": 4}]
        results["runs"][0]["regions"]["object"] = [[1.0, None], [2.0]]  # ragged
        results["runs"][1]["probes"][PROBE]["grids"][KEY] = "not a grid"
        results["runs"][2]["maps"][KEY]["grid"] = [[1.0, 2.0]]  # another grid than the others
    html = render_report(results, tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert '<section id="reasons">' in html


def test_names_in_the_section_are_escaped(tmp_path):
    hostile = "<img src=x onerror=alert(1)>"
    results = _reasoned()
    for run in results["runs"][:12]:  # the first images with regions, exemplars of the first cluster
        run["image_id"] = hostile + run["image_id"]
        run["class_name"] = hostile
    results["classes"][0]["classes"][1]["class_name"] = hostile
    html = render_report(results, tmp_path / "r.html").read_text()
    assert "<img src=x" not in html and "<script" not in html.lower()
    section = _section(html)
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    assert f'data-image="{escaped}img' in section and f"<td>{escaped} (1) <span" in section


def test_region_overlay_and_heat_map_draw_token_by_token():
    base = Image.new("RGB", (16, 8), (0, 0, 0))
    drawn = np.asarray(region_overlay(base, {"object": [[0.0, 1.0], [0.0, 0.0]], "artefact": None}))
    assert drawn[:4, :8].max() == 0 and drawn[5:, :].max() == 0  # outside the object: untouched
    assert tuple(drawn[0, 8]) == (0, 158, 115) and tuple(drawn[2, 12]) == (0, 79, 58)  # outline, then half tint
    assert region_overlay(base, {"object": None}) is None
    heat = heat_map([[0.0, 1.0], [0.5, 0.25]], 8)
    assert heat.size == (8, 8) and np.asarray(heat)[0, 0].tolist() != np.asarray(heat)[0, 7].tolist()
    assert heat_map("not a grid", 8) is None
