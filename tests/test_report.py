"""The HTML report as a reviewer sees it: rendered from real nested runs of the checks on timm's tiny test_vit,
opened offline in headless Chromium, with hostile names, partial results and a size limit.

Chromium is required (Debian: ``apt-get install -y chromium``); without it the browser test fails, it never skips.
Screenshots go to ``$VIT_AUDIT_ARTIFACTS`` (default ``test-artifacts/`` at the project root).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from audit.figures import png_data_uri
from audit.measure.curves import pixel_ranks, removal_counts
from audit.plugin import _checks_dir
from audit.reports import charts, overall_verdict, render_report
from audit.reports.pictures import removal_order, removal_strip
from audit.reports.render import _fit_images, plans_for

from conftest import HtmlTags, make_tiny

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("VIT_AUDIT_ARTIFACTS", ROOT / "test-artifacts"))
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")
FAST = ["--methods", "cam,grad,random", "--layers", "encoder", "--steps", "10", "--batch-size", "32"]
HOSTILE_IMAGE = "<script>alert(1)</script>.png"
HOSTILE_MODEL = 'test&"<>vit'
INSTALL = "apt-get update && apt-get install -y chromium"
# A plugin for the nested run: one check errors (in its setup), so that the run has failed, errored and skipped
# checks at once; and the float settings of tests/conftest.py, on one thread (the machine is shared).
NESTED_PLUGIN = textwrap.dedent("""
    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)


    def pytest_runtest_setup(item):
        if "test_restoration[test_vit-coffee]" in item.nodeid:
            raise RuntimeError("setup broke on purpose: <b>not bold</b>")
""")


# -- a real run ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audit_run(tmp_path_factory) -> dict[str, Any]:
    """A nested pytest run of the checks with ``--report``: a failing gate, an erroring check, a corrupt image.

    One of the photos sits at a path ending in ``<script>alert(1)</script>.png`` (a folder ``<script>alert(1)<``
    holding ``script>.png``), so the run itself carries a hostile file name.
    """
    root = tmp_path_factory.mktemp("report-run")
    model = make_tiny("test_vit")
    checkpoint = root / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    photos = root / "photos"
    (photos / "<script>alert(1)<").mkdir(parents=True)
    for name in PHOTOS:
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((200, 160)).save(photos / f"{name}.png")
    # Mirrored: a byte-identical copy would be counted once (under the other name).
    Image.open(photos / "chelsea.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "<script>alert(1)<"
                                                                                      / "script>.png")
    (photos / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (root / "nested_plugin.py").write_text(NESTED_PLUGIN)
    report, results = root / "out" / "report.html", root / "out" / "results.json"
    args = [str(_checks_dir()), "-p", "audit.plugin", "-p", "nested_plugin", "-p", "no:cacheprovider",
            "--rootdir", ".", "--model", "test_vit", "--checkpoint", str(checkpoint), "--images", str(photos), *FAST,
            "--gate", "cam@encoder", "--threshold", "1", "--min-images", "5", "--audit-json", str(results),
            "--report", str(report)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "pytest", *args, "-q"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    return {"returncode": done.returncode, "stdout": done.stdout + done.stderr, "report": report,
            "results": json.loads(results.read_text()), "root": root}


@pytest.mark.e2e
def test_a_failing_run_still_writes_a_report_that_shows_the_failures_and_the_error(audit_run):
    assert audit_run["returncode"] == 1, audit_run["stdout"][-3000:]
    assert f"report: {audit_run['report']}" in audit_run["stdout"]
    html = audit_run["report"].read_text()
    results = audit_run["results"]
    outcomes = {c["outcome"] for c in results["checks"]}
    assert {"passed", "failed", "error"} <= outcomes
    assert 'class="verdict verdict-fail">FAIL<' in html
    assert html.count('class="check-problem" data-outcome="error"') == 1
    assert "setup broke on purpose: &lt;b&gt;not bold&lt;/b&gt;" in html  # the error, escaped
    assert "<b>not bold</b>" not in html
    assert "could not be audited: image" in html and "corrupt.png" in html  # the unreadable image's own section
    (gate,) = results["gates"]
    assert gate["verdict"] == "fail"
    assert '<tr class="gate verdict-row-fail" data-verdict="fail">' in html
    assert "Images that pulled it down most:" in html
    for worst in gate["worst_images"]:
        assert f"{_escape(worst['image'])}</a> ({worst['abpc']:+.3f})" in html


@pytest.mark.e2e
def test_hostile_names_from_the_run_and_the_results_are_escaped(audit_run, tmp_path):
    html = audit_run["report"].read_text()
    assert any(HOSTILE_IMAGE in run["image"] for run in audit_run["results"]["runs"])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "<script" not in html.lower()  # the report has no script at all, and none came in with a name
    hostile = _hostile(audit_run["results"])
    page = render_report(hostile, tmp_path / "hostile.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "test&amp;&#34;&lt;&gt;vit" in page  # the model name with &"<>
    assert "&lt;img src=x onerror=console.error(1)&gt;" in page  # a class name


# -- in a browser -------------------------------------------------------------------------------------------------
def _chromium() -> str:
    for name in (os.environ.get("VIT_AUDIT_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail(f"headless Chromium is required to test the report as a reviewer sees it; install it with "
                f"`{INSTALL}` (Debian/Ubuntu), or point VIT_AUDIT_CHROMIUM at a Chromium binary", pytrace=False)


def _browse(page: Path, work: Path, *action: str) -> subprocess.CompletedProcess:
    """Open a local page in a fresh, offline headless Chromium: every request goes to a proxy that is not there."""
    work.mkdir(parents=True, exist_ok=True)
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
               "--disable-extensions", "--disable-default-apps", f"--user-data-dir={work / 'profile'}",
               "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0",
               f"--log-net-log={work / 'netlog.json'}", "--hide-scrollbars", *action, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _page_console_lines(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (errors, warnings, logs)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "CONSOLE(" in line]


def _page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for (the browser's own background requests are not the page's)."""
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params", {})
        if event.get("type") == start and (str(params.get("network_isolation_key", "")).startswith("file:")
                                           or params.get("initiator") == "null"):
            urls.append(params.get("url"))
    return urls


