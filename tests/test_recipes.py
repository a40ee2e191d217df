"""Recipes beyond the paper through a whole audit: attention maps, named fills, the top-1 score and a labels file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.run.inputs import read_labels
from audit.zoo import CLASS_NAMES, EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]


def _class_of(path: Path) -> int:
    """The embedded sample images are named by class: ankle_boot_0.png is an Ankle boot."""
    words = path.stem.rsplit("_", 1)[0].replace("_", " ").lower()
    return next(i for i, name in enumerate(CLASS_NAMES) if name.lower().replace("/", " ").startswith(words[:5]))


def _labels(folder: Path, images: list[Path]) -> Path:
    path = folder / "labels.csv"
    path.write_text("file,synset,class_index,name\n" + "".join(f"{p.name},x,{_class_of(p)},y\n" for p in images))
    return path


@pytest.mark.e2e
def test_attention_maps_with_the_black_fill_and_the_top1_score_against_labels(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    images = sorted(embedded_images().glob("*.png"))[:12]
    labels = _labels(pytester.path, images[:11])  # the last image has no row: it fails alone
    args = [arg for path in images for arg in ("--images", str(path))]
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                *args, "--methods", "cam,attention,rollout,chefer,attn_gradcam,random",
                                "--layers", "2,encoder", "--steps", "10", "--fill", "black", "--score", "top1",
                                "--labels", str(labels), "--gate", "chefer@encoder", "--threshold", "-1",
                                "--audit-json", "r.json", "--report", "r.html")
    results = json.loads((pytester.path / "r.json").read_text())
    assert results["perturbation"]["fill"] == 0.0 and results["perturbation"]["score"] == "top1"
    assert results["labels"]["path"] == str(labels) and len(results["labels"]["sha256"]) == 64
    runs = {Path(r["image"]).name: r for r in results["runs"]}
    missing = runs[images[-1].name]
    assert "has no row in labels" in missing["error"] and str(labels) in missing["error"]
    for path in images[:11]:
        run = runs[path.name]
        assert run["label"] == _class_of(path)
        for key in ("chefer@encoder", "rollout@2", "attention@2", "attn_gradcam@encoder"):
            curve = run["maps"][key]["morf"]
            assert curve is None or set(curve) <= {0.0, 1.0}, key
        chefer = run["maps"]["chefer@encoder"]
        assert chefer["applicable"] and chefer["morf"][0] == float(run["class"] == run["label"])
    gate = next(g for g in results["gates"] if g["method"] == "chefer")
    assert gate["n_images"] == 11 and gate["verdict"] == "pass"
    outcomes = result.parseoutcomes()
    assert result.ret == 1 and outcomes["failed"] >= 1  # the image without a label fails its own checks
    result.stdout.fnmatch_lines(["*PASS*vit_fmnist chefer@encoder*n=11*"])
    html = (pytester.path / "r.html").read_text()
    assert "1 when the top-1 class is the image" in html and "chefer@encoder" in html
    assert "top-1 is the label (1/0)" in html  # the curves' y axis


@pytest.mark.e2e
def test_the_road_fill_runs_and_is_recorded(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    images = sorted(embedded_images().glob("*.png"))[:4]
    args = [arg for path in images for arg in ("--images", str(path))]
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                *args, "--methods", "cam,random", "--layers", "encoder", "--steps", "5", "--fill",
                                "road", "--audit-json", "r.json", "--report", "r.html")
    assert result.ret == 0, result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    assert results["perturbation"]["fill"] == "road"
    assert "noisy linear imputation from the kept neighbours" in (pytester.path / "r.html").read_text()


@pytest.mark.parametrize("content, words", [
    (None, "is not a file"),
    ("name,label\nx.png,3\n", "has no rows with columns file and class_index (its header: name, label)"),
    ("file,class_index\n", "has no rows with columns file and class_index (its header: file, class_index)"),
    ("file,class_index\nx.png,three\n", "line 2: file 'x.png' with class_index 'three'"),
    ("file,class_index\nx.png,3\nx.png,4\n", "'x.png' is given classes 3 and 4"),
    (b"file,class_index\n\xff\xfe,1\n", "is not a readable UTF-8 CSV"),
])
def test_a_bad_labels_file_is_one_line_naming_it(tmp_path, content, words):
    path = tmp_path / "labels.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as info:
        read_labels(path)
    assert words in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_labels_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Spreadsheets save UTF-8 CSV with a byte-order mark; its first column is still ``file``."""
    path = tmp_path / "labels.csv"
    path.write_bytes("file,class_index\nx.png,3\n".encode("utf-8-sig"))
    assert read_labels(path).class_of("x.png", 10) == 3


