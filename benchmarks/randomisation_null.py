"""Where a map's |Spearman| with the trained model's map lands: the numbers the randomisation threshold rests on.

Example (docs/concepts/statistics.md's table)::

    python benchmarks/randomisation_null.py --threads 1 --train-out /tmp/null \
        --train 1:2:20000 2:2:20000 3:2:20000 4:4:60000 5:4:60000 \
        --vit-tiny ../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --vit-tiny-images ../shared/images/imagenet-diverse-200 --vit-tiny-count 20

``--train SEED:EPOCHS:IMAGES`` trains an independent copy of the embedded architecture with the training script's
recipe (``audit.zoo.fashion_mnist.train.train``: seed, epochs, the first IMAGES training images) in float32 (the
script's bfloat16 autocast is emulated, about 6 times slower, on CPUs without native bfloat16), about 2 minutes for
2 epochs of 20,000 images and 10 for 4 of 60,000 on one core; ``--independent PATH ...`` reuses trained ones.

For each map (the policy's gated ``grad@0`` and ``chefer@encoder``, and ``cam@encoder``, ``grad_cls@0``,
``grad_cls@encoder``), per image the |rho| between the trained model's map and another model's map of the same
image and class (the trained model's top-1), in three settings:

- null: models trained independently of the embedded model (``--independent``: same architecture and data, other
  seeds; nothing shared). Per image the mean over those models; printed: the mean over images and the 95th
  percentile over images. This is where a map that depends on the parameters lands once they share nothing.
  Beside it, the check itself on such a map: over 1,000 random subsets of 10 images, each image's value the mean
  of 3 of the models (as the check averages 3 seeds), the 95th percentile of the check's CI upper bound and the
  share of subsets it passes and fails at ``--threshold``.
- randomised: the randomisation check itself (every parameter the map depends on randomised, cascading from the
  head), per image the mean over ``--seeds`` seeds.
- positive: the trained model with Gaussian noise of ``--noise`` times each parameter tensor's standard deviation
  added to every parameter, per image the mean over ``--seeds`` seeds; printed: the mean and the 5th percentile
  over images. A map that depends on the parameters still follows the trained model's map here.

The null is measured on the embedded model's 20 sample images; the randomised and positive columns there and on the
real ViT-Ti (``--vit-tiny``). The threshold rule: the smallest multiple of 0.1 above every map's 95th percentile of
the null's CI upper bound at 10 images (so that a map as dependent on the parameters as an independently trained
model's passes at least 95% of the time), printed with the smallest positive 5th percentile at the smallest noise,
which must lie well above it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from audit import load_model
from audit.maps import compute_maps, needs_attention
from audit.measure.randomisation import BATCH_IMAGES, randomisation_scores, unit_ranks
from audit.measure.stats import bootstrap_ci
from audit.model.capture import capture_batch
from audit.model.images import find_images, normalize, prepare_image
from audit.model.load import LoadedModel
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

SUBSETS = 1_000  # random image subsets the check's CI is simulated on
MAPS = ("grad@0", "chefer@encoder", "cam@encoder", "grad_cls@0", "grad_cls@encoder")
VIT_TINY = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@contextlib.contextmanager
def _float32_training() -> Iterator[None]:
    """The training script's recipe in float32: its bfloat16 autocast does nothing meanwhile."""
    original = torch.autocast
    torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.autocast = original


def train_independent(out: Path, seed: int, epochs: int, count: int) -> Path:
    """Train the embedded architecture on the first ``count`` training images; prints its test accuracy."""
    from safetensors.torch import save_file

    from audit.zoo.fashion_mnist import train as recipe

    images, labels = recipe.load_split(recipe.DEFAULT_DATA, "train")
    images, labels = images[:count], labels[:count]
    mean, std = (round(v, 4) for v in recipe.pixel_stats(images))
    with _float32_training():
        model = recipe.train(images, labels, mean, std, recipe.TrainConfig(epochs=epochs, seed=seed),
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    test_images, test_labels = recipe.load_split(recipe.DEFAULT_DATA, "test")
    with torch.no_grad():
        pixels = (torch.from_numpy(test_images).unsqueeze(1).float() / 255.0 - mean) / std
        predicted = torch.cat([model(pixels[i:i + 500]).argmax(1) for i in range(0, len(pixels), 500)]).numpy()
    path = out / f"seed{seed}_e{epochs}_n{count}" / "vit_fmnist.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": "pt", "model": EMBEDDED_MODEL})
    print(f"{path}: seed {seed}, {epochs} epochs of {count:,} images, test accuracy "
          f"{100 * float((predicted == test_labels).mean()):.2f}%", file=sys.stderr)
    return path


def _inputs(loaded: LoadedModel, paths: Sequence[Path]) -> list[torch.Tensor]:
    return [normalize(prepare_image(str(p), loaded.data_config).pixel, loaded.mean, loaded.std) for p in paths]


