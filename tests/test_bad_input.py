"""Bad input never changes a verdict silently: image identity, models that cannot be measured, corrupt files.

Nested audits (pytester, in-process) of the embedded Fashion-MNIST model on its own sample images, with a small
recipe; each test names the class of bad input it covers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from audit import load_model
from audit.run.inputs import collect_images, image_ids
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

# the randomisation check on 2 images and 1 seed: its default (10 x 3) is tests/test_sanity.py's to test
FAST = ["--methods", "cam,random", "--layers", "encoder", "--steps", "5", "--gate", "cam@encoder",
        "--randomisation-images", "2", "--randomisation-seeds", "1"]


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    """Nested runs take their policy from the test's own folder, not from this project's pyproject.toml."""
    monkeypatch.chdir(pytester.path)


@pytest.fixture(scope="module")
def samples() -> list[Path]:
    """Eight of the embedded sample images (28x28 grey PNGs), all of different classes' pictures."""
    return sorted(embedded_images().glob("*.png"))[:16:2]


def _run(pytester, *args, model: str | None = None, checkpoint: str | Path | None = None):
    base = nested_audit()
    models = ["--model", model or EMBEDDED_MODEL, "--checkpoint", str(checkpoint or embedded_checkpoint())]
    return pytester.runpytest(*base, *models, *FAST, *args)


def _folder(root: Path, files: dict[str, Path]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / name)
    return root


def _checkpoint(path: Path, change) -> Path:
    state = {k: v.clone() for k, v in load_file(str(embedded_checkpoint())).items()}
    change(state)
    save_file(state, str(path))
    return path


# -- 1. image identity ------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_an_image_listed_twice_is_audited_and_counted_once(pytester, samples):
    folder = _folder(pytester.path / "photos", {p.name: p for p in samples[:4]})
    result = _run(pytester, "--images", str(folder), "--images", str(folder), "--images", str(folder / samples[0].name),
                  "--threshold", "-1", "--audit-json", "r.json")
    assert result.ret == 0, result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    assert len(results["runs"]) == 4 and results["gates"][0]["n_images"] == 4  # 4 files, not 9
    assert results["gates"][0]["verdict"] == "inconclusive"  # 4 < min-images: doubling it must not make it a pass
    left_out = results["images_left_out"]
    assert len(left_out) == 5 and all(e["reason"] == "listed more than once (the same file)" for e in left_out)
    assert "5 image file(s) left out" in result.stdout.str()


@pytest.mark.e2e
def test_images_whose_names_clash_get_their_own_ids_and_records(pytester, samples):
    folder = _folder(pytester.path / "photos", {"x.png": samples[0], "a b.png": samples[2], "a_b.png": samples[3],
                                                "sub/x.png": samples[4], "y.png": samples[5]})
    Image.open(samples[1]).save(folder / "x.jpg", quality=100)
    result = _run(pytester, "--images", str(folder), "--audit-json", "r.json")
    assert result.ret == 0, result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    ids = {Path(image["path"]).relative_to(folder).as_posix(): image["id"] for image in results["images"]}
    assert ids == {"a b.png": "a b", "a_b.png": "a_b", "x.jpg": "x.jpg", "x.png": "photos/x.png",
                   "sub/x.png": "sub/x.png", "y.png": "y"}
    runs = {run["image_id"]: run for run in results["runs"]}
    assert len(runs) == 6 and results["gates"][0]["n_images"] == 6
    for image in results["images"]:  # every record is its own image's
        assert runs[image["id"]]["image"] == image["path"]
    assert runs["a b"]["prob"] != runs["a_b"]["prob"] and runs["x.jpg"]["prob"] != runs["photos/x.png"]["prob"]


def test_image_ids_are_unique_and_readable():
    paths = [Path("d/x.png"), Path("d/x.jpg"), Path("d/y.png"), Path("e/x.png"), Path("d/x.png.png")]
    assert image_ids(paths) == ["d/x.png", "x.jpg", "y", "e/x.png", "x.png.png"]
    assert image_ids([Path("a/b/c.png"), Path("z/b/c.png")]) == ["a/b/c.png", "z/b/c.png"]