@pytest.mark.e2e
def test_report_opens_offline_in_chromium_with_every_picture_decoded_and_no_console_error(audit_run, tmp_path):
    results = _hostile(audit_run["results"])
    report = render_report(results, tmp_path / "report.html")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # 1. The report as it is: the DOM Chromium built, its console, and its network log.
    shown = _browse(report, tmp_path / "dom", "--dump-dom")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert _page_console_lines(shown.stderr) == []
    assert _page_requests(tmp_path / "dom" / "netlog.json") == []
    dom = HtmlTags(shown.stdout)
    assert len(dom.find("tr", "gate")) == len(results["gates"]) == 1
    sections = dom.find("section", "image")
    assert len(sections) == len(results["runs"]) == 7
    assert {s["data-image"] for s in sections} >= {"chelsea", "corrupt", "script>"}
    assert not dom.find("script") and not dom.find("link") and not dom.find("iframe")
    for tag, attrs in dom.tags:  # nothing to fetch: only inline data and links inside the page
        for name in ("src", "href", "xlink:href", "srcset", "poster", "data", "action"):
            if name in attrs:
                assert attrs[name].startswith(("data:image/png;base64,", "#")), (tag, name, attrs[name][:80])
        for target in re.findall(r"url\(([^)]*)\)", attrs.get("style", "") + attrs.get("fill", "")):
            assert target.strip("'\"").startswith("#"), (tag, target)
    images = dom.find("img")
    assert len(images) > 7 * 5
    for attrs in images:
        _assert_shown_as_drawn(attrs)

    # 2. The browser's own view of every picture: a copy of the report with a probe that reads naturalWidth.
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    probed = _browse(probe, tmp_path / "probe", "--virtual-time-budget=10000", "--dump-dom")
    verdict = json.loads(re.search(r'data-probe="([^"]*)"', probed.stdout).group(1).replace("&quot;", '"'))
    assert verdict["total"] == len(images) and verdict["broken"] == []

    # 3. A screenshot, kept for a reviewer to look at.
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    taken = _browse(report, tmp_path / "shot", "--window-size=1400,4200", f"--screenshot={shot}")
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    assert pixels.shape == (4200, 1400, 3) and pixels.std() > 20
    badge = (np.abs(pixels[:120] - [198, 40, 40]).sum(-1) < 30).sum()  # the red FAIL badge at the top
    assert badge > 100
    shutil.copy(report, ARTIFACTS / "report.html")


def _assert_shown_as_drawn(attrs: dict[str, str]) -> Image.Image:
    """The picture decodes; its box has its shape and is never smaller; a larger box is marked to enlarge it sharply."""
    picture = Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)))
    picture.load()
    (width, height), shown = picture.size, (int(attrs["width"]), int(attrs["height"]))
    assert min(width, height) > 0 and width <= shown[0] and height <= shown[1], (attrs["alt"], picture.size, shown)
    assert abs(width * shown[1] - height * shown[0]) <= max(shown), (attrs["alt"], picture.size, shown)  # rounding
    assert ("enlarged" in attrs.get("class", "").split()) == (width < shown[0]), (attrs["alt"], picture.size, shown)
    return picture


PROBE = """<script>
addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).map(i => i.alt);
  document.body.setAttribute("data-probe", JSON.stringify({total: images.length, broken: broken}));
});
</script>"""


# -- results the run did not finish -------------------------------------------------------------------------------
def _hostile(results: dict[str, Any]) -> dict[str, Any]:
    results = copy.deepcopy(results)
    for model in results["models"]:
        model["name"] = HOSTILE_MODEL
    for record in results["runs"] + results["gates"] + results["summaries"]:
        record["model"] = HOSTILE_MODEL
    readable = next(r for r in results["runs"] if not r["error"])
    readable["class_name"] = "<img src=x onerror=console.error(1)>"
    return results


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _nulls(value: Any) -> Any:
    """Every number, list and picture of a record replaced by null."""
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, (list, int, float)) and not isinstance(value, bool) or (
            isinstance(value, str) and value.startswith("data:")):
        return None
    return value


@pytest.mark.e2e
@pytest.mark.parametrize("cut", ["empty", "no-gates-no-checks", "errors-only", "nulls", "no-summaries", "garbage",
                                 "curves-not-lists"])