def _ranks(model: torch.nn.Module, inputs: Sequence[torch.Tensor], targets: Sequence[int | None] | None,
           ) -> tuple[list[int], list[dict[str, np.ndarray | None]]]:
    """The explained classes and each image's unit ranks of every map of :data:`MAPS`."""
    methods = sorted({key.split("@")[0] for key in MAPS})
    stages = sorted({key.split("@")[1] for key in MAPS})
    classes, ranks = [], []
    for start in range(0, len(inputs), BATCH_IMAGES):
        batch = torch.stack(list(inputs[start:start + BATCH_IMAGES]))
        wanted = None if targets is None else list(targets[start:start + BATCH_IMAGES])
        for cap in capture_batch(model, batch, wanted, attention=needs_attention(methods)):
            maps = compute_maps(model, cap, methods=methods, stages=stages)
            classes.append(cap.target)
            ranks.append({key: unit_ranks(maps[key].values) if maps[key].rankable else None for key in MAPS})
    return classes, ranks


def _abs_rho(reference: list[dict], other: list[dict]) -> dict[str, np.ndarray]:
    """|rho| per image and map (nan where either map is not rankable)."""
    out = {}
    for key in MAPS:
        out[key] = np.array([abs(float(a[key] @ b[key])) if a[key] is not None and b[key] is not None else np.nan
                             for a, b in zip(reference, other)])
    return out


@torch.no_grad()
def _noisy(model: torch.nn.Module, level: float, seed: int) -> torch.nn.Module:
    noisy = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    for param in noisy.parameters():
        std = float(param.float().std()) if param.numel() > 1 else 0.0
        param.add_((torch.randn(param.shape, generator=generator) * level * std).to(param.dtype))
    return noisy