@pytest.mark.e2e
def test_identical_bytes_under_other_names_count_once_unless_kept(pytester, samples, tmp_path):
    folder = _folder(pytester.path / "photos", {"one.png": samples[0], "copy-of-one.png": samples[0],
                                                "two.png": samples[1]})
    images = collect_images([folder])
    assert [e.id for e in images.entries] == ["copy-of-one", "two"]
    assert images.left_out == [{"path": str(folder / "one.png"), "same_as": str(folder / "copy-of-one.png"),
                                "reason": "identical bytes to another image (counted once)"}]
    assert len({e.sha256 for e in images.entries}) == 2 and all(len(e.sha256) == 64 for e in images.entries)
    kept = collect_images([folder], keep_duplicates=True)
    assert [e.id for e in kept.entries] == ["copy-of-one", "one", "two"] and kept.left_out == []
    result = _run(pytester, "--images", str(folder), "--audit-json", "r.json")
    results = json.loads((pytester.path / "r.json").read_text())
    assert len(results["runs"]) == 2 and results["images_left_out"][0]["same_as"].endswith("copy-of-one.png")
    assert "identical bytes to another image" in result.stdout.str()
    result = _run(pytester, "--images", str(folder), "--keep-duplicate-images", "--audit-json", "k.json")
    assert len(json.loads((pytester.path / "k.json").read_text())["runs"]) == 3


# -- 3. models whose numbers mean nothing ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_single_class_head_is_inconclusive_and_says_why(pytester, samples, tmp_path):
    def one_class(state):
        state["head.weight"], state["head.bias"] = state["head.weight"][:1], state["head.bias"][:1]

    checkpoint = _checkpoint(tmp_path / "one-class.safetensors", one_class)
    folder = _folder(pytester.path / "photos", {p.name: p for p in samples[:6]})
    # Threshold -1: a constant ABPC of 0 has the CI [0, 0], above the threshold; it must not pass.
    result = _run(pytester, "--images", str(folder), "--threshold", "-1", "-rs", checkpoint=checkpoint)
    assert result.ret == 0
    out = result.stdout.str()
    assert "INCONCLUSIVE" in out and "PASS " not in out
    assert "the probability of the explained class is constant under every removal on all 6 images" in out
    assert "a 1-class head" in out


def test_a_head_whose_size_does_not_match_the_label_names_borrows_no_names(tmp_path):
    def imagenet_sized(state):
        state["head.weight"] = torch.randn(1000, state["head.weight"].shape[1]) * 0.01
        state["head.bias"] = torch.zeros(1000)

    loaded = load_model(EMBEDDED_MODEL, _checkpoint(tmp_path / "wide.safetensors", imagenet_sized))
    assert loaded.num_classes == 1000 and loaded.class_names is None and loaded.class_name(1) == "1"
    assert load_model(EMBEDDED_MODEL, embedded_checkpoint()).class_name(1) == "Trouser"


# -- 5. non-finite weights and activations --------------------------------------------------------------------------
@pytest.mark.e2e
def test_non_finite_weights_fail_that_model_alone(pytester, samples, tmp_path):
    def nan(state):
        state["blocks.2.mlp.fc1.weight"][0, 0] = float("nan")

    broken = _checkpoint(tmp_path / "nan.safetensors", nan)
    folder = _folder(pytester.path / "photos", {p.name: p for p in samples[:5]})
    result = _run(pytester, "--images", str(folder), "--model", EMBEDDED_MODEL, "--checkpoint", str(broken),
                  "--threshold", "-1", "--audit-json", "r.json", "--report", "r.html")
    assert result.ret == 1
    assert result.parseoutcomes()["failed"] == 1 and "error" not in result.parseoutcomes()
    result.stdout.fnmatch_lines(["*has non-finite weights (NaN or infinity) in 1 tensor(s): blocks.2.mlp.fc1.weight*",
                                 "*PASS*vit_fmnist cam@encoder*n=5*"])
    results = json.loads((pytester.path / "r.json").read_text())
    assert "non-finite weights" in results["models"][1]["error"] and len(results["runs"]) == 5
    assert (pytester.path / "r.html").stat().st_size > 0


