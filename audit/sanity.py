"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"), cascading.

Parameters are randomised from the head down: step 0 is the trained model; step 1 randomises the head and the
final norms; step 1 + j additionally randomises blocks L-1 .. L-j; the last step also randomises the patch
embedding, class/register tokens and the position embedding. Every parameter of a randomised part (attention,
MLP, norms, tokens, embeddings) is replaced by seeded Gaussian noise with that tensor's own mean and standard
deviation, so activations keep their scale. At each step the same image is captured once more (explaining the
trained model's class) and each map is compared with the trained model's map by Spearman rank correlation.

A map that still correlates once every stage it depends on is randomised explains nothing about the model.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .attention import ATTENTION_METHODS, needs_attention
from .capture import capture
from .errors import ImageError
from .images import normalize, prepare_image
from .integrated_gradients import fill_baseline, ig_result, integrated_gradients
from .layout import MAP_STAGE_ENCODER, MAP_STAGE_INPUT
from .maps import compute_maps
from .stats import spearman

__all__ = ["RandomisationCurve", "cascade_steps", "randomisation_curves", "randomisation_record", "spearman",
           "dependency_step"]


def cascade_steps(model: nn.Module) -> list[tuple[str, list[nn.Module | nn.Parameter]]]:
    """The cascade, top down: (label, parts randomised at this step). Step 0 (trained) is not listed."""
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


ACCUMULATED_METHODS = ("rollout", "chefer")  # maps that accumulate the attention of blocks 0..k


def dependency_step(stage: str, depth: int, method: str | None = None) -> int:
    """The cascade step after which every stage a map at ``stage`` depends on is randomised.

    A map at block k reads block k's tokens and the gradient from the head down to them, so it is fully
    randomised once the head and blocks L-1 .. k are (step 1 + L - k); an encoder map needs the head (step 1) and
    every block under the final norm (step 1 + L). ``attention`` and ``attn_gradcam`` at block k read block k's
    attention probabilities (its qkv projection, over the tokens entering it; ``attn_gradcam`` also the gradient
    from the head down to them): step 1 + L - k, and at ``'encoder'`` the last block's (step 2). ``rollout`` and
    ``chefer`` at block k (and at ``'encoder'``) also read the attention of blocks 0 .. k-1, which the top-down
    cascade reaches last: step 1 + L, block 0's. ``ig@input`` reads the whole model: step 2 + L, the embedding's.
    """
    if stage == MAP_STAGE_INPUT:  # Integrated Gradients reads every parameter: the embedding is randomised last
        return 2 + depth
    if method in ACCUMULATED_METHODS:  # the attention of every block from 0 up
        return 1 + depth
    if stage == MAP_STAGE_ENCODER:
        return 2 if method in ATTENTION_METHODS else 1 + depth
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


@dataclass
class RandomisationCurve:
    """Spearman correlation of one map with the trained model's map, per cascade step, averaged over images.

    Attributes:
        method, stage: the map.
        labels: cascade step labels, ``'trained'`` first.
        spearman: mean correlation per step (nan where the map was degenerate on every image).
        dependency_step: the step after which everything the map depends on is randomised.
    """

    method: str
    stage: str
    labels: list[str]
    spearman: list[float]
    dependency_step: int

    @property
    def after_dependencies(self) -> float:
        """The correlation once every stage the map depends on is randomised."""
        return self.spearman[self.dependency_step]


def randomisation_curves(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    targets: Sequence[int] | None,
    methods: Sequence[str],
    seed: int = 0,
    act: str = "gelu",
    baselines: Sequence[torch.Tensor] | None = None,
) -> dict[str, RandomisationCurve]:
    """Cascading randomisation of a copy of ``model``; the model itself is untouched.

    Args:
        model: the trained model.
        images: normalised inputs (C, H, W), on the model's device.
        targets: the class each image explains; None: the trained model's top-1, from the step-0 capture.
        methods: map names (baselines included: they do not depend on the model, which the curve shows).
        seed: seeds the randomisation.
        act: activation of the gradient maps.
        baselines: the normalised fill image of each input, for ``ig`` (left out without them).

    Returns:
        ``{"<method>@<stage>": RandomisationCurve}`` for every map stage.
    """
    work = copy.deepcopy(model).eval()
    steps = cascade_steps(work)
    labels = ["trained"] + [label for label, _ in steps]
    generator = torch.Generator().manual_seed(seed)
    per_step: list[list[dict]] = []
    explained = None if targets is None else list(targets)
    for step in range(len(labels)):
        if step > 0:
            _randomise(steps[step - 1][1], generator)
        maps, classes = [], []
        for index, image in enumerate(images):
            cap = capture(work, image, target=None if explained is None else explained[index],
                          attention=needs_attention(methods))
            classes.append(cap.target)
            step_maps = compute_maps(work, cap, methods=methods, act=act, seed=seed, image=f"sanity-{index}")
            if "ig" in methods and baselines is not None:
                result = ig_result(integrated_gradients(work, image, baselines[index], cap.target, cap.layout))
                step_maps[result.key] = result
            maps.append(step_maps)
        explained = classes  # every step explains the classes of step 0, the trained model
        per_step.append(maps)

    depth = len(model.blocks)
    curves = {}
    for key, first in per_step[0][0].items():
        if first.values is None:
            continue
        values = []
        for maps in per_step:
            scores = [spearman(trained[key].values, current[key].values)
                      for trained, current in zip(per_step[0], maps)
                      if trained[key].rankable and current[key].values is not None]
            scores = [s for s in scores if np.isfinite(s)]
            values.append(float(np.mean(scores)) if scores else float("nan"))
        curves[key] = RandomisationCurve(first.method, first.stage, labels, values,
                                         dependency_step(first.stage, depth, first.method))
    return curves


RULE = ("each parameter of a randomised part replaced by seeded Gaussian noise with the trained tensor's mean and "
        "std, cascading from the head down; Spearman rank correlation with the trained model's map, averaged over the "
        "images")


def randomisation_record(loaded, model_id: str, images: Sequence[tuple[str, str]], settings, config,
                         device: str) -> dict[str, Any]:
    """The results file's record of the randomisation check of one model, on its first
    ``settings.randomisation_images`` readable images of ``images`` (``(image id, path)`` pairs)."""
    model = loaded.model.to(device)
    inputs, baselines, names = [], [], []
    for image_id, path in images:
        if len(inputs) == settings.randomisation_images:
            break
        try:
            prepared = prepare_image(path, loaded.data_config, name=image_id)
        except ImageError:
            continue
        pixel = prepared.pixel.to(device)
        inputs.append(normalize(pixel, loaded.mean, loaded.std))
        if "ig" in settings.methods:  # ig's path starts from the fill image
            baselines.append(normalize(fill_baseline(pixel, config, loaded.mean), loaded.mean, loaded.std))
        names.append(image_id)
    curves = randomisation_curves(model, inputs, None, settings.methods, seed=settings.seed, act=settings.act,
                                  baselines=baselines or None)
    return {"model": loaded.name, "model_id": model_id, "images": names, "threshold": settings.randomisation_threshold,
            "rule": RULE,
            "curves": {key: {**asdict(c), "after_dependencies": c.after_dependencies} for key, c in curves.items()}}
