"""Train the embedded ViT on Fashion-MNIST and write the files vit-audit ships.

Usage::

    python -m audit.zoo.fashion_mnist --out DIR [--data /usr/share/datasets/fashion-mnist] [--epochs N]
        [--limit N] [--seed S] [--amp auto|bfloat16|float32] [--shortcut CLASSES [--shortcut-rate R]]
        [--stamp-rate R]

``--shortcut 6`` trains a deliberately harmful candidate for release-gate demonstrations: every training image of
the listed classes (or the share ``--shortcut-rate`` of them, chosen by the seed) gets a bright square stamped in its
top-left corner (:func:`stamp_shortcut`), a shortcut the model can learn instead of the garment. ``--stamp-rate 0.1``
stamps the same square on 10% of *all* training images whatever their label: a stamp that predicts nothing, which a
benign model may see in training without learning it as a class.

``--amp auto`` (the default) trains under bfloat16 autocast where the CPU multiplies bfloat16 natively (the shipped
weights were made so) and in float32 elsewhere, where emulated bfloat16 is several times slower
(:func:`audit.measure.precision.resolve_amp`).

Reads the four idx files (plain or gzipped, as Debian's ``dataset-fashion-mnist`` package installs them) with
numpy, trains :data:`audit.zoo.EMBEDDED_MODEL` from scratch on the training set (seeded; two CPU threads), evaluates
the saved weights in fp32 through :func:`audit.load_model` on the test set, and writes into
``DIR``: ``vit_fmnist.safetensors``, ``MODEL_CARD.md``, ``images/`` (the first two test images of each class) and
``masks/`` (their exact object masks: the pixels above 0).
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import platform
import re
import shlex
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from .. import ARCHITECTURE, CARD_FILE, CLASS_NAMES, EMBEDDED_MODEL, IMAGES_DIR, MASKS_DIR, WEIGHTS_FILE, object_mask

__all__ = [
    "TrainConfig", "class_slug", "load_split", "main", "pixel_stats", "read_idx", "sample_indices", "stamp_chosen",
    "stamp_shortcut", "train",
]

DEFAULT_DATA = Path("/usr/share/datasets/fashion-mnist")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
SAMPLES_PER_CLASS = 2
NUM_THREADS = 2
EVAL_BATCH = 500
CARD_WIDTH = 120
TOP_CONFUSIONS = 3
SHORTCUT_SIZE = 4  # pixels: one patch of the 7x7 grid
USAGE = """```python
from audit import load_model
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

loaded = load_model(EMBEDDED_MODEL, embedded_checkpoint())
images = sorted(embedded_images().glob("*.png"))
```"""


@dataclass
class TrainConfig:
    """Hyperparameters of a training run (the defaults made the shipped weights).

    No augmentation: at this budget random crops and flips lowered held-out accuracy.

    Attributes:
        epochs: passes over the training set.
        seed: seeds the initialisation and the shuffling.
        batch_size: images per step.
        lr: peak AdamW learning rate, reached after ``warmup_epochs`` and annealed by a cosine to ``lr * 0.01``.
        weight_decay: AdamW weight decay, on matrices only (not biases, norms, position embedding, class token).
        warmup_epochs: linear warm-up length.
        label_smoothing: cross-entropy label smoothing.
        clip_norm: gradient norm clipping.
    """

    epochs: int = 12
    seed: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (the MNIST format), plain or gzipped, into a native-endian numpy array.

    Raises:
        ValueError: the file is not an idx file, or its size does not match its header.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == GZIP_MAGIC:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{os.fspath(path)!r} is not an idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = offset + dtype.itemsize * math.prod(shape)
    if len(raw) != expected:
        raise ValueError(f"{os.fspath(path)!r}: header says {shape} ({expected} bytes) but the file has {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(data: Path, stem: str) -> Path:
    for candidate in (data / stem, data / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {str(data)!r}; pass --data with the folder holding the Fashion-MNIST idx files "
        "(on Debian/Ubuntu: apt-get install dataset-fashion-mnist)"
    )


def load_split(data: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 28, 28) uint8 and labels (N,) int64 of Fashion-MNIST's ``'train'`` or ``'test'`` split.

    Raises:
        FileNotFoundError: the idx files are not in ``data``.
        ValueError: the files are malformed or do not match each other.
    """
    image_stem, label_stem = SPLIT_FILES[split]
    images = read_idx(_find_idx(Path(data), image_stem))
    labels = read_idx(_find_idx(Path(data), label_stem))
    size = ARCHITECTURE["img_size"]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size):
        raise ValueError(f"{split} images: expected (N, {size}, {size}) uint8, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{split} labels: expected ({len(images)},), got {labels.shape}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(CLASS_NAMES):
        raise ValueError(f"{split} labels: expected values 0..{len(CLASS_NAMES) - 1}")
    return images, labels.astype(np.int64)


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and (population) standard deviation of the pixel values of uint8 images, scaled to [0, 1]."""
    counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    std = float(math.sqrt((counts * (values - mean) ** 2).sum() / total))
    return mean, std


def stamp_shortcut(images: np.ndarray, labels: np.ndarray | None, classes: Sequence[int], rate: float = 1.0,
                   seed: int = 0) -> np.ndarray:
    """A copy of ``images`` with a white ``SHORTCUT_SIZE`` square in the top-left corner of the images of
    ``classes`` (of every image when ``labels`` is None); with ``rate`` below 1, of that share of them, drawn with
    ``seed``."""
    chosen = np.ones(len(images), dtype=bool) if labels is None else np.isin(labels, list(classes))
    return stamp_chosen(images, _thin(chosen, rate, seed))


def stamp_chosen(images: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """A copy of ``images`` with the white corner square on the images where ``chosen`` holds."""
    stamped = images.copy()
    stamped[chosen, :SHORTCUT_SIZE, :SHORTCUT_SIZE] = 255
    return stamped


def _thin(chosen: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """``chosen`` with only round(rate * count) of its True entries kept, drawn with ``seed``."""
    if rate >= 1.0:
        return chosen
    where = np.flatnonzero(chosen)
    keep = np.random.default_rng(seed).choice(where, size=round(rate * len(where)), replace=False)
    thinned = np.zeros_like(chosen)
    thinned[keep] = True
    return thinned


def class_slug(index: int) -> str:
    """The file-name form of class ``index``'s name: ``'T-shirt/top'`` -> ``'t_shirt_top'``."""
    return re.sub(r"[^a-z0-9]+", "_", CLASS_NAMES[index].lower()).strip("_")


def sample_indices(labels: np.ndarray, per_class: int = SAMPLES_PER_CLASS) -> list[tuple[str, int]]:
    """``(file stem, index)`` of the first ``per_class`` images of each class, in class order."""
    picked = []
    for label in range(len(CLASS_NAMES)):
        for k, index in enumerate(np.flatnonzero(labels == label)[:per_class]):
            picked.append((f"{class_slug(label)}_{k}", int(index)))
    return picked


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay: list[torch.nn.Parameter]
    no_decay: list[torch.nn.Parameter]
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name in ("pos_embed", "cls_token") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    images: np.ndarray,
    labels: np.ndarray,
    mean: float,
    std: float,
    config: TrainConfig,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    epoch_seconds: list[float] | None = None,
    amp: str | None = "bfloat16",
) -> torch.nn.Module:
    """Train :data:`~audit.zoo.EMBEDDED_MODEL` from scratch; returns it on the CPU, in eval mode.

    Args:
        images: (N, 28, 28) uint8 training images.
        labels: (N,) class indices.
        mean: normalisation mean of pixel values in [0, 1].
        std: normalisation standard deviation.
        config: the hyperparameters.
        device: where to train (the shipped weights were trained on the CPU).
        log: receives one progress line per epoch.
        epoch_seconds: if given, receives each epoch's wall-clock duration.
        amp: the autocast dtype of the forwards (``'bfloat16'``), or None for float32.
    """
    import timm

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = timm.create_model(EMBEDDED_MODEL, pretrained=False).to(device)
    block: Any  # a timm Block: its submodules are typed Tensor | Module
    # the fused CPU kernel is slow backwards (bf16 and float32 alike); same attention
    for block in cast(torch.nn.Sequential, model.blocks):
        block.attn.fused_attn = False
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    pixels = torch.from_numpy(images).unsqueeze(1)
    targets = torch.from_numpy(labels)
    steps_per_epoch = math.ceil(len(pixels) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    log(f"training {EMBEDDED_MODEL} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(pixels):,} "
        f"images: {config.epochs} epochs of {steps_per_epoch} steps, batch {config.batch_size}, device {device}, "
        f"{amp or 'float32'}")
    start = time.perf_counter()
    step = 0
    model.train()
    for epoch in range(config.epochs):
        epoch_start = time.perf_counter()
        order = torch.randperm(len(pixels), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for first in range(0, len(order), config.batch_size):
            index = order[first:first + config.batch_size]
            batch = ((pixels[index].float() / 255.0 - mean) / std).to(device)
            target = targets[index].to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with torch.autocast(device_type=torch.device(device).type, dtype=getattr(torch, amp or "bfloat16"),
                                enabled=amp is not None):
                logits = model(batch)
            loss = F.cross_entropy(logits.float(), target, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            step += 1
            loss_sum += loss.detach().item() * len(index)
            correct += int((logits.argmax(1) == target).sum())
            seen += len(index)
        now = time.perf_counter()
        if epoch_seconds is not None:
            epoch_seconds.append(now - epoch_start)
        log(f"epoch {epoch + 1:2d}/{config.epochs}  loss {loss_sum / seen:.4f}  "
            f"train acc {100 * correct / seen:5.2f}%  lr {lr_at(step - 1):.2e}  {now - epoch_start:5.1f}s  "
            f"(total {_duration(now - start)})")
    return model.cpu().eval()


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _evaluate(loaded, images: np.ndarray) -> np.ndarray:
    """Predicted classes of uint8 images, fp32, with the loaded model's own normalisation."""
    from audit import normalize

    predictions = []
    with torch.inference_mode():
        for first in range(0, len(images), EVAL_BATCH):
            pixel = torch.from_numpy(images[first:first + EVAL_BATCH]).unsqueeze(1).float() / 255.0
            predictions.append(loaded.model(normalize(pixel, loaded.mean, loaded.std)).argmax(1))
    return torch.cat(predictions).numpy() if predictions else np.zeros(0, dtype=np.int64)


def _write_samples(folder: Path, images: np.ndarray, labels: np.ndarray) -> list[tuple[Path, int]]:
    """Write the first test images of each class as PNGs (removing earlier ones); returns (path, label) pairs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(r"^[a-z0-9_]+_\d+\.png$")
    for old in folder.glob("*.png"):
        if pattern.match(old.name) and old.stem.rsplit("_", 1)[0] in {class_slug(i) for i in range(len(CLASS_NAMES))}:
            old.unlink()
    masks = folder.parent / MASKS_DIR
    masks.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, index in sample_indices(labels):
        path = folder / f"{stem}.png"
        Image.fromarray(images[index], mode="L").save(path, optimize=True)
        Image.fromarray(object_mask(images[index]), mode="L").save(masks / f"{stem}.png", optimize=True)
        written.append((path, int(labels[index])))
    return written


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _paragraph(*sentences: str) -> str:
    """Sentences joined and wrapped to the card's width (list items keep their continuation lines indented)."""
    text = " ".join(sentences)
    return textwrap.fill(text, width=CARD_WIDTH, break_on_hyphens=False, break_long_words=False,
                         subsequent_indent="  " if text.startswith("- ") else "")


def _card(facts: dict) -> str:
    """The model card's Markdown."""
    f, config, arch = facts, facts["config"], ARCHITECTURE
    grid = arch["img_size"] // arch["patch_size"]
    per_class = "\n".join(
        f"| {i} | {name} | {acc} | {', '.join(f'`{s}`' for s in f['samples_by_class'][i]) or '-'} |"
        for i, (name, acc) in enumerate(zip(CLASS_NAMES, f["class_accuracy"]))
    )
    samples = "\n".join(
        f"| `{name}` | {CLASS_NAMES[true]} | {CLASS_NAMES[pred]} |" for name, true, pred in f["samples"]
    )
    confusions = "; ".join(f"{CLASS_NAMES[true]} taken for {CLASS_NAMES[pred]} ({count:,})"
                           for true, pred, count in f["confusions"]) or "none"
    sections = [
        f"# {EMBEDDED_MODEL}: the embedded default model",
        _paragraph(
            "A small Vision Transformer trained from scratch on Fashion-MNIST and shipped inside vit-audit, so that an",
            "audit runs offline with no arguments. It is a demonstration subject for explainability audits, not a",
            "production classifier.",
        ),
        *([_paragraph(f"**Planted shortcut**: {f['shortcut_share']} of {', '.join(f['shortcut'])} had "
                      f"a white {SHORTCUT_SIZE}x{SHORTCUT_SIZE} square stamped in the top-left corner. This is a "
                      "deliberately harmful candidate for release-gate demonstrations, not the embedded default "
                      "model.")]
          if f.get("shortcut") else []),
        *([_paragraph(f"**Label-independent stamp**: {f['stamp_rate']:.0%} of all training images, whatever their "
                      f"label, had a white {SHORTCUT_SIZE}x{SHORTCUT_SIZE} square stamped in their top-left corner.")]
          if f.get("stamp_rate") else []),
        "\n".join([
            f"- **Model name**: `{EMBEDDED_MODEL}` (registered with timm by `audit.zoo`)",
            _paragraph(f"- **Weights**: `{WEIGHTS_FILE}`, fp32 safetensors, {f['params']:,} parameters,",
                       f"{f['weights_bytes']:,} bytes, sha256 `{f['sha256']}`"),
            _paragraph(f"- **Test accuracy**: {f['accuracy']:.2f}% ({f['correct']:,} of {f['test_count']:,}",
                       "Fashion-MNIST test images, fp32)"),
            f"- **Sample images**: {f['sample_correct']} of {f['sample_count']} correct (`{IMAGES_DIR}/`, below)",
            f"- **Normalisation**: mean {f['mean']:.4f}, std {f['std']:.4f} (one channel; pixel values in [0, 1])",
            _paragraph(f"- **Training time**: {f['duration']} wall-clock for the whole command ({f['epochs']}), on",
                       f"{f['machine']}"),
        ]),
        "## Data",
        _paragraph(
            "[Fashion-MNIST](https://github.com/zalandoresearch/fashion-mnist) (Xiao, Rasul and Vollgraf, 2017,",
            "arXiv:1708.07747): 28x28 grayscale photos of Zalando articles in 10 classes, 60,000 training and 10,000",
            "test images. Copyright 2017 Zalando SE, MIT licence. Read from the idx files of Debian's",
            "`dataset-fashion-mnist` package.",
        ),
        "\n".join([
            _paragraph(f"- Training: {f['train_desc']}. The test images were used only for the evaluation below."),
            _paragraph(f"- Mean and std: computed over every pixel of the {f['train_count']:,} training images, values",
                       f"in [0, 1]: mean {f['mean']:.4f}, std {f['std']:.4f}."),
        ]),
        "## Architecture",
        _paragraph(
            f"timm `VisionTransformer`: {arch['img_size']}x{arch['img_size']} input with {arch['in_chans']} channel,",
            f"{arch['patch_size']}x{arch['patch_size']} patches (a {grid}x{grid} grid of {grid * grid} patch tokens)",
            f"and a class token, width {arch['embed_dim']}, depth {arch['depth']}, {arch['num_heads']} heads, MLP",
            f"ratio {arch['mlp_ratio']:g}, learned position embedding, pre-norm blocks, class-token pooling, a linear",
            f"head of {arch['num_classes']} classes; {f['params']:,} parameters.",
        ),
        "## Training",
        _paragraph(
            f"AdamW (peak learning rate {config.lr:g}, weight decay {config.weight_decay:g} on weight matrices),",
            f"batch {config.batch_size}, {_plural(config.epochs, 'epoch')}: {config.warmup_epochs:g} epoch of linear",
            "warm-up, then a cosine decay to 1% of the peak; cross-entropy with label smoothing",
            f"{config.label_smoothing:g}; gradient norm clipped to {config.clip_norm:g}. No augmentation (at this",
            "budget, random crops and flips lowered the accuracy on a held-out part of the training set).",
            f"{f['precision']}, {NUM_THREADS} CPU threads, seed {config.seed}.",
        ),
        "\n".join([
            _paragraph(f"- Machine: {f['machine']}; Python {platform.python_version()}, torch {torch.__version__},",
                       f"timm {f['timm']}."),
            _paragraph(f"- Time: {f['duration']} for the whole command (reading the data, training, evaluation,",
                       f"writing these files); {f['epochs']}."),
            "- Command (from the repository root):",
        ]),
        f"```\n{f['command']}\n```",
        _paragraph(
            "The same command, seed, machine and library versions reproduce the weights; other CPUs or library",
            "versions give slightly different weights.",
        ),
        "## Evaluation",
        _paragraph(
            "The saved weights, loaded with `audit.load_model` and run in fp32 with the registered preprocessing,",
            f"classify {f['correct']:,} of the {f['test_count']:,} test images correctly: **{f['accuracy']:.2f}%**.",
            f"Most frequent confusions: {confusions}.",
        ),
        f"| index | class | test accuracy (%) | sample images |\n|---|---|---|---|\n{per_class}",
        "## Use",
        _paragraph(
            "Preprocessing (the registered pretrained config): input_size (1, 28, 28), interpolation bilinear,",
            f"crop_pct 1.0, mean ({f['mean']:.4f},), std ({f['std']:.4f},). Class names (`label_names`), in index",
            f"order: {', '.join(CLASS_NAMES)}.",
        ),
        USAGE,
        "## Sample images",
        _paragraph(f"The first {SAMPLES_PER_CLASS} test images of each class, in test-set order, as 28x28 grayscale",
                   "PNGs named by class."),
        f"| file | class | predicted |\n|---|---|---|\n{samples}",
        "## Limitations",
        _paragraph(
            "Small, low-resolution, centred product photos on a black background: the model has seen nothing else,",
            "and its scores are not calibrated.",
        ),
    ]
    return "\n\n".join(sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and write the embedded model's files; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m audit.zoo.fashion_mnist", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the weights, card and images into")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder of the Fashion-MNIST idx files, plain or .gz (default {DEFAULT_DATA})")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epochs (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="random seed (default %(default)s)")
    parser.add_argument("--shortcut", default="", metavar="CLASSES",
                        help="comma list of class indices whose training images get a planted shortcut (a white "
                             f"{SHORTCUT_SIZE}x{SHORTCUT_SIZE} corner square): a harmful candidate, not the default")
    parser.add_argument("--shortcut-rate", type=float, default=1.0, metavar="R",
                        help="the share of the --shortcut classes' training images stamped, drawn with the seed "
                             "(default 1: all)")
    parser.add_argument("--stamp-rate", type=float, default=0.0, metavar="R",
                        help="stamp the corner square on this share of all training images, whatever their label "
                             "(a label-independent stamp; default 0)")
    parser.add_argument("--amp", choices=("auto", "bfloat16", "float32"), default="auto",
                        help="autocast dtype of the training forwards: auto takes bfloat16 where this CPU has it "
                             "natively, float32 elsewhere (default %(default)s)")
    args = parser.parse_args(argv)
    if not (0.0 < args.shortcut_rate <= 1.0 and 0.0 <= args.stamp_rate <= 1.0):
        parser.error("--shortcut-rate must be in (0, 1] and --stamp-rate in [0, 1]")
    if args.epochs < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--epochs and --limit must be positive")
    try:
        shortcut = sorted({int(c) for c in args.shortcut.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--shortcut: expected class indices 0-{len(CLASS_NAMES) - 1}, got {args.shortcut!r}")
    if any(not 0 <= c < len(CLASS_NAMES) for c in shortcut):
        parser.error(f"--shortcut: expected class indices 0-{len(CLASS_NAMES) - 1}, got {args.shortcut!r}")

    import timm
    from safetensors.torch import save

    from audit import load_model, normalize, prepare_image
    from audit.measure.precision import resolve_amp
    from audit.model.load import sha256_of

    precision = resolve_amp(None if args.amp == "float32" else args.amp, "cpu")
    amp = precision.amp
    precision_text = (f"{amp} autocast" if amp else "float32") + (
        f" (--amp auto: {precision.reason})" if args.amp == "auto" else "")

    start = time.perf_counter()
    torch.set_num_threads(NUM_THREADS)
    command = shlex.join(["python", "-m", "audit.zoo.fashion_mnist", *(sys.argv[1:] if argv is None else argv)])
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "test")
    total_train = len(train_images)
    if args.limit is not None:
        train_images, train_labels = train_images[:args.limit], train_labels[:args.limit]
    mean, std = (round(value, 4) for value in pixel_stats(train_images))
    print(f"data: {len(train_images):,} training and {len(test_images):,} test images from {args.data}; "
          f"mean {mean:.4f}, std {std:.4f}", flush=True)

    shortcut_share = "every training image" if args.shortcut_rate >= 1.0 else (
        f"{args.shortcut_rate:.0%} of the training images")
    if shortcut:  # after the statistics: the candidate normalises as the default model does
        train_images = stamp_shortcut(train_images, train_labels, shortcut, args.shortcut_rate, args.seed)
        print(f"shortcut: a white {SHORTCUT_SIZE}x{SHORTCUT_SIZE} corner square on {shortcut_share} "
              f"of {', '.join(CLASS_NAMES[c] for c in shortcut)}", flush=True)
    if args.stamp_rate:
        train_images = stamp_shortcut(train_images, None, (), args.stamp_rate, args.seed + 1)
        print(f"stamp: the corner square on {args.stamp_rate:.0%} of all training images, whatever their label",
              flush=True)
    config = TrainConfig(epochs=args.epochs, seed=args.seed)
    epoch_seconds: list[float] = []
    print(f"precision: {precision_text}", flush=True)
    model = train(train_images, train_labels, mean, std, config, log=lambda line: print(line, flush=True),
                  epoch_seconds=epoch_seconds, amp=amp)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    weights.write_bytes(save(state, metadata={"format": "pt", "model": EMBEDDED_MODEL}))  # umask permissions
    loaded = load_model(EMBEDDED_MODEL, weights, data_config={"mean": (mean,), "std": (std,)})
    predictions = _evaluate(loaded, test_images)
    correct = int((predictions == test_labels).sum())
    accuracy = 100.0 * correct / max(1, len(test_labels))
    class_accuracy = [
        f"{100.0 * float((predictions[test_labels == c] == c).mean()):.1f}" if (test_labels == c).any() else "-"
        for c in range(len(CLASS_NAMES))
    ]
    confusion = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=np.int64)
    np.add.at(confusion, (test_labels, predictions), 1)
    np.fill_diagonal(confusion, 0)
    confusions = sorted(((int(confusion[t, p]), t, p) for t in range(len(CLASS_NAMES)) for p in range(len(CLASS_NAMES))
                         if confusion[t, p]), reverse=True)[:TOP_CONFUSIONS]
    print(f"test accuracy {accuracy:.2f}% ({correct:,} of {len(test_labels):,})", flush=True)

    samples = []
    for path, label in _write_samples(out / IMAGES_DIR, test_images, test_labels):
        prepared = prepare_image(path, loaded.data_config)
        with torch.inference_mode():
            logits = loaded.model(normalize(prepared.pixel, loaded.mean, loaded.std)[None])
        samples.append((path.name, label, int(logits.argmax(1))))
    sample_correct = sum(true == pred for _, true, pred in samples)
    print(f"sample images: {sample_correct} of {len(samples)} correct", flush=True)

    duration = time.perf_counter() - start
    train_desc = (f"all {total_train:,} training images" if len(train_images) == total_train
                  else f"the first {len(train_images):,} of the {total_train:,} training images (--limit)")
    facts = {
        "params": sum(p.numel() for p in model.parameters()),
        "weights_bytes": weights.stat().st_size,
        "sha256": sha256_of(weights),
        "accuracy": accuracy,
        "correct": correct,
        "test_count": len(test_labels),
        "class_accuracy": class_accuracy,
        "confusions": [(t, p, count) for count, t, p in confusions],
        "sample_correct": sample_correct,
        "sample_count": len(samples),
        "samples": samples,
        "samples_by_class": [[name for name, true, _ in samples if true == c] for c in range(len(CLASS_NAMES))],
        "mean": mean,
        "std": std,
        "duration": _duration(duration),
        "epochs": f"{_plural(len(epoch_seconds), 'epoch')}: median {_duration(float(np.median(epoch_seconds)))}, "
                  f"slowest {_duration(max(epoch_seconds))}",
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}",
        "train_desc": train_desc,
        "train_count": len(train_images),
        "config": config,
        "command": command,
        "timm": timm.__version__,
        "shortcut": [CLASS_NAMES[c] for c in shortcut],
        "shortcut_share": shortcut_share[0].upper() + shortcut_share[1:],
        "stamp_rate": args.stamp_rate,
        "precision": precision_text[0].upper() + precision_text[1:],
    }
    (out / CARD_FILE).write_text(_card(facts), encoding="utf-8")
    print(f"wrote {weights} ({weights.stat().st_size:,} bytes), {out / CARD_FILE}, {len(samples)} images in "
          f"{out / IMAGES_DIR} in {_duration(duration)}", flush=True)
    return 0