def test_partial_results_still_render(audit_run, tmp_path, cut):
    results = copy.deepcopy(audit_run["results"])
    if cut == "empty":
        results = {}
    elif cut == "no-gates-no-checks":
        del results["gates"], results["checks"], results["randomisation"]
    elif cut == "errors-only":
        results["runs"] = [r for r in results["runs"] if r["error"]]
        results["summaries"] = []
    elif cut == "nulls":
        results = {k: v if k in ("schema", "created") else _nulls(v) for k, v in results.items()}
    elif cut == "no-summaries":
        results["summaries"], results["randomisation"], results["models"] = None, [{"curves": None}], [None]
    elif cut == "garbage":
        run = next(r for r in results["runs"] if not r["error"])
        run["maps"]["cam@encoder"]["grid"] = [[1.0, None], [2.0]]  # ragged, with a null
        run["restorations"]["inverse"]["0"]["png"] = "data:image/png;base64,bm90IGEgcG5n"  # not a PNG
        run["figures"]["input"] = "data:image/png;base64,???"
        results["gates"][0]["worst_images"] = "nobody"
        results["checks"].append({"nodeid": None})
    elif cut == "curves-not-lists":  # every featured map's curves, and the random baseline's, of the wrong type
        for run in results["runs"]:
            for entry in (run.get("maps") or {}).values():
                entry["morf"], entry["lerf"] = 1, True
    html = render_report(results, tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "verdict verdict-" in html
    if cut == "curves-not-lists":  # each image's section is drawn (without the curves), not replaced by its error
        assert "TypeError" not in html


@pytest.mark.parametrize("gates, checks, expected", [
    pytest.param([], [], "no gate", id="nothing"),
    pytest.param([], ["passed", "skipped"], "no gate", id="no-gate-is-not-a-pass"),
    pytest.param([], ["failed"], "fail", id="no-gate-but-a-failed-check"),
    pytest.param(["pass"], ["passed", "skipped"], "pass", id="all-pass"),
    pytest.param(["pass", "inconclusive"], ["passed", "skipped"], "inconclusive", id="inconclusive-gate"),
    pytest.param(["inconclusive"], ["failed"], "fail", id="failed-check-wins"),
    pytest.param(["pass"], ["error"], "fail", id="errored-check"),
    pytest.param(["fail"], [], "fail", id="failed-gate"),
])
def test_overall_verdict_fails_on_any_failure_then_inconclusive_then_passes(gates, checks, expected):
    results = {"gates": [{"verdict": v} for v in gates], "checks": [{"outcome": o} for o in checks]}
    assert overall_verdict(results)[0] == expected


# -- an interrupted run, files left out ---------------------------------------------------------------------------
def _small_results(**extra: Any) -> dict[str, Any]:
    """A run of 20 images (one unreadable) whose one gate and every check passed: no picture to draw."""
    images = [{"id": f"photo{i}", "path": f"photos/photo{i}.png", "sha256": f"{i:064x}"} for i in range(20)]
    return {"schema": "vit-audit/1", "created": "2026-11-26T04:12:00+0000", "images": images,
            "models": [{"name": "test_vit", "id": "test_vit"}],
            "runs": [{"model": "test_vit", "model_id": "test_vit", "image": "photos/photo0.png", "image_id": "photo0",
                      "error": "image 'photos/photo0.png' cannot be read"}],
            "gates": [{"model": "test_vit", "model_id": "test_vit", "method": "cam", "stage": "encoder",
                       "verdict": "pass", "flat_images": ["photo3"]}],
            "checks": [{"nodeid": "checks/test_faithfulness.py::test_gate", "outcome": "passed"}], **extra}


def _header(html: str) -> str:
    return html[html.index("<header>"):html.index("</header>")]


@pytest.mark.parametrize("signal", ["SIGTERM", "SIGINT"])
def test_an_interrupted_run_fails_and_its_header_says_so(tmp_path, signal):
    results = _small_results(interrupted=signal)
    reason = f"the run was interrupted by {signal} before every check ran"
    assert overall_verdict(results) == ("fail", [reason])  # its gate and checks all passed: still a failure
    results["gates"][0]["verdict"] = "fail"
    assert overall_verdict(results) == ("fail", [reason, "1 gate(s) failed"])
    html = render_report(_small_results(interrupted=signal), tmp_path / "r.html").read_text()
    assert 'class="verdict verdict-fail">FAIL<' in html and "<title>vit-audit report: FAIL" in html
    assert ">PASS<" not in html
    (line,) = re.findall(r'<p class="error run-interrupted">([^<]*)</p>', html)
    assert f"interrupted by {signal} before every check ran" in line


def test_files_left_out_are_listed_escaped_and_at_most_ten_in_the_header(tmp_path):
    left_out = [{"path": f"photos/<script>alert({i})</script>.png", "reason": "identical bytes to another image "
                 "(counted once)", "same_as": 'photos/a&"b".png'} for i in range(11)]
    left_out += [{"path": "photos/photo1.png", "reason": "listed more than once (the same file)"}, "not a record"]
    html = render_report(_small_results(images_left_out=left_out), tmp_path / "r.html").read_text()
    assert "<script" not in html.lower()
    header = _header(html)
    assert "<td>20, of which 1 could not be audited; 13 file(s) left out:" in header
    items = re.findall(r"<li>([^<]*)</li>", header.split('<ul class="small left-out-images">')[1].split("</ul>")[0])
    assert len(items) == 11 and items[-1].startswith("and 3 more")
    assert items[0] == ("photos/&lt;script&gt;alert(0)&lt;/script&gt;.png: identical bytes to another image (counted "
                        "once) (same as photos/a&amp;&#34;b&#34;.png)")
    assert "photo1.png" not in header  # the 12th entry is counted, not named


def test_an_older_results_file_renders_as_before_and_the_new_keys_change_only_the_header(tmp_path):
    old = _small_results()
    for image in old["images"]:
        del image["sha256"]
    del old["gates"][0]["flat_images"]
    new = _small_results(interrupted="SIGTERM", images_left_out=[
        {"path": "photos/copy.png", "reason": "identical bytes to another image (counted once)",
         "same_as": "photos/photo1.png"}])
    pages = {}
    for name, results in (("old", old), ("new", new)):
        html = render_report(results, tmp_path / f"{name}.html").read_text()
        pages[name] = re.sub(r"rendered in [0-9.]+ s", "", html)
    assert 'class="verdict verdict-pass">PASS<' in pages["old"] and "run-interrupted" not in pages["old"]
    assert "<td>20, of which 1 could not be audited</td>" in pages["old"] and "left out:" not in _header(pages["old"])
    assert 'class="verdict verdict-fail">FAIL<' in pages["new"] and "run-interrupted" in pages["new"]
    assert ("; 1 file(s) left out:" in pages["new"]
            and "photos/copy.png: identical bytes to another image (counted once) (same as photos/photo1.png)"
            in pages["new"])
    body = {name: html.split("</header>", 1)[1] for name, html in pages.items()}
    assert body["new"] == body["old"]  # gates, checks and image sections as before


# -- limits -------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_size_limit_shrinks_then_leaves_figures_out_and_says_what(audit_run, tmp_path):
    results = audit_run["results"]
    roomy = render_report(results, tmp_path / "roomy.html")
    assert "Nothing was left out" in roomy.read_text()
    tight = render_report(results, tmp_path / "tight.html", max_mb=0.12, thumbnail=48)
    assert tight.stat().st_size <= 0.12e6 < roomy.stat().st_size
    html = tight.read_text()
    assert "To keep this file under 0.12 MB" in html and "Left out to stay under the size limit:" in html
    assert len(HtmlTags(html).find("section", "image")) == len(results["runs"])  # every image keeps its section
    sizes = {int(a["width"]) for a in HtmlTags(roomy.read_text()).find("img") if a.get("alt", "").endswith("@encoder")}
    assert sizes == {64}  # map cells at the default thumbnail size


@pytest.mark.e2e
def test_pictures_smaller_than_their_box_are_shown_enlarged_not_redrawn(audit_run, tmp_path):
    results = audit_run["results"]
    html = render_report(results, tmp_path / "big.html", thumbnail=200, max_mb=50).read_text()
    assert "img.enlarged { image-rendering: pixelated; }" in html
    drawn = {}
    for attrs in HtmlTags(html).find("img"):
        drawn[attrs["alt"]] = (_assert_shown_as_drawn(attrs).size, (int(attrs["width"]), int(attrs["height"])))
    # The model input is 160 px: its map cells are drawn at 160 px and shown at 200, never redrawn larger.
    cells = {size for alt, size in drawn.items() if alt.endswith("@encoder")}
    assert cells == {((160, 160), (200, 200))}
    strips = {size for alt, size in drawn.items() if " removal steps " in alt}
    assert strips == {((10 * 160 + 9 * 2, 160), (round((10 * 160 + 9 * 2) * 200 / 160), 200))}
    assert "bilinearly upsampled to\n160×160 px" in html and "shown at 200×200 px without smoothing" in html
    assert "shown at 200 px (enlarged without smoothing" in html
    # At the default size nothing is enlarged but the stored restorations, which the run keeps at 64 px at most.
    default = render_report(results, tmp_path / "default.html").read_text()
    enlarged = {a["alt"] for a in HtmlTags(default).find("img") if "enlarged" in a.get("class", "")}
    assert all(" restoration at " in alt for alt in enlarged)


@pytest.mark.e2e
def test_render_report_checks_its_arguments_and_writes_atomically(audit_run, tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    with pytest.raises(ValueError, match="thumbnail: expected an integer number of pixels in 8..512, got 0"):
        render_report({}, target, thumbnail=0)
    with pytest.raises(ValueError, match="max_mb: expected a positive size in MB, got -1"):
        render_report({}, target, max_mb=-1)
    with pytest.raises(TypeError, match="results: expected a dict"):
        render_report([], target)
    target.write_text("the previous report")
    import audit.reports.render

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(audit.reports.render.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        render_report(audit_run["results"], target)
    assert target.read_text() == "the previous report" and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


# -- the removal strips follow the audit's recipe -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "ties", "flat"])
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_removal_order_is_the_audits_ranking(kind, order):
    rng = np.random.default_rng(len(kind))
    grid = {"random": rng.random((7, 9)), "ties": rng.integers(0, 3, (10, 10)).astype(float),
            "flat": np.ones((5, 5))}[kind]
    size = (48, 40)
    ranks = pixel_ranks(torch.from_numpy(grid), order, size, (3, 3), (16, 16)).numpy()
    for count in (0, 1, 77, 960, 48 * 40):
        assert np.array_equal(removal_order(grid, order, size, count), np.argsort(ranks)[:count])


@pytest.mark.parametrize("unit", ["pixel", "patch"])
def test_removal_strip_frames_are_the_perturbed_input_scaled_down(unit):
    rng = np.random.default_rng(1)
    full = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    grid = rng.random((2, 3)).tolist()
    strip = removal_strip(full, grid, "morf", (2, 3), (16, 16), steps=4, fill=127 / 255, size=24, unit=unit)
    assert strip.size == (4 * 24 + 3 * 2, 16)  # only steps 1..4 exist
    ranks = pixel_ranks(torch.tensor(grid, dtype=torch.float64), "morf", (32, 48), (2, 3), (16, 16), unit)
    counts = removal_counts(32 * 48 if unit == "pixel" else 6, 4)
    for k in range(1, 5):
        removed = (ranks < counts[k]).numpy().reshape(32, 48, 1)
        expected = Image.fromarray(np.where(removed, 127, np.asarray(full)).astype(np.uint8))
        frame = strip.crop(((k - 1) * 26, 0, (k - 1) * 26 + 24, 16))
        assert np.array_equal(np.asarray(frame), np.asarray(expected.resize((24, 16), Image.Resampling.BOX))), k


def test_removal_strips_of_the_blur_and_road_fills():
    from audit.measure.fills import blur_sigma, fill_image, gaussian_blur

    rng = np.random.default_rng(2)
    full = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    grid = rng.random((2, 3)).tolist()
    ranks = pixel_ranks(torch.tensor(grid, dtype=torch.float64), "lerf", (32, 48), (2, 3), (16, 16))
    removed = (ranks < removal_counts(32 * 48, 4)[2]).numpy().reshape(32, 48)
    blur = removal_strip(full, grid, "lerf", (2, 3), (16, 16), steps=4, fill="blur", size=48)
    picture = torch.from_numpy(np.array(full)).permute(2, 0, 1).double() / 255
    blurred = (gaussian_blur(picture, blur_sigma(32, 48)).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    expected = np.where(removed[..., None], blurred.permute(1, 2, 0).numpy(), np.asarray(full))
    assert np.array_equal(np.asarray(blur.crop((50, 0, 98, 32))), expected)  # frame 2, at full size
    road = removal_strip(full, grid, "lerf", (2, 3), (16, 16), steps=4, fill="road", size=48)
    source = torch.from_numpy(np.array(full)).permute(2, 0, 1).float() / 255
    imputed = fill_image(source, torch.from_numpy(removed), "road", noise=0.0)
    expected = (imputed.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(road.crop((50, 0, 98, 32))), expected)  # ROAD without the noise


@pytest.mark.parametrize("shape, stored", [((3, 28, 20), (20, 28)), ((3, 320, 200), (100, 160)), ((1, 7, 7), (7, 7))])
def test_the_run_stores_pictures_scaled_down_never_enlarged(shape, stored):
    uri = png_data_uri(torch.rand(shape, generator=torch.Generator().manual_seed(0)), 160)
    picture = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert picture.size == stored


# -- fitting the image sections to the size limit -----------------------------------------------------------------
class _Sections:
    """A stand-in builder and template for ``_fit_images``: image i at plan level l renders ``sizes[i][l]`` bytes."""

    def __init__(self, sizes: list[list[int]]):
        self.sizes, self.thumbnail, self.caption = sizes, 64, ""
        self.runs = [{"image_id": f"image {i}"} for i in range(len(sizes))]
        self.plans = plans_for(64)

    def image_context(self, index, run, plan, full):
        return {"index": index, "level": self.plans.index(plan)}

    def forget(self, index):
        pass

    def render(self, image, caption, number):
        return "x" * self.sizes[image["index"]][image["level"]]


def _fit(sizes: list[list[int]], budget: int) -> tuple[list[int], int]:
    sections = _Sections(sizes)
    html, chosen = _fit_images(sections, sections, budget)
    return [c["level"] for c in chosen], sum(len(h) for h in html)


def test_sections_of_varying_size_keep_one_plan_while_their_mean_fits():
    # Alternating sections of 100 and 110 bytes at the fullest plan: ten of them (1050 bytes) fit 1050 bytes,
    # so every image keeps the fullest plan, although the first alone would leave the second only 105.6 bytes.
    levels = len(plans_for(64))
    small, big = [100 - 5 * level for level in range(levels)], [110 - 5 * level for level in range(levels)]
    sizes = [small, big] * 5
    assert _fit(sizes, 1050) == ([0] * 10, 1050)
    chosen, total = _fit(sizes, 1049)  # one byte short: some images step down, and the total still fits
    assert chosen[0] == 0 and chosen[-1] > 0 and chosen == sorted(chosen) and total <= 1049


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_sections_fit_the_budget_unless_an_image_is_down_to_the_smallest_plan(data):
    levels = len(plans_for(64))
    count = data.draw(st.integers(1, 12))
    sizes = []
    for _ in range(count):  # every image's sections shrink (or stay) as the plans step down
        steps = data.draw(st.lists(st.integers(0, 50), min_size=levels - 1, max_size=levels - 1))
        last = data.draw(st.integers(1, 20))
        sizes.append([last + sum(steps[level:]) for level in range(levels)])
    smallest = sum(s[-1] for s in sizes)
    budget = data.draw(st.integers(smallest, smallest + sum(s[0] for s in sizes)))
    chosen, total = _fit(sizes, budget)
    assert chosen == sorted(chosen)  # plans only ever step down
    if chosen[-1] < levels - 1:  # only the smallest plan is taken regardless of the budget
        assert total <= budget
    if sum(s[0] for s in sizes) <= budget and max(s[0] for s in sizes) * count <= budget:
        assert chosen == [0] * count  # room for every image at the fullest plan, seen from every image


@pytest.mark.e2e
def test_python_m_reports_renders_a_results_file_again(audit_run, tmp_path):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(audit_run["results"]))
    run = subprocess.run([sys.executable, "-m", "reports", str(source), str(tmp_path / "again.html"), "--thumbnail",
                          "48"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith(f"report: {tmp_path / 'again.html'} ("), run.stderr
    html = (tmp_path / "again.html").read_text()
    assert "Thumbnails 48 px asked." in html and len(HtmlTags(html).find("section", "image")) == 7
    (tmp_path / "other.json").write_text('{"not": "results"}')
    for args, message in (([str(tmp_path / "other.json")], "is not a vit-audit results file"),
                          ([str(tmp_path / "missing.json")], "is not a readable results file"),
                          ([str(source), "--thumbnail", "0"], "thumbnail: expected an integer number of pixels")):
        bad = subprocess.run([sys.executable, "-m", "reports", *args[:1], str(tmp_path / "bad.html"), *args[1:]],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr
    assert not (tmp_path / "bad.html").exists()


# -- the comparison with the baseline (--baseline) ----------------------------------------------------------------
PAIRED = [f"img{i}" for i in range(6)]
HOSTILE_ID = "<img src=x onerror=alert(1)>"


def _compared(verdict: str = "fail", drift: str = "not gated", rename: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    """``_small_results`` audited against a baseline: one comparison of cam@encoder over six paired images, each
    with an input picture; its three largest drops have grids of different shapes, and one a null grid."""
    name = (rename or {}).get
    results = _small_results()
    uri = png_data_uri(torch.rand((3, 24, 32), generator=torch.Generator().manual_seed(0)), 160)
    for image in PAIRED:
        results["runs"].append({"model": "test_vit", "model_id": "test_vit", "image": f"photos/{image}.png",
                                "image_id": name(image, image), "class": 3, "class_name": "tabby", "prob": 0.9,
                                "error": None, "figures": {"input": uri}, "maps": {}})
    pairs = []
    for k, image in enumerate(PAIRED):
        base, cand = 0.1 * k, 0.1 * k - 0.06 * k
        morf = [1.0, 0.5 - 0.05 * k, 0.2]
        pairs.append({"image": name(image, image), "sha256": f"{k:064x}", "candidate_class": 5 if k == 4 else 3,
                      "baseline_class": 3, "candidate_class_name": "tiger" if k == 4 else "tabby",
                      "baseline_class_name": "tabby", "candidate_morf_auc": 0.4, "candidate_lerf_auc": 0.4 + cand,
                      "baseline_morf_auc": 0.3, "baseline_lerf_auc": 0.3 + base, "candidate_abpc": cand,
                      "baseline_abpc": base, "candidate_morf": morf, "candidate_lerf": [1.0, 0.9, 0.8],
                      "baseline_morf": [1.0, 0.4, 0.1], "baseline_lerf": [1.0, 0.95, 0.9], "spearman": 0.8,
                      "d": cand - base})
    grids = {"img5": ([[0.0, 1.0], [2.0, 3.0]], [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]),
             "img4": (None, [[1.0, 0.0], [0.0, 1.0]]), "img3": ([[1.0, 2.0], [3.0, 4.0]], [[4.0, 3.0], [2.0, 1.0]])}
    drops = [{"image": name(image, image), "d": -0.06 * k, "candidate_abpc": 0.04 * k, "baseline_abpc": 0.1 * k,
              "baseline_grid": grids[image][0], "candidate_grid": grids[image][1]}
             for k, image in ((5, "img5"), (4, "img4"), (3, "img3"))]
    results["baseline"] = {
        "source": name("source", "/ci/released/results.json"), "sha256": "ab" * 32, "schema": "vit-audit/1",
        "created": "2026-11-01T10:00:00+0000", "model": "test_vit_released", "model_id": "test_vit",
        "checkpoint": "/ci/released/test_vit.safetensors", "checkpoint_sha256": "cd" * 32,
        "recipe": {"steps": 2, "unit": "pixel", "fill": 0.5, "interpolation": "bilinear, align_corners=False",
                   "amp": None, "act": "gelu", "seed": 0},
        "images": 7, "images_without_sha256": [], "images_only_in_baseline": [name("old", "old_photo")],
        "images_only_in_candidate": ["photo0"]}
    results["comparisons"] = [{
        "model": "test_vit", "model_id": "test_vit", "baseline_model": "test_vit_released", "method": "cam",
        "stage": "encoder", "baseline_stage": "encoder", "n_pairs": 6, "margin": 0.05, "statistic": -0.15,
        "ci95": [-0.2, -0.1], "morf_auc_difference": 0.1, "morf_auc_difference_ci95": [0.1, 0.1],
        "lerf_auc_difference": -0.05, "lerf_auc_difference_ci95": [-0.1, 0.0], "candidate_abpc": 0.1,
        "baseline_abpc": 0.25, "verdict": verdict, "reason": f"cam@encoder of test_vit vs the baseline: {verdict}",
        "rule": "d = ABPC(candidate) - ABPC(baseline) per paired image", "largest_drops": drops,
        "drift": {"statistic": 0.8, "ci95": [0.7, 0.9], "n_images": 6, "threshold": None if drift == "not gated"
                  else 0.5, "verdict": drift, "reason": "median Spearman +0.800", "not_ranked": [],
                  "top1_agreement": 5 / 6, "class_changed": [
                      {"image": name("img4", "img4"), "baseline_class": 3, "candidate_class": 5,
                       "baseline_class_name": "tabby", "candidate_class_name": "tiger"}]},
        "unpaired_images": {"photo0": "could not be audited (candidate)"}, "pairs": pairs, "seed": 0,
        "n_boot": 1000}]
    return results


def _section(html: str) -> str:
    return html[html.index('<section id="comparison">'):html.index('<section id="checks">')]


def _lines(svg: str, colour: str) -> list[list[tuple[float, float]]]:
    """The polylines of the SVG drawn in ``colour``, as points."""
    found = []
    for group in re.findall(rf'<g stroke="{colour}"[^>]*>(.*?)</g>', svg, flags=re.S):
        for points in re.findall(r'<polyline points="([^"]*)"/>', group):
            found.append([tuple(float(v) for v in p.split(",")) for p in points.split()])
    return found


def test_a_failed_comparison_fails_the_report_and_its_section_shows_the_table_scatter_and_drops(tmp_path):
    results = _compared("fail")
    assert overall_verdict(results) == ("fail", ["1 comparison(s) with the baseline failed"])
    html = render_report(results, tmp_path / "r.html").read_text()
    assert 'class="verdict verdict-fail">FAIL<' in html and "<title>vit-audit report: FAIL" in html
    assert '<a href="#comparison">Comparison with the baseline</a>' in html
    assert html.index('<section id="gates">') < html.index('<section id="comparison">') < html.index('id="checks"')
    section = _section(html)
    dom = HtmlTags(section)
    # The baseline's facts and one verdict row.
    for fact in ("test_vit_released", "/ci/released/test_vit.safetensors", "sha256 " + "cd" * 32,
                 "/ci/released/results.json", "sha256 " + "ab" * 32, "2 steps, pixel unit, fill 0.500 = 128/255",
                 "only in the baseline: old_photo", "only in this run: photo0", "(cannot be paired): none"):
        assert fact in section, fact
    (row,) = dom.find("tr", "comparison")
    assert row["data-verdict"] == "fail"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section.split('<tr class="comparison ')[1].split("</tr>")[0], re.S)
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells[2:9]] == [
        "6", "-0.150", "[-0.200, -0.100]", "0.050", "+0.100", "+0.250", "fail"]
    assert '<span class="badge fail">fail</span>' in section and '<span class="badge not-gated">not gated' in section
    assert "+0.800 [+0.700, +0.900]" in section and "83%" in section and "img4 (tabby (3) → tiger (5))" in section
    assert "cam@encoder of test_vit vs the baseline: fail" in section and "photo0 (could not be audited" in section
    # One scatter: a point per pair with its tooltip, the diagonal, the margin line and the shaded band below it.
    (scatter,) = re.findall(r'<svg class="chart"[^>]*aria-label="paired ABPC[^"]*">.*?</svg>', section, re.S)
    titles = re.findall(r'<circle cx="[^"]+" cy="[^"]+" r="3"><title>([^<]*)</title></circle>', scatter)
    assert len(titles) == 6 and [t.split(":")[0] for t in titles] == PAIRED
    assert titles[5] == "img5: baseline ABPC +0.500, candidate ABPC +0.200, d -0.300"
    (diagonal,), (margin,) = _lines(scatter, "#7f7f7f"), _lines(scatter, "#b00020")
    offsets = {round(x + y) for x, y in diagonal}  # y = x: a line of slope -1 in SVG coordinates (y grows down)
    assert len(offsets) == 1 and len({round(x + y) for x, y in margin}) == 1
    assert min(x + y for x, y in margin) > offsets.pop() + 5  # below the diagonal
    assert 'stroke-dasharray="5 3">' in scatter
    assert "y = x (no change)" in scatter and "y = x − 0.05 (margin)" in scatter  # the legend
    assert "<title>less faithful by more than the margin</title>" in scatter and "<polygon" in scatter
    assert ">baseline ABPC<" in scatter and ">candidate ABPC<" in scatter  # the axes
    words = " ".join(section.split())
    assert "paired by the sha256 of their bytes" in words and "(seed 0, 1000 resamples," in words
    # The three largest drops: both maps over the input picture (a null grid: not available), and both curves.
    figures = dom.find("figure", "drop")
    assert [f["data-image"] for f in figures] == ["img5", "img4", "img3"]
    pictures = {a["alt"]: _assert_shown_as_drawn(a) for a in dom.find("img") if " map " in a["alt"]}
    assert set(pictures) == {f"{side} map {image}" for side in ("baseline", "candidate") for image in
                             ("img5", "img3")} | {"candidate map img4"}
    assert {p.size for p in pictures.values()} == {(32, 24)}  # drawn over the 32x24 input, shown at 64 px
    assert {(a["width"], a["height"]) for a in dom.find("img") if " map " in a["alt"]} == {("64", "48")}
    assert section.count(">not available</span>") == 1
    assert np.asarray(pictures["baseline map img5"]).std() > 0
    curves = re.findall(r'aria-label="MoRF/LeRF of (img\d): candidate solid, baseline dashed"', section)
    assert curves == ["img5", "img4", "img3"]
    assert "d = -0.300" in section and "(ABPC baseline +0.500, candidate +0.200)" in section
    assert "the candidate's top-1 is tiger (5)" in words


@pytest.mark.parametrize("verdict, drift, expected", [
    pytest.param("pass", "not gated", ("pass", ["1 gate(s) passed", "1 comparison(s) with the baseline passed",
                                                "1 check(s) without failure"]), id="pass"),
    pytest.param("inconclusive", "not gated", ("fail", ["1 comparison(s) with the baseline did not show the "
                                                       "candidate is no worse (inconclusive)"]),
                 id="inconclusive-comparison-fails"),
    pytest.param("pass", "fail", ("fail", ["1 map-agreement gate(s) failed"]), id="failed-drift"),
    pytest.param("pass", "inconclusive", ("inconclusive", ["1 map-agreement gate(s) inconclusive"]),
                 id="inconclusive-drift"),
    pytest.param("fail", "fail", ("fail", ["1 comparison(s) with the baseline failed",
                                           "1 map-agreement gate(s) failed"]), id="both-fail"),
])
def test_overall_verdict_counts_comparisons_with_the_baseline_like_gates(tmp_path, verdict, drift, expected):
    results = _compared(verdict, drift)
    assert overall_verdict(results) == expected
    html = render_report(results, tmp_path / "r.html").read_text()
    assert f'class="verdict verdict-{expected[0]}">{expected[0].upper()}<' in html
    assert f'<span class="badge {drift.replace(" ", "-")}">{drift}</span>' in _section(html)


def test_a_run_that_gated_nothing_reads_no_gate_in_the_report_never_pass(tmp_path):
    results = {"gates": [], "checks": [{"outcome": "passed"}], "policy": {"gate": [], "gated": False}}
    verdict, reasons = overall_verdict(results)
    assert verdict == "no gate" and "the run gated nothing" in reasons[0]
    html = render_report(results, tmp_path / "r.html").read_text()
    assert 'class="verdict verdict-no-gate">NO GATE<' in html and ">PASS<" not in html


def test_image_ids_and_paths_in_the_comparison_section_are_escaped(tmp_path):
    results = _compared(rename={"img5": HOSTILE_ID, "img4": 'a&"b', "source": "/ci/<script>alert(1)</script>.json",
                                "old": "<b>old</b>"})
    html = render_report(results, tmp_path / "r.html").read_text()
    assert "<script" not in html.lower() and "<img src=x" not in html and "<b>old</b>" not in html
    section = _section(html)
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    assert f"<title>{escaped}: baseline ABPC +0.500" in section  # the scatter's tooltip
    assert f'data-image="{escaped}"' in section and f'alt="baseline map {escaped}"' in section
    assert f'>{escaped}</a>: d = -0.300' in section  # linked to its image section
    assert "a&amp;&#34;b (tabby (3) → tiger (5))" in section
    assert "only in the baseline: &lt;b&gt;old&lt;/b&gt;" in section
    assert "/ci/&lt;script&gt;alert(1)&lt;/script&gt;.json" in section


def test_a_run_without_a_baseline_has_no_comparison_section_and_renders_as_before(tmp_path):
    compared = _compared("pass")
    plain = {k: v for k, v in compared.items() if k not in ("baseline", "comparisons")}
    pages = {}
    for name, results in (("plain", plain), ("compared", compared)):
        html = render_report(results, tmp_path / f"{name}.html").read_text()
        pages[name] = re.sub(r"rendered in [0-9.]+ s", "", html)
    assert 'id="comparison"' not in pages["plain"] and "#comparison" not in pages["plain"]
    assert "baseline" not in _header(pages["plain"]) and "Comparison with the baseline" not in pages["plain"]
    assert "Overall verdict: fail if any gate failed or any check failed or errored;" in pages["plain"]
    section = _section(pages["compared"])
    assert section.startswith('<section id="comparison">\n<h2>Comparison with the baseline</h2>')
    # Take the section, its link and its style away: the rest of the page is the page without a baseline.
    rest = pages["compared"].replace(section, "").replace('<a href="#comparison">Comparison with the baseline</a>', "")
    body = {"plain": pages["plain"].split("</header>", 1)[1], "compared": rest.split("</header>", 1)[1]}
    assert body["compared"] == body["plain"]
    assert _header(rest).replace("; 1 comparison(s) with the baseline passed", "").split("<p>", 1)[1].split(
        "</p>", 1)[1] == _header(pages["plain"]).split("<p>", 1)[1].split("</p>", 1)[1]


@pytest.mark.parametrize("cut", ["no-comparisons", "baseline-only", "nulls", "garbage"])
def test_partial_comparison_records_still_render(tmp_path, cut):
    results = _compared("inconclusive")
    comparison = results["comparisons"][0]
    if cut == "no-comparisons":
        results["comparisons"] = None
    elif cut == "baseline-only":
        del results["comparisons"]
        results["baseline"] = "not a record"
    elif cut == "nulls":
        results["comparisons"] = [_nulls(comparison)]
        results["baseline"] = _nulls(results["baseline"])
    elif cut == "garbage":
        comparison["pairs"] = ["not a pair", {"image": "img0", "baseline_abpc": "high", "candidate_abpc": None}]
        comparison["largest_drops"][0]["baseline_grid"] = [[1.0, None], [2.0]]  # ragged
        comparison["largest_drops"][1]["candidate_grid"] = "not a grid"
        comparison["drift"] = ["not a record"]
        comparison["unpaired_images"] = None
        results["comparisons"].append("not a record")
    html = render_report(results, tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<h2>Comparison with the baseline</h2>" in html
    if cut in ("no-comparisons", "baseline-only"):
        assert "No comparison was recorded" in _section(html)
    else:
        assert '<tr class="comparison ' in html


def test_paired_chart_draws_the_points_the_diagonal_and_the_margin_band_in_data_coordinates():
    chart = charts.paired_chart("t", [(0.1, 0.2, "a"), (0.5, 0.1, "b"), (None, 0.3, "left out"),
                                      (-0.2, -0.4, "c")], 0.05)
    band, diagonal, margin, dots = chart.series
    (x0, a), (x1, b) = chart.x_ticks[0], chart.x_ticks[-1]
    (y0, c), (y1, d) = chart.y_ticks[0], chart.y_ticks[-1]

    def data(point: tuple[float, float]) -> tuple[float, float]:
        return (float(a) + (point[0] - x0) * (float(b) - float(a)) / (x1 - x0),
                float(c) + (point[1] - y0) * (float(d) - float(c)) / (y1 - y0))

    def points(piece: str) -> list[tuple[float, float]]:
        return [data(tuple(float(v) for v in p.split(","))) for p in piece.split()]

    assert [t for _, _, t in dots.dots] == ["a", "b", "c"]
    for (x, y, _), expected in zip(dots.dots, [(0.1, 0.2), (0.5, 0.1), (-0.2, -0.4)]):
        assert np.allclose(data((x, y)), expected, atol=0.01)
    assert all(abs(x - y) < 0.01 for x, y in points(diagonal.pieces[0]))
    assert all(abs(x - 0.05 - y) < 0.01 for x, y in points(margin.pieces[0])) and margin.dash
    assert band.fill and all(y <= x - 0.05 + 0.01 for x, y in points(band.pieces[0]))
    corner = data((chart.right, chart.bottom))
    assert any(np.allclose(p, corner, atol=0.01) for p in points(band.pieces[0]))  # the band reaches the corner
    assert chart.right - chart.left == chart.bottom - chart.top  # square: y = x at 45 degrees
    # Pairs that barely differ still show the margin line.
    assert len(charts.paired_chart("t", [(0.3, 0.3, "a")], 0.05).series) == 4


@pytest.mark.e2e
def test_the_comparison_section_opens_offline_in_chromium_with_every_picture_decoded(tmp_path):
    report = render_report(_compared("fail", rename={"img5": HOSTILE_ID}), tmp_path / "report.html")
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    probed = _browse(probe, tmp_path / "probe", "--virtual-time-budget=10000", "--dump-dom")
    assert probed.returncode == 0 and _page_console_lines(probed.stderr) == [], probed.stderr[-2000:]
    assert _page_requests(tmp_path / "probe" / "netlog.json") == []
    verdict = json.loads(re.search(r'data-probe="([^"]*)"', probed.stdout).group(1).replace("&quot;", '"'))
    section = HtmlTags(_section(probed.stdout))
    assert len(section.find("img")) == 5 and verdict["broken"] == []
    assert len(section.find("figure", "drop")) == 3 and len(section.find("circle")) >= 6
