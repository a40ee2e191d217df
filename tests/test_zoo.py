"""audit.zoo: the embedded default model loads offline, matches its model card, and its training script rebuilds it."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

import audit.zoo
from audit import find_images, load_model, normalize, prepare_image
from audit.zoo import CLASS_NAMES, EMBEDDED_MODEL, MEAN, STD, embedded_card, embedded_checkpoint, embedded_images
from audit.zoo.fashion_mnist import train as zoo_train

ROOT = Path(__file__).resolve().parents[1]
SLUG_TO_LABEL = {re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"): i for i, name in enumerate(CLASS_NAMES)}
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_LIMIT = 240, 40, 200


def card_facts(text: str) -> dict[str, float | int | str]:
    """The numbers a model card states; fails the test when one is missing."""
    patterns = {
        "accuracy": r"\*\*Test accuracy\*\*: ([0-9.]+)%",
        "test_correct": r"\*\*Test accuracy\*\*: [0-9.]+% \(([0-9,]+) of",
        "sample_correct": r"\*\*Sample images\*\*: (\d+) of \d+ correct",
        "sample_count": r"\*\*Sample images\*\*: \d+ of (\d+) correct",
        "mean": r"\*\*Normalisation\*\*: mean ([0-9.]+), std",
        "std": r"\*\*Normalisation\*\*: mean [0-9.]+, std ([0-9.]+)",
        "sha256": r"sha256\s+`([0-9a-f]{64})`",
    }
    facts: dict[str, float | int | str] = {}
    for key, pattern in patterns.items():
        found = re.search(pattern, text)
        assert found, f"the model card does not state {key} (no match for {pattern!r})"
        value = found.group(1).replace(",", "")
        facts[key] = value if key == "sha256" else float(value) if "." in value else int(value)
    return facts


def label_of(path: Path) -> int:
    """The class a sample image's file name (``ankle_boot_0.png``) names."""
    slug, index = path.stem.rsplit("_", 1)
    assert index.isdigit() and slug in SLUG_TO_LABEL, f"{path.name} is not named <class>_<n>.png"
    return SLUG_TO_LABEL[slug]


def predict(loaded, paths: list[Path]) -> list[int]:
    """Classes predicted for image files, prepared and normalised exactly as an audit does."""
    pixels = torch.stack([prepare_image(path, loaded.data_config).pixel for path in paths])
    with torch.inference_mode():
        return loaded.model(normalize(pixels, loaded.mean, loaded.std)).argmax(1).tolist()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write a uint8 array as an idx file (the MNIST format), gzipped or plain."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture(scope="module")
def embedded():
    return load_model(EMBEDDED_MODEL, embedded_checkpoint())


@pytest.fixture(scope="module")
def card() -> dict[str, float | int | str]:
    return card_facts(embedded_card().read_text(encoding="utf-8"))