def _per_image(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per image the mean over runs (models or seeds) of the finite |rho|."""
    out = {}
    for key in MAPS:
        stacked = np.stack([run[key] for run in runs])
        finite = np.isfinite(stacked)
        count = finite.sum(0)
        out[key] = np.where(count > 0, np.where(finite, stacked, 0).sum(0) / np.maximum(count, 1), np.nan)
    return out


def _stats(values: np.ndarray, percentile: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), float("nan")
    return float(finite.mean()), float(np.percentile(finite, percentile))


def _null_check(values: np.ndarray, count: int, draws: int, threshold: float,
                subsets: int = SUBSETS) -> tuple[float, float, float]:
    """The check on a map whose randomised copies land where independently trained models' maps do.

    Over seeded random subsets of ``count`` images, each image's value the mean |rho| of ``draws`` of the models
    (as the check averages its seeds), the check's 95% CI: the 95th percentile of its upper bound, and the share of
    subsets it passes (upper bound below ``threshold``) and fails (lower bound at or above it).

    Args:
        values: |rho| per model and image, (models, images).
        count: images of the check.
        draws: models averaged per image (the check's seeds).
        threshold: the threshold the shares are counted at.
    """
    usable = np.flatnonzero(np.isfinite(values).all(axis=0))
    if usable.size < count:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(0)
    bounds = []
    for i in range(subsets):
        images = rng.choice(usable, size=count, replace=False)
        per_image = [values[rng.choice(values.shape[0], size=draws, replace=False), image].mean() for image in images]
        bounds.append(bootstrap_ci(per_image, seed=i, n_boot=2_000))
    lows, highs = np.array(bounds).T
    return float(np.percentile(highs, 95)), float((highs < threshold).mean()), float((lows >= threshold).mean())


def measure(loaded: LoadedModel, paths: Sequence[Path], independent: Sequence[str], noise: Sequence[float],
            seeds: int, threshold: float, check_images: int = 10) -> dict[str, dict[str, tuple[float, ...]]]:
    """{column: {map: (mean over images, 95th (null, randomised) or 5th (positive) percentile over images)}}; the
    column ``"null, the check"`` holds :func:`_null_check` at ``check_images`` images and ``threshold``."""
    model = loaded.model.eval()
    inputs = _inputs(loaded, paths)
    classes, trained = _ranks(model, inputs, None)
    columns: dict[str, dict[str, tuple[float, ...]]] = {}
    if independent:
        runs = []
        for path in independent:
            other = load_model(loaded.name, path).model.eval()
            runs.append(_abs_rho(trained, _ranks(other, inputs, classes)[1]))
        columns["null"] = {key: _stats(v, 95) for key, v in _per_image(runs).items()}
        columns["null, the check"] = {key: _null_check(np.stack([run[key] for run in runs]), check_images,
                                                       min(seeds, len(runs)), threshold) for key in MAPS}
    scores = randomisation_scores(model, inputs, sorted({key.split("@")[0] for key in MAPS}), list(range(seeds)))
    columns["randomised"] = {}
    for key in MAPS:
        step = scores.maps[key][2]
        rho = np.abs(scores.rho[key][:, :, step])
        count = np.isfinite(rho).sum(1)
        per_image = np.where(count > 0, np.nansum(rho, 1) / np.maximum(count, 1), np.nan)
        columns["randomised"][key] = _stats(per_image, 95)
    for level in noise:
        runs = [_abs_rho(trained, _ranks(_noisy(model, level, seed), inputs, classes)[1]) for seed in range(seeds)]
        columns[f"noise {level:g}"] = {key: _stats(v, 5) for key, v in _per_image(runs).items()}
    return columns


def _cell(values: tuple[float, ...] | None) -> str:
    if values is None or not math.isfinite(values[0]):
        return "n/a"
    if len(values) == 3:
        return f"{values[0]:.3f}; {100 * values[1]:.1f}% / {100 * values[2]:.1f}%"
    return f"{values[0]:.3f} ({values[1]:.3f})"


def table(title: str, columns: dict[str, dict[str, tuple[float, ...]]], threshold: float) -> str:
    names = list(columns)
    heads = {"null": "null: independently trained, mean (p95)",
             "null, the check": f"null at the check (10 images): CI upper bound p95; pass / fail at {threshold:g}",
             "randomised": "randomised: the check, mean (p95)"}
    lines = [f"**{title}**", "",
             "| map | " + " | ".join(heads.get(n, f"positive, {n} std: mean (p5)") for n in names) + " |",
             "| --- |" + " --- |" * len(names)]
    for key in MAPS:
        lines.append(f"| `{key}` | " + " | ".join(_cell(columns[n].get(key)) for n in names) + " |")
    return "\n".join(lines)


def threshold_rule(tables: Sequence[dict[str, dict[str, tuple[float, ...]]]], noise: Sequence[float]) -> str:
    """The smallest multiple of 0.1 above every map's null CI upper bound at 10 images (its 95th percentile over
    image subsets); the positive's smallest 5th percentile at the smallest noise beside it."""
    nulls = [cell[0] for columns in tables for cell in columns.get("null, the check", {}).values()
             if math.isfinite(cell[0])]
    if not nulls:
        return "threshold rule: no null measured (pass --independent)"
    upper = max(nulls)
    threshold = math.floor(upper * 10 + 1) / 10
    lowest = f"noise {min(noise):g}"
    positive = min(pair[1] for columns in tables if lowest in columns for pair in columns[lowest].values()
                   if math.isfinite(pair[1]))
    return (f"threshold rule: the smallest multiple of 0.1 above the largest 95th percentile of the null's CI upper "
            f"bound at 10 images ({upper:.3f}): {threshold:.1f}, so that a map as dependent on the parameters as an "
            f"independently trained model's passes with probability at least 95%; the smallest positive 5th "
            f"percentile over images, at {min(noise):g} std noise, is {positive:.3f} "
            f"({'above' if positive > threshold else 'NOT above'} the threshold)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--independent", nargs="*", default=[],
                        help="checkpoints of the embedded architecture trained independently (the null)")
    parser.add_argument("--train", nargs="*", default=[], metavar="SEED:EPOCHS:IMAGES",
                        help="train independent copies first (float32, the training script's recipe)")
    parser.add_argument("--train-out", type=Path, default=Path("/tmp/null"), help="where --train writes them")
    parser.add_argument("--noise", nargs="+", type=float, default=[0.01, 0.05, 0.1],
                        help="noise levels, in units of each parameter tensor's standard deviation")
    parser.add_argument("--seeds", type=int, default=3, help="randomisations and noise draws per image")
    parser.add_argument("--vit-tiny", help=f"checkpoint of {VIT_TINY} (its rows are left out without it)")
    parser.add_argument("--vit-tiny-images", help="folder of photos for the ViT-Ti")
    parser.add_argument("--vit-tiny-count", type=int, default=20, help="the first N photos, sorted by name")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="the threshold the null's pass and fail shares are counted at (default 0.5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    noise = sorted(args.noise)
    started = time.perf_counter()
    independent = list(args.independent)
    for spec in args.train:
        seed, epochs, count = (int(part) for part in spec.split(":"))
        independent.append(str(train_independent(args.train_out, seed, epochs, count)))
    fmnist = load_model(EMBEDDED_MODEL, embedded_checkpoint())
    fmnist_images = sorted(embedded_images().glob("*.png"))
    print(f"embedded model {EMBEDDED_MODEL}: {len(fmnist_images)} sample images; independently trained: "
          f"{', '.join(independent) or 'none'}", file=sys.stderr)
    tables = [measure(fmnist, fmnist_images, independent, noise, args.seeds, args.threshold)]
    print(table(f"{EMBEDDED_MODEL} (the embedded model), {len(fmnist_images)} sample images, "
                f"{len(independent)} independently trained models, {args.seeds} seeds", tables[0], args.threshold))
    if args.vit_tiny and args.vit_tiny_images:
        vit = load_model(VIT_TINY, args.vit_tiny)
        photos = find_images([args.vit_tiny_images])[:args.vit_tiny_count]
        tables.append(measure(vit, [Path(p) for p in photos], [], noise, args.seeds, args.threshold))
        print()
        print(table(f"{VIT_TINY}, the first {len(photos)} photos of {Path(args.vit_tiny_images).name}, "
                    f"{args.seeds} seeds", tables[1], args.threshold))
    print()
    print(threshold_rule(tables, noise))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