@pytest.mark.e2e
def test_non_finite_activations_fail_each_image_cleanly(pytester, samples, tmp_path):
    def overflow(state):
        state["blocks.2.mlp.fc1.weight"] *= 1e37

    checkpoint = _checkpoint(tmp_path / "overflow.safetensors", overflow)
    folder = _folder(pytester.path / "photos", {p.name: p for p in samples[:5]})
    result = _run(pytester, "--images", str(folder), "--audit-json", "r.json", "--report", "r.html",
                  checkpoint=checkpoint)
    outcomes = result.parseoutcomes()
    assert result.ret == 1 and "error" not in outcomes and "errors" not in outcomes, result.stdout.str()
    out = result.stdout.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out
    assert out.count("the model's activations are not finite (NaN or infinity in its tokens from stage 3 on)") >= 5
    results = json.loads((pytester.path / "r.json").read_text())
    assert all(run["error"] for run in results["runs"]) and results["gates"][0]["verdict"] == "fail"
    assert (pytester.path / "r.html").stat().st_size > 0


# -- 6. any corrupt file fails alone (fuzz) -------------------------------------------------------------------------
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp"}


EDITS = st.lists(st.tuples(st.one_of(st.integers(0, 63), st.integers(0, 10_000)),  # headers more often
                           st.one_of(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]), st.integers(0, 255))),
                 min_size=1, max_size=6)


@pytest.mark.e2e
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(FORMATS)), edits=EDITS, keep=st.one_of(st.none(), st.integers(0, 100)))
# A BMP whose header claims 2^31-1 x 2^31-1 pixels: Pillow refuses it as a decompression bomb (not an OSError).
@example(fmt="BMP", edits=[(18, 0xFF), (19, 0xFF), (20, 0xFF), (21, 0x7F), (22, 0xFF), (23, 0xFF), (24, 0xFF),
                           (25, 0x7F)], keep=None)
def test_corrupt_bytes_fail_that_image_alone_and_both_outputs_are_written(pytester, samples, fmt, edits, keep):
    folder = pytester.path / f"photos-{fmt}"
    shutil.rmtree(folder, ignore_errors=True)
    _folder(folder, {p.name: p for p in samples[:5]})
    picture = np.asarray(Image.open(samples[5]).convert("RGB").resize((40, 32)))
    target = folder / f"zz-corrupt{FORMATS[fmt]}"
    Image.fromarray(picture).save(target, format=fmt)
    raw = bytearray(target.read_bytes())
    for position, value in edits:
        raw[position % len(raw)] = value
    if keep is not None:
        raw = raw[: keep * len(raw) // 100]  # truncated to keep percent
    target.write_bytes(bytes(raw))
    for name in ("r.json", "r.html"):
        (pytester.path / name).unlink(missing_ok=True)
    result = _run(pytester, "--images", str(folder), "--threshold", "-1", "--audit-json", "r.json",
                  "--report", "r.html")
    out = result.stdout.str()
    assert result.ret in (0, 1) and "INTERNALERROR" not in out and "Traceback" not in out, out
    results = json.loads((pytester.path / "r.json").read_text())
    runs = {run["image_id"]: run for run in results["runs"]}
    assert len(runs) == 6
    assert all(runs[p.stem]["error"] is None for p in samples[:5])  # every other image is audited
    error = runs["zz-corrupt"]["error"]
    if error is not None:  # the corrupt one fails alone, in one line naming it
        assert "\n" not in error and "zz-corrupt" in error
        failed = [c for c in results["checks"] if c["outcome"] in ("failed", "error")]
        assert failed and all("zz-corrupt" in c["nodeid"] for c in failed)
        assert all(c["outcome"] == "failed" for c in failed)
    assert results["gates"][0]["n_images"] == 5 + (error is None)
    assert "<html" in (pytester.path / "r.html").read_text()[:200].lower()