@pytest.fixture
def synthetic(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A tiny Fashion-MNIST look-alike: images gzipped as Debian ships them, labels plain; every class present."""
    rng = np.random.default_rng(7)
    arrays = {
        "train_images": rng.integers(0, 256, (SYNTHETIC_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(SYNTHETIC_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (SYNTHETIC_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.permutation(np.arange(SYNTHETIC_TEST) % 10).astype(np.uint8),
    }
    data = tmp_path / "data"
    data.mkdir()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", arrays[f"{split}_images"], compress=True)
        write_idx(data / f"{prefix}-labels-idx1-ubyte", arrays[f"{split}_labels"], compress=False)
    return data, arrays


def test_shipped_weights_load_strictly_with_the_registered_preprocessing(embedded):
    shipped = load_file(str(embedded_checkpoint()))
    state = embedded.model.state_dict()
    assert shipped.keys() == state.keys()
    assert all(tensor.dtype == torch.float32 and torch.equal(tensor, state[key]) for key, tensor in shipped.items())
    assert embedded_checkpoint().stat().st_size < 2_000_000
    assert embedded.num_classes == len(CLASS_NAMES) == 10
    config = embedded.data_config
    assert tuple(config["input_size"]) == (1, 28, 28)
    assert (config["interpolation"], config["crop_pct"]) == ("bilinear", 1.0)
    assert (embedded.mean, embedded.std) == ((MEAN,), (STD,))


def test_registered_architecture_is_a_class_token_vit_on_a_7x7_grid_of_grayscale_patches():
    config = timm.get_pretrained_cfg(EMBEDDED_MODEL)
    assert tuple(config.label_names) == CLASS_NAMES
    assert (config.num_classes, tuple(config.input_size), config.mean, config.std) == (10, (1, 28, 28), (MEAN,), (STD,))
    model = timm.create_model(EMBEDDED_MODEL, pretrained=False)
    assert isinstance(model, timm.models.VisionTransformer)
    assert tuple(model.patch_embed.grid_size) == (7, 7)
    assert model.cls_token is not None and model.num_prefix_tokens == 1
    assert model.patch_embed.proj.in_channels == 1
    assert model.global_pool == "token"


def test_timm_pretrained_flag_loads_the_shipped_weights_offline():
    model = timm.create_model(EMBEDDED_MODEL, pretrained=True)
    shipped = load_file(str(embedded_checkpoint()))
    assert all(torch.equal(tensor, shipped[key]) for key, tensor in model.state_dict().items())


def test_shipped_samples_are_two_test_images_per_class_classified_as_the_card_states(embedded, card):
    paths = find_images([embedded_images()])
    labels = [label_of(path) for path in paths]
    assert Counter(labels) == {label: 2 for label in range(10)}
    for path in paths:
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("L", (28, 28)), path.name
    correct = sum(pred == label for pred, label in zip(predict(embedded, paths), labels))
    assert (correct, len(paths)) == (card["sample_correct"], card["sample_count"])
    assert correct >= 16  # 17 of 20 measured; about 18 expected at the card's 89% test accuracy


def test_model_card_states_at_least_88_percent_and_the_registered_statistics(embedded, card):
    assert card["accuracy"] >= 88.0
    assert card["test_correct"] == round(card["accuracy"] * 100)  # of the 10,000 test images
    assert (card["mean"], card["std"]) == (MEAN, STD)
    assert card["sha256"] == embedded.checkpoint_sha256
    text = embedded_card().read_text(encoding="utf-8")
    assert ", ".join(CLASS_NAMES) in re.sub(r"\s+", " ", text)
    assert "python -m audit.zoo.fashion_mnist --out" in text


def test_missing_data_files_are_reported_with_how_to_rebuild_them(monkeypatch):
    monkeypatch.setattr(audit.zoo, "WEIGHTS_FILE", "absent.safetensors")
    with pytest.raises(FileNotFoundError, match=r"absent\.safetensors.*python -m audit\.zoo\.fashion_mnist --out"):
        embedded_checkpoint()


@pytest.mark.e2e
def test_load_model_registers_the_embedded_model_lazily_without_training_code():
    code = ("import sys, audit; before = 'audit.zoo' in sys.modules; import timm; "
            "loaded = audit.load_model(audit.zoo.EMBEDDED_MODEL if 'audit.zoo' in sys.modules else "
            "'vit_fmnist_patch4_28', num_classes=10); "
            "print(before, timm.is_model('vit_fmnist_patch4_28'), loaded.class_name(9).replace(' ', '_'), "
            "sorted(m for m in sys.modules if m.startswith('audit.zoo.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "Ankle_boot", "[]"]


def test_idx_reader_reads_gzipped_and_plain_files_alike(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "plain", array, compress=False)
    write_idx(tmp_path / "packed.gz", array, compress=True)
    for name in ("plain", "packed.gz"):
        read = zoo_train.read_idx(tmp_path / name)
        assert read.dtype == np.uint8 and np.array_equal(read, array)


def test_idx_reader_rejects_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "short", np.zeros((2, 28, 28), dtype=np.uint8), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="header says"):
        zoo_train.read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="not an idx file"):
        zoo_train.read_idx(tmp_path / "png")


@pytest.mark.e2e
def test_training_script_writes_loadable_weights_test_samples_and_a_truthful_card(tmp_path, synthetic):
    data, arrays = synthetic
    out = tmp_path / "out"
    command = [sys.executable, "-m", "audit.zoo.fashion_mnist", "--out", str(out), "--data", str(data),
               "--epochs", "1", "--limit", str(SYNTHETIC_LIMIT), "--seed", "3"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert re.search(r"epoch\s+1/1\s+loss [0-9.]+ .*\d+(\.\d)?s", result.stdout), result.stdout

    facts = card_facts((out / "MODEL_CARD.md").read_text(encoding="utf-8"))
    pixels = arrays["train_images"][:SYNTHETIC_LIMIT].astype(np.float64) / 255.0
    assert (facts["mean"], facts["std"]) == (round(pixels.mean(), 4), round(pixels.std(), 4))
    loaded = load_model(EMBEDDED_MODEL, out / "vit_fmnist.safetensors",
                        data_config={"mean": (facts["mean"],), "std": (facts["std"],)})
    assert facts["sha256"] == loaded.checkpoint_sha256

    samples = find_images([out / "images"])
    assert len(samples) == 20
    test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    for path in samples:
        label = label_of(path)
        index = np.flatnonzero(test_labels == label)[int(path.stem.rsplit("_", 1)[1])]
        assert np.array_equal(np.asarray(Image.open(path)), test_images[index]), path.name

    test_dir = tmp_path / "test_png"
    test_dir.mkdir()
    paths = []
    for i, image in enumerate(test_images):
        Image.fromarray(image).save(test_dir / f"{i:03d}.png")
        paths.append(test_dir / f"{i:03d}.png")
    correct = sum(pred == int(label) for pred, label in zip(predict(loaded, paths), test_labels))
    assert facts["test_correct"] == correct
    assert facts["accuracy"] == round(100 * correct / SYNTHETIC_TEST, 2)


def test_training_with_the_same_seed_gives_identical_weights_and_another_seed_different_ones(synthetic):
    _, arrays = synthetic
    images, labels = arrays["train_images"][:64], arrays["train_labels"][:64].astype(np.int64)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = zoo_train.TrainConfig(epochs=1, seed=seed, batch_size=32)
        return zoo_train.train(images, labels, 0.5, 0.29, config, log=lambda line: None).state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


@pytest.mark.e2e
def test_a_planted_shortcut_stamps_only_the_chosen_classes_and_is_said_in_the_card(tmp_path, synthetic):
    _, arrays = synthetic
    images, labels = arrays["train_images"][:20], arrays["train_labels"][:20]
    stamped = zoo_train.stamp_shortcut(images, labels, [6])
    size = zoo_train.SHORTCUT_SIZE
    chosen = labels == 6
    assert (stamped[chosen, :size, :size] == 255).all() and chosen.any()
    assert np.array_equal(stamped[~chosen], images[~chosen])
    assert np.array_equal(stamped[chosen, size:], images[chosen, size:])
    assert (zoo_train.stamp_shortcut(images, None, [])[:, :size, :size] == 255).all()  # every image, for auditing
    many = np.zeros((400, 28, 28), dtype=np.uint8)
    half = zoo_train.stamp_shortcut(many, np.repeat([6, 1], 200), [6], rate=0.5, seed=3)
    marked = half[:, 0, 0] == 255
    assert marked[:200].sum() == 100 and not marked[200:].any()  # half of the class, none of the others
    assert np.array_equal(half, zoo_train.stamp_shortcut(many, np.repeat([6, 1], 200), [6], rate=0.5, seed=3))
    anywhere = zoo_train.stamp_shortcut(many, None, [], rate=0.1, seed=1)
    assert (anywhere[:, 0, 0] == 255).sum() == 40  # a label-independent stamp on 10% of all images
    data = synthetic[0]
    base = [sys.executable, "-m", "audit.zoo.fashion_mnist", "--out", str(tmp_path / "out"), "--data", str(data),
            "--epochs", "1", "--limit", str(SYNTHETIC_LIMIT)]
    result = subprocess.run([*base, "--shortcut", "6"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "shortcut: a white 4x4 corner square on every training image of Shirt" in result.stdout
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "**Planted shortcut**: Every training image of Shirt had a white 4x4 square" in card
    assert "Float32 (--amp auto" in card or "Bfloat16 autocast (--amp auto" in card
    masks = sorted((tmp_path / "out" / "masks").glob("*.png"))  # the sample images' object masks, by stem
    assert [m.name for m in masks] == sorted(p.name for p in (tmp_path / "out" / "images").glob("*.png"))
    sample = np.asarray(Image.open(tmp_path / "out" / "images" / masks[0].name))
    assert np.array_equal(np.asarray(Image.open(masks[0])), (sample > 0).astype(np.uint8))
    bad = subprocess.run([*base, "--shortcut", "12"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert bad.returncode == 2 and "--shortcut: expected class indices 0-9, got '12'" in bad.stderr
