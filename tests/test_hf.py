"""Hugging Face ViT/DeiT folders: equal to transformers' own forward and image processor, and bad folders refused.

``transformers`` is a test-only dependency here (the ``test`` extra): vit-audit reads the folders without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

from audit.config.settings import resolve_settings
from audit.errors import CheckpointError, ModelLoadError
from audit.measure.curves import PerturbationConfig
from audit.measure.image_audit import audit_image
from audit.model.hf import (
    HFArchitecture,
    hf_config_for,
    is_hf_folder,
    load_hf_model,
    processor_data_config,
    to_hf_state_dict,
)
from audit.model.images import normalize, prepare_image
from audit.run.inputs import load_named, model_id_for
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import IMAGENET_DIR, nested_audit, require_shared

pytest_plugins = ["pytester"]

SMALL = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=100, image_size=32,
             patch_size=8, num_labels=5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
# name -> (transformers class, config changes); every one a differently shaped model
CONFIGS = {
    "vit": ("ViTForImageClassification", {}),
    "vit-pooler-mask-token": ("ViTForImageClassification", {}),
    "vit-1ch-nonsquare-no-qkv-bias": ("ViTForImageClassification",
                                      dict(num_channels=1, image_size=[48, 32], patch_size=16, qkv_bias=False,
                                           hidden_act="gelu_new", layer_norm_eps=1e-6)),
    "vit-patch32-relu": ("ViTForImageClassification", dict(image_size=64, patch_size=32, hidden_act="relu")),
    "vit-patch8-40px-silu": ("ViTForImageClassification", dict(image_size=40, patch_size=8, hidden_act="silu",
                                                               intermediate_size=77)),
    "deit": ("DeiTForImageClassification", dict(image_size=48, patch_size=16)),
    "deit-distilled": ("DeiTForImageClassificationWithTeacher", dict(image_size=48, patch_size=16)),
}


def _hf_model(name: str, seed: int = 0) -> torch.nn.Module:
    cls_name, changes = CONFIGS[name]
    cls = getattr(transformers, cls_name)
    config_cls = transformers.DeiTConfig if cls_name.startswith("DeiT") else transformers.ViTConfig
    torch.manual_seed(seed)
    model = cls(config_cls(**{**SMALL, **changes})).eval()
    with torch.no_grad():  # transformers zero-initialises some tensors (tokens, biases): make every weight count
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def _save(model: torch.nn.Module, folder: Path) -> Path:
    """``save_pretrained`` of the model and of a ViTImageProcessor at its input size."""
    model.save_pretrained(folder)
    size = model.config.image_size
    height, width = size if isinstance(size, list) else (size, size)
    channels = model.config.num_channels
    transformers.ViTImageProcessor(size={"height": height, "width": width}, image_mean=[0.5] * channels,
                                   image_std=[0.5] * channels).save_pretrained(folder)
    return folder


def _block_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """timm's logits and its hidden states as transformers counts them: the embeddings, then every block's output."""
    states: list[torch.Tensor] = []
    hooks = [model.pos_drop.register_forward_hook(lambda m, i, o: states.append(o))]
    hooks += [block.register_forward_hook(lambda m, i, o: states.append(o)) for block in model.blocks]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, states


@pytest.mark.peer
@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_saved_transformers_model_loads_with_the_same_logits_and_hidden_states(name, tmp_path):
    hf = _hf_model(name)
    folder = _save(hf, tmp_path / name)
    if name == "vit-pooler-mask-token":  # a checkpoint of ViTModel's pooler and mask token beside the classifier
        state = load_file(str(folder / "model.safetensors"))
        state["vit.pooler.dense.weight"] = torch.randn(48, 48)
        state["vit.pooler.dense.bias"] = torch.randn(48)
        state["vit.embeddings.mask_token"] = torch.randn(1, 1, 48)
        save_file(state, str(folder / "model.safetensors"))
    loaded = load_hf_model(folder)
    channels, (height, width) = hf.config.num_channels, loaded.input_size
    x = torch.randn(3, channels, height, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(pixel_values=x, output_hidden_states=True)
    logits, states = _block_outputs(loaded.model, x)
    assert len(states) == len(theirs.hidden_states) == hf.config.num_hidden_layers + 1
    for index, (mine, other) in enumerate(zip(states, theirs.hidden_states)):
        torch.testing.assert_close(mine, other, atol=1e-4, rtol=0, msg=lambda m: f"hidden state {index}: {m}")
    torch.testing.assert_close(logits, theirs.logits, atol=1e-4, rtol=0)
    assert logits.abs().max() > 0.1  # the comparison is not between near-zero outputs
    assert loaded.num_classes == 5 and loaded.class_names == [f"LABEL_{i}" for i in range(5)]
    assert loaded.architecture == f"{CONFIGS[name][0]} ({hf.config.model_type})"
    notes = " ".join(loaded.notes)
    assert ("pooler" in notes and "mask_token" in notes) == (name == "vit-pooler-mask-token")


@pytest.mark.peer
def test_sharded_safetensors_and_a_pickled_bin_load_the_same_weights(tmp_path):
    hf = _hf_model("vit")
    sharded = tmp_path / "sharded"
    hf.save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((sharded / "config.json").read_text())
    torch.save({k: v.contiguous() for k, v in hf.state_dict().items()}, pickled / "pytorch_model.bin")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        for folder in (sharded, pickled):
            torch.testing.assert_close(load_hf_model(folder).model(x), expected, atol=1e-4, rtol=0)
    assert load_hf_model(sharded).checkpoint_sha256 != load_hf_model(pickled).checkpoint_sha256


@pytest.mark.peer
def test_a_pickled_bin_that_would_run_code_is_refused(tmp_path):
    hf = _hf_model("vit")
    hf.config.save_pretrained(tmp_path)
    torch.save({"state": dict(hf.state_dict()), "extra": Path("x")}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused: it holds objects other than tensors"):
        load_hf_model(tmp_path)


# -- preprocessing -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Two real photos from scikit-image, as files (a square 512 px one and a 451x300 one)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("astronaut", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


PROCESSORS = {
    "vit-default": dict(kind="ViTImageProcessor", size={"height": 224, "width": 224}),
    "vit-bicubic-imagenet-stats": dict(kind="ViTImageProcessor", size={"height": 200, "width": 160}, resample=3,
                                       image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),
    "vit-nearest": dict(kind="ViTImageProcessor", size={"height": 96, "width": 96}, resample=0),
    "vit-lanczos": dict(kind="ViTImageProcessor", size={"height": 96, "width": 128}, resample=1),
    "vit-pil-bilinear": dict(kind="ViTImageProcessorPil", size={"height": 224, "width": 224}),
    "vit-pil-box": dict(kind="ViTImageProcessorPil", size={"height": 64, "width": 64}, resample=4),
    "vit-no-normalize-other-rescale": dict(kind="ViTImageProcessor", size={"height": 64, "width": 64},
                                           do_normalize=False, rescale_factor=1 / 127.5),
    "deit-default-crop": dict(kind="DeiTImageProcessor"),
    "deit-pil-odd-crop": dict(kind="DeiTImageProcessorPil", size={"height": 255, "width": 251},
                              crop_size={"height": 224, "width": 224}),
}


@pytest.mark.peer
@pytest.mark.parametrize("key", list(PROCESSORS))
def test_preprocessing_equals_the_transformers_image_processor(key, photos, tmp_path):
    settings = dict(PROCESSORS[key])
    kind = settings.pop("kind")
    processor = getattr(transformers, kind)(**settings)
    processor.save_pretrained(tmp_path)
    if kind.endswith("Pil"):  # transformers writes the class's plain name: a user asks for PIL's resize like this
        _edit_json(tmp_path / "preprocessor_config.json", image_processor_type=kind)
    size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
    arch = HFArchitecture("vit", "ViTForImageClassification", (size["height"], size["width"]), (8, 8), 3, 48, 1, 3,
                          100, True, 1e-12, "gelu")
    data_config, notes = processor_data_config(tmp_path, arch)
    assert notes == []
    for photo in photos:
        with Image.open(photo) as picture:
            theirs = processor(picture.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        mine = normalize(prepare_image(photo, data_config).pixel, data_config["mean"], data_config["std"])
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)


@pytest.mark.peer
def test_without_a_preprocessor_config_the_defaults_used_are_recorded(tmp_path):
    folder = tmp_path / "bare"
    _hf_model("vit").save_pretrained(folder)
    loaded = load_hf_model(folder)
    assert loaded.notes == ["no preprocessor_config.json: ViTImageProcessor's defaults at the model's size were used "
                            "(resize to 32x32, bilinear, no crop, rescale 1/255, mean 0.5, std 0.5)"]
    assert loaded.data_config["resize"] == (32, 32) and loaded.mean == (0.5, 0.5, 0.5)


# -- the real ViT-Ti as a Hugging Face folder --------------------------------------------------------------------------

def _as_hf_folder(loaded, folder: Path) -> Path:
    """Write a timm ViT as a Hugging Face folder, by the inverse of the mapping vit-audit loads with."""
    config, arch = hf_config_for(loaded.model, loaded.class_names)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in to_hf_state_dict(loaded.model.state_dict(), arch).items()},
              str(folder / "model.safetensors"))
    _, height, width = loaded.data_config["input_size"]
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "ViTImageProcessor", "size": {"height": height, "width": width}, "resample": 2,
        "image_mean": list(loaded.mean), "image_std": list(loaded.std)}))
    return folder


@pytest.mark.shared
def test_the_real_vit_tiny_as_a_hf_folder_gives_the_timm_originals_maps_and_aucs(vit_tiny, tmp_path):
    hf = load_hf_model(_as_hf_folder(vit_tiny, tmp_path / "vit-tiny-hf"))
    assert hf.class_names == vit_tiny.class_names and hf.input_size == vit_tiny.input_size
    config = PerturbationConfig(steps=10)
    cats = sorted(require_shared(IMAGENET_DIR).glob("*.JPEG"))[:2]
    for photo in cats:
        prepared = prepare_image(photo, vit_tiny.data_config)
        timm_run = audit_image(vit_tiny, prepared, stages=["encoder"], config=config)
        hf_run = audit_image(hf, prepared, stages=["encoder"], config=config)
        assert hf_run.target == timm_run.target and set(hf_run.maps) == set(timm_run.maps)
        for key, result in timm_run.maps.items():
            torch.testing.assert_close(hf_run.maps[key].values, result.values, atol=1e-5, rtol=1e-5)
        assert set(hf_run.curves) == set(timm_run.curves) and len(timm_run.curves) >= 4
        for key, curve in timm_run.curves.items():
            assert abs(hf_run.curves[key].morf_auc - curve.morf_auc) < 1e-6, key
            assert abs(hf_run.curves[key].lerf_auc - curve.lerf_auc) < 1e-6, key


# -- bad folders -------------------------------------------------------------------------------------------------------

def _good(tmp_path: Path, name: str = "good") -> Path:
    return _save(_hf_model("vit"), tmp_path / name)


def _edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def _broken(tmp_path: Path, case: str) -> Path:
    folder = _good(tmp_path, case)
    config, processor = folder / "config.json", folder / "preprocessor_config.json"
    if case == "no config.json":
        config.unlink()
    elif case == "config not JSON":
        config.write_text('{"model_type": "vit",')
    elif case == "unsupported type":
        _edit_json(config, model_type="swin", architectures=["SwinForImageClassification"])
    elif case == "no model_type":
        value = json.loads(config.read_text())
        del value["model_type"]
        config.write_text(json.dumps(value))
    elif case == "not a classifier":
        _edit_json(config, architectures=["ViTForMaskedImageModeling"])
    elif case == "missing weights":
        (folder / "model.safetensors").unlink()
    elif case == "weights of another model":
        _edit_json(config, hidden_size=64, num_attention_heads=4)
    elif case == "a missing key":
        state = load_file(str(folder / "model.safetensors"))
        del state["vit.encoder.layer.1.output.dense.weight"]
        save_file(state, str(folder / "model.safetensors"))
    elif case == "std of zero":
        _edit_json(processor, image_std=[0.5, 0.0, 0.5])
    elif case == "crop larger than size":
        _edit_json(processor, do_center_crop=True, crop_size={"height": 40, "width": 40})
    elif case == "shortest_edge":
        _edit_json(processor, size={"shortest_edge": 32})
    elif case == "unknown resample":
        _edit_json(processor, resample=9)
    elif case == "another processor":
        _edit_json(processor, image_processor_type="CLIPImageProcessor")
    elif case == "output size not the model's":
        _edit_json(processor, size={"height": 48, "width": 48})
    elif case == "processor not JSON":
        processor.write_text("size: 224")
    return folder


BAD = {  # case -> (error, the file named, words of what to do)
    "no config.json": (CheckpointError, "", "has no config.json; pass the folder save_pretrained wrote"),
    "config not JSON": (CheckpointError, "config.json", "is not valid JSON"),
    "unsupported type": (ModelLoadError, "config.json", "model_type 'swin'; vit-audit audits Hugging Face vit"),
    "no model_type": (ModelLoadError, "config.json", "has no model_type; vit-audit audits Hugging Face vit"),
    "not a classifier": (ModelLoadError, "config.json", "'ViTForMaskedImageModeling' is not an image classifier"),
    "missing weights": (CheckpointError, "", "has no weights: expected model.safetensors or pytorch_model.bin"),
    "weights of another model": (CheckpointError, "", "does not fit its config.json (ViTForImageClassification): "),
    "a missing key": (CheckpointError, "", "1 missing (vit.encoder.layer.1.output.dense.weight); pass a folder"),
    "std of zero": (CheckpointError, "preprocessor_config.json", "image_std [0.5, 0.0, 0.5] is not 3 finite positive"),
    "crop larger than size": (CheckpointError, "preprocessor_config.json", "crop_size [40, 40] is larger than size"),
    "shortest_edge": (CheckpointError, "preprocessor_config.json", "size ['shortest_edge'] is not supported"),
    "unknown resample": (CheckpointError, "preprocessor_config.json", "resample 9 is not one of PIL's filters"),
    "another processor": (CheckpointError, "preprocessor_config.json", "'CLIPImageProcessor' is not one vit-audit"),
    "output size not the model's": (CheckpointError, "preprocessor_config.json", "makes 48x48 inputs, but config.json"),
    "processor not JSON": (CheckpointError, "preprocessor_config.json", "is not valid JSON"),
}


@pytest.mark.peer
@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_folder_is_one_line_naming_the_file_and_what_to_do(case, tmp_path):
    folder = _broken(tmp_path, case)
    error, file, words = BAD[case]
    with pytest.raises(error) as info:
        load_named("hf", str(folder))
    message = str(info.value)
    assert "\n" not in message and words in message
    assert str(folder / file).rstrip("/") in message
    if case == "weights of another model":
        assert "shape mismatch (vit.embeddings.cls_token: checkpoint (1, 1, 48) vs model (1, 1, 64)" in message


@pytest.mark.peer
def test_a_folder_is_detected_and_a_timm_name_with_it_is_refused(tmp_path):
    folder = str(_good(tmp_path))
    assert is_hf_folder(folder) and not is_hf_folder(tmp_path / "missing")
    settings = resolve_settings({"checkpoint": [folder], "images": ["x"]})
    assert settings.model == ["hf"] and model_id_for("hf", folder) == "good"
    with pytest.raises(ModelLoadError, match="is a Hugging Face model folder, whose config.json names its"):
        load_named("vit_tiny_patch16_224", folder)
    with pytest.raises(ValueError, match="1 checkpoints for 0 models"):  # a timm file without its --model
        resolve_settings({"checkpoint": [str(embedded_checkpoint())], "images": ["x"]})


# -- nested audits -----------------------------------------------------------------------------------------------------

FAST = ["--methods", "cam,grad,random", "--layers", "3,encoder", "--steps", "5", "--gate", "cam@encoder",
        "--threshold", "-1", "--audit-json", "r.json", "--report", "r.html"]


def _images(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--images", str(path))]


@pytest.fixture
def embedded_as_hf(tmp_path):
    """The embedded Fashion-MNIST ViT written as a Hugging Face folder, with a processor doing what timm's config
    does (its 28 px images are not resized)."""
    from audit.model.load import load_model

    return _as_hf_folder(load_model(EMBEDDED_MODEL, embedded_checkpoint()), tmp_path / "fmnist-hf")


@pytest.mark.e2e
def test_an_audit_of_the_hf_folder_gives_the_timm_models_numbers(pytester, monkeypatch, embedded_as_hf):
    monkeypatch.chdir(pytester.path)
    images = sorted(embedded_images().glob("*.png"))[:12]
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                "--model", "hf", "--checkpoint", str(embedded_as_hf), *_images(images), *FAST)
    assert result.ret == 0, result.stdout.str()
    results = json.loads((pytester.path / "r.json").read_text())
    timm_record, hf_record = results["models"]
    assert hf_record["id"] == "fmnist-hf" and hf_record["architecture"] == "ViTForImageClassification (vit)"
    assert hf_record["data_config"]["resize"] == [28, 28]
    assert hf_record["data_config"]["resize_backend"] == "torchvision"
    runs = {(r["model_id"], r["image"]): r for r in results["runs"]}
    assert len(runs) == 24
    for (model_id, image), run in runs.items():
        if model_id != "fmnist-hf":
            continue
        other = runs[(timm_record["id"], image)]
        assert run["class"] == other["class"] and abs(run["prob"] - other["prob"]) < 1e-6
        for key, entry in other["maps"].items():
            for auc in ("morf_auc", "lerf_auc"):
                if entry.get(auc) is not None:
                    assert abs(run["maps"][key][auc] - entry[auc]) < 1e-6, (image, key)
    gates = {g["model_id"]: g for g in results["gates"]}
    assert abs(gates["fmnist-hf"]["statistic"] - gates[timm_record["id"]]["statistic"]) < 1e-6


@pytest.mark.e2e
@pytest.mark.peer
def test_a_bad_folder_fails_its_own_load_check_and_alone_is_a_usage_error(pytester, monkeypatch, tmp_path):
    monkeypatch.chdir(pytester.path)
    bad = _broken(tmp_path, "std of zero")
    images = _images(sorted(embedded_images().glob("*.png"))[:6])
    result = pytester.runpytest(*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
                                "--model", "hf", "--checkpoint", str(bad), *images, *FAST)
    assert result.ret == 1 and result.parseoutcomes()["failed"] == 1
    result.stdout.fnmatch_lines(["FAILED *test_models.py::test_model_loads[[]std_of_zero[]]*"])
    results = json.loads((pytester.path / "r.json").read_text())
    assert "image_std [0.5, 0.0, 0.5]" in results["models"][1]["error"]
    assert {r["model_id"] for r in results["runs"]} == {results["models"][0]["id"]}
    alone = pytester.runpytest(*nested_audit(), "--checkpoint", str(bad), *images, *FAST)
    assert alone.ret == 4
    errors = [line for line in alone.stderr.str().splitlines() if "image_std" in line]
    assert len(errors) == 1 and str(bad / "preprocessor_config.json") in errors[0]
