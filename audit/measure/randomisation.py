"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"), cascading.

Parameters are randomised from the head down: step 0 is the trained model; step 1 randomises the head and the
final norms; step 1 + j additionally randomises blocks L-1 .. L-j; the last step also randomises the patch
embedding, class/register tokens and the position embedding. Every parameter of a randomised part (attention,
MLP, norms, tokens, embeddings) is replaced by seeded Gaussian noise with that tensor's own mean and standard
deviation, so activations keep their scale. At each step every image is captured once more (explaining the
trained model's class) and each map is compared with the trained model's map by Spearman rank correlation rho.

The check runs on ``randomisation_images`` images chosen round-robin over classes (the trained model's top-1, or
the true class from ``--labels``) and ``randomisation_seeds`` randomisations (seeds ``seed``, ``seed + 1``, ...).
Its statistic is a map's mean over images of |rho| at the map's dependency step (per image, the mean over seeds):
a map at rho = -0.8 follows the trained model's map as closely as one at +0.8. The 95% bootstrap CI of that mean
over images decides: pass when its upper bound is below the threshold, fail when its lower bound is at or above
it, otherwise inconclusive. A map that still correlates once every stage it depends on is randomised explains
nothing about the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from ..errors import ImageError
from ..maps import MapResult, compute_maps, needs_attention, registry
from ..maps.registry import InputContext
from ..model.capture import capture_batch
from ..model.images import normalize, prepare_image
from ..model.layout import MAP_STAGE_ENCODER, MAP_STAGE_INPUT
from ..ranges import SEED_MAX
from .fills import fill_baseline
from .image_audit import one_thread
from .stats import bootstrap_ci, spearman

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

__all__ = ["RandomisationScores", "cascade_steps", "choose_images", "dependency_step", "map_verdict",
           "randomisation_record", "randomisation_scores", "randomisation_seeds", "round_robin", "spearman",
           "summarise_map", "unit_ranks"]


def cascade_steps(model: nn.Module) -> list[tuple[str, list[nn.Module | nn.Parameter]]]:
    """The cascade, top down: (label, parts randomised at this step). Step 0 (trained) is not listed."""
    model = cast("VisionTransformer", model)  # a loaded model (or its copy): check_supported let it through
    depth = len(model.blocks)
    head = [model.head, model.norm, model.fc_norm]
    head += [m for m in (getattr(model, "head_dist", None), getattr(model, "attn_pool", None)) if m is not None]
    steps: list[tuple[str, list]] = [("head", head)]
    for index in reversed(range(depth)):
        steps.append((f"block {index}", [model.blocks[index]]))
    embedding: list = [model.patch_embed, model.norm_pre]
    for name in ("cls_token", "reg_token", "dist_token", "pos_embed"):
        param = getattr(model, name, None)
        if isinstance(param, nn.Parameter):
            embedding.append(param)
    steps.append(("embedding", embedding))
    return steps


def dependency_step(stage: str, depth: int, method: str | None = None) -> int:
    """The cascade step after which every stage a map at ``stage`` depends on is randomised.

    A map at block k reads block k's tokens and the gradient from the head down to them, so it is fully
    randomised once the head and blocks L-1 .. k are (step 1 + L - k); an encoder map needs the head (step 1) and
    every block under the final norm (step 1 + L). ``attention`` and ``attn_gradcam`` at block k read block k's
    attention probabilities (its qkv projection, over the tokens entering it; ``attn_gradcam`` also the gradient
    from the head down to them): step 1 + L - k, and at ``'encoder'`` the last block's (step 2). ``rollout`` and
    ``chefer`` at block k (and at ``'encoder'``) also read the attention of blocks 0 .. k-1, which the top-down
    cascade reaches last: step 1 + L, block 0's. ``ig@input`` reads the whole model: step 2 + L, the embedding's.
    What a method reads is declared with it (:attr:`audit.maps.registry.MapMethod.reads`).
    """
    reads = registry.get(method).reads if method is not None else "block"
    if stage == MAP_STAGE_INPUT or reads == "model":  # every parameter: the embedding is randomised last
        return 2 + depth
    if reads == "attention_up_to":  # the attention of every block from 0 up
        return 1 + depth
    if stage == MAP_STAGE_ENCODER:
        return 2 if reads == "attention" else 1 + depth
    return 1 + depth - int(stage)


@torch.no_grad()
def _randomise(parts: Iterable[nn.Module | nn.Parameter], generator: torch.Generator) -> None:
    params = []
    for part in parts:
        params.extend([part] if isinstance(part, nn.Parameter) else list(part.parameters()))
    for param in params:
        data = param.data
        std = float(data.float().std()) if data.numel() > 1 else 0.0
        noise = torch.randn(data.shape, generator=generator, dtype=torch.float32) * (std if std > 0 else 0.02)
        param.data.copy_((noise + float(data.float().mean())).to(data.dtype))


def randomisation_seeds(seed: int, count: int) -> list[int]:
    """The seeds of ``count`` randomisations: ``seed``, ``seed + 1``, ... (wrapping past 2^32 - 1 to 0)."""
    return [(seed + i) % (SEED_MAX + 1) for i in range(count)]


def round_robin(classes: Sequence[int], count: int) -> list[int]:
    """Indices of up to ``count`` items taken round-robin over their classes.

    Classes are visited in the order of their first item, each time taking that class's next item in order: the
    first item of every class, then the second, and so on. Deterministic for a given order.
    """
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(classes):
        by_class.setdefault(label, []).append(index)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < count and any(rank < len(items) for items in by_class.values()):
        for items in by_class.values():
            if rank < len(items) and len(chosen) < count:
                chosen.append(items[rank])
        rank += 1
    return chosen


def choose_images(
    images: Sequence[tuple[str, str]], count: int, read: Callable[[str, str], torch.Tensor],
    class_of: Callable[[str, torch.Tensor], int],
) -> list[tuple[str, torch.Tensor, int]]:
    """Up to ``count`` images spread over classes (:func:`round_robin`), in the order given.

    Images are read in order until ``count`` classes are seen (or none is left): the first image of each of the
    first ``count`` classes is then what a round-robin over all the images would take. An image that ``read`` or
    ``class_of`` rejects with :class:`~audit.errors.ImageError` is passed over.

    Args:
        images: (image id, path) pairs.
        count: how many images to choose.
        read: (image id, path) -> the image as the model's input.
        class_of: (path, image) -> the image's class (its true class, or the trained model's top-1).

    Returns:
        (image id, image, class) of each chosen image, in round-robin order.
    """
    seen: list[tuple[str, torch.Tensor | None, int]] = []
    per_class: dict[int, int] = {}
    for image_id, path in images:
        if len(per_class) >= count:
            break
        try:
            image = read(image_id, path)
            label = int(class_of(path, image))
        except ImageError:
            continue
        per_class[label] = per_class.get(label, 0) + 1
        seen.append((image_id, image if per_class[label] <= count else None, label))  # past count: never taken
    picked = round_robin([label for _, _, label in seen], count)
    return [seen[i] for i in picked]  # type: ignore[misc]


@dataclass
class RandomisationScores:
    """Spearman rho of each map with the trained model's map, per image, seed and cascade step.

    Attributes:
        labels: cascade step labels, ``'trained'`` first.
        classes: the class each image explains (the trained model's top-1).
        rho: ``"<method>@<stage>"`` -> array (images, seeds, steps); nan where either map is not rankable or the
            step was not computed.
        maps: ``"<method>@<stage>"`` -> (method, stage, dependency step).
    """

    labels: list[str]
    classes: list[int]
    rho: dict[str, np.ndarray]
    maps: dict[str, tuple[str, str, int]]


BATCH_IMAGES = 5  # images captured together: one forward and backward per step for up to this many images


def _maps_of(model: nn.Module, images: Sequence[torch.Tensor], targets: Sequence[int | None], methods: Sequence[str],
             act: str, map_seed: int, first: int, baselines: Sequence[torch.Tensor] | None,
             ) -> tuple[list[int], list[dict[str, MapResult]]]:
    """The explained class and the maps of each image (``sanity-<index>``, counting from ``first``)."""
    caps = capture_batch(model, torch.stack(list(images)), targets, attention=needs_attention(methods))
    out = []
    for offset, cap in enumerate(caps):
        with one_thread():  # small tensors: see audit.measure.image_audit.one_thread
            maps = compute_maps(model, cap, methods=methods, act=act, seed=map_seed, image=f"sanity-{first + offset}")
        if baselines is not None:
            ctx = InputContext(model, images[offset], baselines[offset], cap.target, cap.layout)
            for method in registry.input_methods(methods):
                result = registry.compute_input_map(method, ctx)
                maps[result.key] = result
        out.append(maps)
    return [cap.target for cap in caps], out


def unit_ranks(values: torch.Tensor) -> np.ndarray | None:
    """Average ranks (ties share their mean rank), centred and scaled to unit norm; None when constant or not
    finite. The dot product of two is their Spearman correlation (:func:`audit.measure.stats.spearman`)."""
    x = values.detach().cpu().double().numpy().ravel()
    if not np.isfinite(x).all():
        return None
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts + 1) / 2.0)[inverse.ravel()]
    ranks -= ranks.mean()
    norm = float(np.sqrt((ranks * ranks).sum()))
    return ranks / norm if norm > 0 else None