@pytest.mark.e2e
def test_a_bad_fill_or_score_is_a_usage_error(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    base = [*nested_audit(), "--images", str(embedded_images())]
    result = pytester.runpytest(*base, "--fill", "purple")
    assert result.ret == 4 and "fill: 'purple' is neither a pixel value in [0, 1] nor a recipe" in result.stderr.str()
    result = pytester.runpytest(*base, "--score", "accuracy")
    assert result.ret == 4 and "score: 'accuracy' is not prob or top1" in result.stderr.str()
    result = pytester.runpytest(*base, "--score", "top1", "--labels", "missing.csv", "--audit-json", "r.json")
    assert result.ret == 4 and "labels: 'missing.csv' is not a file" in result.stderr.str()
    assert "labels: 'missing.csv' is not a file" in json.loads((pytester.path / "r.json").read_text())["error"]


@pytest.mark.e2e
def test_integrated_gradients_is_measured_at_the_input_gated_and_randomised(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)
    images = sorted(embedded_images().glob("*.png"))[:6]
    args = [arg for path in images for arg in ("--images", str(path))]
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                *args, "--methods", "cam,ig,random", "--layers", "encoder", "--steps", "5",
                                "--gate", "ig@input", "--threshold", "-1", "--randomisation-images", "1",
                                "--audit-json", "r.json", "--report", "r.html")
    results = json.loads((pytester.path / "r.json").read_text())
    for run in results["runs"]:
        entry = run["maps"]["ig@input"]
        assert entry["stage"] == "input" and len(entry["grid"]) == 7 and entry["morf_auc"] is not None
        assert "cam@input" not in run["maps"] and "input" in run["measured_stages"]
    gate = results["gates"][0]
    assert (gate["method"], gate["stage"], gate["n_images"]) == ("ig", "input", 6)
    curve = results["randomisation"][0]["curves"]["ig@input"]
    assert curve["stage"] == "input" and curve["dependency_step"] == 2 + 6  # the embedding, randomised last
    assert curve["spearman"][0] == 1.0 and len(curve["spearman"]) == 3 + 6
    assert result.ret in (0, 1), result.stdout.str()
    result.stdout.fnmatch_lines(["*vit_fmnist ig@input: mean ABPC*n=6*"])
    bad = pytester.runpytest(*nested_audit(), "--images", str(images[0]), "--methods", "cam,ig", "--gate", "cam@input")
    assert bad.ret == 4 and "cam@input: 'input' is the one stage of ig and a stage of no other map" in bad.stderr.str()


def test_curves_for_limits_the_measured_maps():
    from audit.measure.curves import PerturbationConfig
    from audit.measure.image_audit import audit_image
    from audit.model.load import load_model

    loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())
    image = sorted(embedded_images().glob("*.png"))[0]
    config = PerturbationConfig(steps=4)
    every = audit_image(loaded, image, methods=["cam", "random", "ig"], stages=["encoder"], config=config)
    some = audit_image(loaded, image, methods=["cam", "random", "ig"], stages=["encoder"], config=config,
                       curves_for={"cam@encoder", "ig@input"})
    assert set(every.curves) == {"cam@encoder", "random@encoder", "ig@input"}
    assert set(some.curves) == {"cam@encoder", "ig@input"} and set(some.maps) == set(every.maps)
    assert some.curves["cam@encoder"].morf_auc == every.curves["cam@encoder"].morf_auc