def randomisation_scores(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    methods: Sequence[str],
    seeds: Sequence[int],
    act: str = "gelu",
    map_seed: int = 0,
    baselines: Sequence[torch.Tensor] | None = None,
) -> RandomisationScores:
    """Cascading randomisation of a copy of ``model`` once per seed; the model itself is untouched.

    The trained model's maps are computed once per image (explaining its top-1); each seed then randomises a fresh
    copy step by step and compares every map of every image with the trained one. Images are captured
    :data:`BATCH_IMAGES` at a time. ``ig@input`` (33 passes a map) is compared at every step for the first seed
    and only at its dependency step (the last) for the others.

    Args:
        model: the trained model.
        images: normalised inputs (C, H, W), on the model's device.
        methods: map names (baselines included: they do not depend on the model, which the curve shows).
        seeds: one randomisation per seed.
        act: activation of the gradient maps.
        map_seed: seed of the ``random`` baseline map.
        baselines: the normalised fill image of each input, for the input methods (``ig``; left out without them).
    """
    work = copy.deepcopy(model).eval()
    trained_state = {name: value.detach().clone() for name, value in work.state_dict().items()}
    steps = cascade_steps(work)
    labels = ["trained"] + [label for label, _ in steps]
    depth = len(cast("VisionTransformer", model).blocks)  # a loaded model: check_supported let it through
    use_ig = bool(registry.input_methods(methods)) and baselines is not None
    batches = [range(start, min(start + BATCH_IMAGES, len(images))) for start in range(0, len(images), BATCH_IMAGES)]

    def maps_of(batch: range, targets: Sequence[int | None], with_ig: bool):
        return _maps_of(work, [images[i] for i in batch], targets, methods, act, map_seed, batch[0],
                        [baselines[i] for i in batch] if with_ig and baselines is not None else None)

    classes: list[int] = []
    trained: list[dict[str, MapResult]] = []
    for batch in batches:
        targets, maps = maps_of(batch, [None] * len(batch), use_ig)
        classes += targets
        trained += maps
    keys = [key for key, result in trained[0].items() if result.values is not None] if trained else []
    maps_info = {key: (trained[0][key].method, trained[0][key].stage,
                       dependency_step(trained[0][key].stage, depth, trained[0][key].method)) for key in keys}
    ranked = [{key: unit_ranks(cast(torch.Tensor, maps[key].values)) if maps[key].rankable else None for key in keys}
              for maps in trained]
    rho = {key: np.full((len(images), len(seeds), len(labels)), np.nan) for key in keys}
    for key in keys:
        for i, reference in enumerate(ranked):
            if reference[key] is not None:
                rho[key][i, :, 0] = 1.0  # the trained map against itself
    ig_step = dependency_step(MAP_STAGE_INPUT, depth)
    for s, seed in enumerate(seeds):
        work.load_state_dict(trained_state)
        generator = torch.Generator().manual_seed(seed)
        for step in range(1, len(labels)):
            _randomise(steps[step - 1][1], generator)
            for batch in batches:
                _, step_maps = maps_of(batch, [classes[i] for i in batch], use_ig and (s == 0 or step == ig_step))
                for i, maps in zip(batch, step_maps):
                    for key in keys:
                        after = maps.get(key)
                        if ranked[i][key] is None or after is None or after.values is None:
                            continue
                        current = unit_ranks(after.values)
                        if current is not None:
                            rho[key][i, s, step] = float(ranked[i][key] @ current)
    return RandomisationScores(labels, classes, rho, maps_info)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` of the finite values; nan where there are none."""
    finite = np.isfinite(values)
    count = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


VERDICTS = ("pass", "fail", "inconclusive")


def map_verdict(low: float, high: float, threshold: float) -> str:
    """pass when the CI's upper bound is below the threshold, fail when its lower bound is at or above it, else
    (or with no CI: nan) inconclusive. An infinite bound (too few images for the interval) decides nothing."""
    if np.isnan(low) or np.isnan(high):
        return "inconclusive"
    if high < threshold:
        return "pass"
    if low >= threshold:
        return "fail"
    return "inconclusive"


def summarise_map(key: str, rho: np.ndarray, step: int, label: str, threshold: float, seed: int = 0,
                  ) -> dict[str, Any]:
    """The statistic, CI, sign and verdict of one map from its rho (images, seeds, steps) at ``step``.

    Per image the mean over seeds of |rho| (and of rho); the statistic is their mean over the images with a
    finite value, its 95% CI the project's bootstrap over those images (seeded by ``seed``).
    """
    per_image_abs = _nanmean(np.abs(rho[:, :, step]), axis=1)
    per_image_signed = _nanmean(rho[:, :, step], axis=1)
    ok = np.isfinite(per_image_abs)
    values, signed = per_image_abs[ok], per_image_signed[ok]
    n, n_seeds = int(values.size), int(rho.shape[1])
    curve = _nanmean(_nanmean(np.abs(rho), axis=1), axis=0)
    record: dict[str, Any] = {
        "spearman": [float(v) for v in curve],
        "abs_spearman": float(values.mean()) if n else float("nan"),
        "ci95": list(bootstrap_ci(values, seed=seed)) if n else [float("nan"), float("nan")],
        "signed_spearman": float(signed.mean()) if n else float("nan"),
        "negative_images": int((signed < 0).sum()),
        "n_images": n,
        "image_abs_spearman": [float(v) if np.isfinite(v) else None for v in per_image_abs],
    }
    if not n:
        record.update(verdict="inconclusive", reason=(f"{key}: no rankable map to compare once randomised down to "
                                                      f"{label} (degenerate on the {rho.shape[0]} images used)"))
        return record
    low, high = record["ci95"]
    verdict = map_verdict(low, high, threshold)
    meaning = {"pass": "below the threshold: the map depends on the parameters",
               "fail": "at or above the threshold: the map does not depend on the model's parameters",
               "inconclusive": "the CI straddles the threshold"}[verdict]
    if verdict == "inconclusive" and not (np.isfinite(low) and np.isfinite(high)):
        meaning = f"the CI is unbounded: {n} image(s) are too few (or their values too tied) to decide"
    record.update(verdict=verdict, reason=(
        f"{key}: mean |Spearman| {record['abs_spearman']:.3f} [95% CI {low:.3f}, {high:.3f}] with the trained "
        f"model's map after randomising down to {label}, threshold {threshold:g}: {meaning}; signed mean "
        f"{record['signed_spearman']:+.3f}, {record['negative_images']} of {n} images negative; {n} images x "
        f"{n_seeds} seeds"))
    return record


RULE = ("each parameter of a randomised part replaced by seeded Gaussian noise with the trained tensor's mean and "
        "std, cascading from the head down, once per seed; per map, image and seed the Spearman rank correlation rho "
        "with the trained model's map; statistic: the mean over images of |rho| (per image the mean over seeds) at "
        "the map's dependency step, with its 95% bootstrap CI over images; pass when the CI is below the threshold, "
        "fail when at or above it, else inconclusive; curves: the same mean |rho| at every step (ig@input: the "
        "first seed only before its dependency step)")


def randomisation_record(loaded, model_id: str, images: Sequence[tuple[str, str]], settings, config,
                         device: str, labels: Callable[[str, int], int] | None = None) -> dict[str, Any]:
    """The results file's record of the randomisation check of one model.

    Args:
        loaded: the :class:`~audit.model.load.LoadedModel`.
        model_id: its id in the run.
        images: ``(image id, path)`` pairs; ``settings.randomisation_images`` of them are chosen round-robin over
            classes (:func:`choose_images`).
        settings: the run's settings (methods, act, seed, randomisation_images/seeds/threshold).
        config: the perturbation recipe (the fill of ``ig``'s baseline).
        device: where the model runs.
        labels: ``(path, num_classes) -> true class`` (``--labels``); without it the trained model's top-1.
    """
    model = loaded.model.to(device)

    def read(image_id: str, path: str) -> torch.Tensor:
        return prepare_image(path, loaded.data_config, name=image_id).pixel.to(device)

    class_of: Callable[[str, torch.Tensor], int]
    if labels is not None:
        def class_of(path: str, _pixel: torch.Tensor) -> int:
            return labels(path, loaded.num_classes)
    else:
        @torch.no_grad()
        def class_of(_path: str, pixel: torch.Tensor) -> int:
            return int(model.eval()(normalize(pixel, loaded.mean, loaded.std)[None])[0].argmax())

    chosen = choose_images(images, settings.randomisation_images, read, class_of)
    inputs = [normalize(pixel, loaded.mean, loaded.std) for _, pixel, _ in chosen]
    baselines = None
    if registry.input_methods(settings.methods):  # an input method's path starts from the fill image
        baselines = [normalize(fill_baseline(pixel, config.fill, loaded.mean), loaded.mean, loaded.std)
                     for _, pixel, _ in chosen]
    seeds = randomisation_seeds(settings.seed, settings.randomisation_seeds)
    scores = randomisation_scores(model, inputs, settings.methods, seeds, act=settings.act, map_seed=settings.seed,
                                  baselines=baselines)
    threshold = settings.randomisation_threshold
    curves = {}
    for key, (method, stage, step) in scores.maps.items():
        curves[key] = {"method": method, "stage": stage, "labels": scores.labels, "dependency_step": step,
                       **summarise_map(key, scores.rho[key], step, scores.labels[step], threshold, settings.seed)}
    return {"model": loaded.name, "model_id": model_id, "images": [image_id for image_id, _, _ in chosen],
            "classes": [label for _, _, label in chosen], "classes_from": "labels" if labels else "top-1",
            "explained": scores.classes, "seeds": seeds, "threshold": threshold, "rule": RULE, "curves": curves}
