"""The whole audit of one image, and of an image set: capture, restore, map, perturb, summarise.

A bad image does not stop an image set: its error is recorded (one line naming it) and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from ..errors import AuditError, NonFiniteError
from ..maps import DEFAULT_METHODS, MapResult, compute_maps, needs_attention, registry
from ..maps.registry import InputContext
from ..model.capture import Capture, capture
from ..model.images import PreparedImage, normalize, prepare_image
from ..model.layout import TokenLayout, normalize_stage
from ..model.load import LoadedModel
from ..model.restore import PatchInverse, Restoration, restore
from .curves import Curves, CurveWork, PerturbationConfig, batch_size_for, curve_work, evaluate_curve_work
from .fills import fill_baseline
from .stats import N_BOOTSTRAP, Summary, summarize

__all__ = ["ImageAudit", "audit_image", "audit_group", "audit_images", "input_context", "input_map",
           "summarize_audits", "one_thread", "finite_stages", "check_capture_finite"]


@dataclass
class ImageAudit:
    """Everything measured on one image.

    Attributes:
        image: the prepared image (name, source, pixel tensor).
        target: the explained class; ``prob``: its softmax probability on the clean image.
        label: the image's true class where one was given (``score='top1'`` scores against it).
        maps: ``{"<method>@<stage>": MapResult}`` for every map stage.
        curves: ``{"<method>@<stage>": Curves}`` for the rankable maps of the measured stages.
        restorations: ``{reading: {stage: Restoration}}``.
        removed_prob: probability of the class on the fully removed (all-fill) image.
        batch_size: perturbed images per forward of the curves (``'auto'`` resolved).
        error: set instead of the rest when the image could not be audited.
    """

    image: PreparedImage | None
    source: str
    target: int = -1
    label: int | None = None
    prob: float = float("nan")
    maps: dict[str, MapResult] = field(default_factory=dict)
    curves: dict[str, Curves] = field(default_factory=dict)
    restorations: dict[str, dict[str, Restoration]] = field(default_factory=dict)
    removed_prob: float = float("nan")
    batch_size: int | None = None
    capture: Capture | None = field(default=None, repr=False)
    error: str | None = None


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed torch work on one CPU thread, then restore the thread count.

    An image's maps, restorations and checks are hundreds of operations on tensors of a few thousand values: on
    several threads each pays for waking and joining the others, which costs more than the work (15-40x more on
    a busy 2-core machine). The model's passes keep every thread.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def input_context(model: nn.Module, pixel: torch.Tensor, config: PerturbationConfig, mean: tuple[float, ...],
                  std: tuple[float, ...], target: int, layout: TokenLayout) -> InputContext:
    """What the input methods (``ig@input``) compute from for a pixel-space image: the image and the run's fill
    baseline (:func:`audit.measure.fills.fill_baseline`), both normalised, and the run's batch size for backward
    passes."""
    z = normalize(pixel, mean, std)
    z0 = normalize(fill_baseline(pixel, config.fill, mean), mean, std)
    batch_size = batch_size_for(config, model, cast("tuple[int, int]", tuple(pixel.shape[-2:])), backward=True)
    return InputContext(model, z, z0, target, layout, batch_size)


def input_map(method: str, model: nn.Module, pixel: torch.Tensor, config: PerturbationConfig,
              mean: tuple[float, ...], std: tuple[float, ...], target: int, layout: TokenLayout) -> torch.Tensor:
    """An input method's map (``ig@input``) of a pixel-space image, raw (see :func:`input_context`)."""
    return registry.get(method).compute(input_context(model, pixel, config, mean, std, target, layout))


def audit_image(
    loaded: LoadedModel,
    image: str | os.PathLike[str] | PreparedImage | Any,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    stages: Iterable[int | str] | None = None,
    act: str = "gelu",
    config: PerturbationConfig | None = None,
    seed: int = 0,
    target: int | None = None,
    label: int | None = None,
    device: str | torch.device = "cpu",
    keep_capture: bool = False,
    inverse: PatchInverse | None = None,
    progress: Callable[[int, int], None] | None = None,
    curves_for: Collection[str] | None = None,
) -> ImageAudit:
    """Audit one image: one forward+backward capture, both restorations, every map, MoRF/LeRF curves.

    Args:
        loaded: from :func:`audit.model.load.load_model`.
        image: a path, a PIL image / uint8 array, or an already :class:`PreparedImage`.
        methods: maps to compute (names from :func:`audit.maps.registry.names`); computed at every stage (``ig``: at the
            input, and always measured).
        stages: the stages whose maps are scored by MoRF/LeRF (block indices and/or ``'encoder'``); default all.
        act: activation of the gradient maps.
        config: the MoRF/LeRF recipe.
        seed: seed of the ``random`` baseline.
        target: class to explain; default the clean image's top-1.
        label: the image's true class, which ``config.score='top1'`` scores against (default: the explained class).
        device: where the model runs.
        keep_capture: keep the raw tokens and gradients in the result (memory: 2 x stages x N x D floats).
        inverse: a precomputed :class:`PatchInverse` of the model (saves its pseudo-inverse per image).
        progress: called with (perturbed images done, total) after each batch of the curves.
        curves_for: only these maps (``"<method>@<stage>"``) of the measured stages get curves; default all.
    """
    result = audit_group(loaded, [image], [label], config=config, device=device, keep_capture=keep_capture,
                         inverse=inverse, progress=progress, methods=methods, stages=stages, act=act, seed=seed,
                         target=target, curves_for=curves_for)[0]
    if isinstance(result, Exception):
        raise result
    return result


def audit_group(
    loaded: LoadedModel,
    images: Sequence[str | os.PathLike[str] | PreparedImage | Any],
    labels: Sequence[int | None] | None = None,
    *,
    config: PerturbationConfig | None = None,
    device: str | torch.device = "cpu",
    keep_capture: bool = False,
    inverse: PatchInverse | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> list[ImageAudit | Exception]:
    """Audit several images whose perturbed copies share the curves' forward passes (batches across images).

    Each image is captured, mapped and restored on its own (:func:`audit_image` is a group of one); only the curves'
    batches are shared, so a batch holds as many perturbed images as the batch size allows whatever one image needs. The
    numbers equal :func:`audit_image`'s up to the float rounding of a different batch composition.

    Args:
        images: the images, as for :func:`audit_image`; ``labels``: each one's true class (default: none).
        **options: as for :func:`audit_image` (``methods``, ``stages``, ``act``, ``seed``, ``curves_for``).

    Returns:
        One entry per image, in order: its :class:`ImageAudit`, or the exception that stopped it (the others go on).
    """
    config = config or PerturbationConfig()
    device = torch.device(device)
    labels = list(labels) if labels is not None else [None] * len(images)
    started: list[_Started | Exception] = []
    for image, label in zip(images, labels):
        try:
            started.append(_start(loaded, image, config=config, device=device, label=label, **options))
        except Exception as err:  # noqa: BLE001 - this image's error; the group goes on
            started.append(err)
    live = [s for s in started if isinstance(s, _Started)]
    if not live:
        return cast("list[ImageAudit | Exception]", started)  # every one an Exception
    batch_size = batch_size_for(config, loaded.model, cast("tuple[int, int]", tuple(live[0].pixel.shape[1:])))
    evaluate_curve_work(loaded.model, [s.work for s in live], batch_size, progress)
    done: list[ImageAudit | Exception] = []
    for item in started:
        try:
            done.append(item if isinstance(item, Exception) else
                        _finish(loaded, item, batch_size, keep_capture=keep_capture, inverse=inverse))
        except Exception as err:  # noqa: BLE001
            done.append(err)
    return done


@dataclass
class _Started:
    """An image captured and mapped, its curves' perturbed images waiting for the model."""

    prepared: PreparedImage
    pixel: torch.Tensor  # on the device
    cap: Capture
    maps: dict[str, MapResult]
    work: CurveWork
    label: int | None


def _start(loaded: LoadedModel, image: Any, *, methods: Sequence[str] = DEFAULT_METHODS,
           stages: Iterable[int | str] | None = None, act: str = "gelu", config: PerturbationConfig,
           seed: int = 0, target: int | None = None, label: int | None = None, device: torch.device,
           curves_for: Collection[str] | None = None) -> _Started:
    """Capture, check, map (``ig`` included) and queue the curves' perturbed images of one image."""
    prepared = image if isinstance(image, PreparedImage) else prepare_image(image, loaded.data_config)
    model = loaded.model.to(device)
    pixel = prepared.pixel.to(device)
    cap = capture(model, normalize(pixel, loaded.mean, loaded.std), target=target,
                  attention=needs_attention(methods))
    with one_thread():
        check_capture_finite(cap, prepared.source)
        maps = compute_maps(model, cap, methods=methods, act=act, seed=seed, image=prepared.name)
    measured = set(cap.map_stages if stages is None else (normalize_stage(s, cap.layout.depth) for s in stages))
    inputs = registry.input_methods(methods)  # one stage, the input: measured whenever the map is asked for
    if inputs:
        ctx = input_context(model, pixel, config, loaded.mean, loaded.std, cap.target, cap.layout)
        for method in inputs:
            result = registry.compute_input_map(method, ctx)
            maps[result.key] = result
            measured.add(result.stage)
    scored = {key: cast(torch.Tensor, m.values) for key, m in maps.items()  # rankable: values not None
              if m.stage in measured and m.rankable and (curves_for is None or key in curves_for)}
    work = curve_work(pixel, scored, cap.target, loaded.mean, loaded.std, patch=cap.layout.patch_size,
                      grid=cap.layout.grid, config=config, seed=seed, label=label, device=device)
    return _Started(prepared, pixel, cap, maps, work, label)


def _finish(loaded: LoadedModel, started: _Started, batch_size: int, keep_capture: bool = False,
            inverse: PatchInverse | None = None) -> ImageAudit:
    """The curves read off the evaluated work, both restorations, and the image's audit."""
    curves, shared = started.work.curves()
    cap, prepared = started.cap, started.prepared
    with one_thread():
        restorations = restore(cap, loaded.model, prepared.pixel, loaded.mean, loaded.std, inverse=inverse)
    return ImageAudit(
        image=prepared,
        source=prepared.source,
        target=cap.target,
        label=started.label,
        prob=cap.prob,
        maps=started.maps,
        curves=curves,
        restorations=restorations,
        removed_prob=shared["removed"],
        batch_size=batch_size,
        capture=cap if keep_capture else None,
    )


def finite_stages(cap: Capture) -> dict[str, tuple[bool, bool]]:
    """Stage -> (its tokens are finite, its gradients are finite), computed once per capture."""
    if "finite" not in cap.memo:
        cap.memo["finite"] = {stage: (bool(torch.isfinite(cap.tokens[stage]).all()),
                                      bool(torch.isfinite(cap.grads[stage]).all())) for stage in cap.stages}
    return cap.memo["finite"]


def check_capture_finite(cap: Capture, source: str) -> None:
    """Stop an image whose tokens, gradients or logits are not finite, naming the first stage where they are not."""
    finite = finite_stages(cap)
    tokens = next((stage for stage in cap.stages if not finite[stage][0]), None)
    grads = next((stage for stage in cap.stages if not finite[stage][1]), None)
    if tokens is None and grads is None and bool(torch.isfinite(cap.logits).all()):
        return
    where = (f"tokens from stage {tokens} on" if tokens is not None
             else f"gradients (first at stage {grads})" if grads is not None else "logits")
    raise NonFiniteError(f"image {source!r}: the model's activations are not finite (NaN or infinity in its {where}), "
                         "so nothing can be measured on this image; check the checkpoint for weights that overflow")


def audit_images(
    loaded: LoadedModel,
    images: Iterable[str | os.PathLike[str] | PreparedImage],
    on_image: Callable[[int, ImageAudit], None] | None = None,
    **options: Any,
) -> list[ImageAudit]:
    """Audit many images with the same options; an image that fails is recorded with its one-line error.

    Args:
        loaded: the model.
        images: paths or prepared images.
        on_image: called with (index, result) after each image, e.g. to print progress.
        **options: as for :func:`audit_image`.
    """
    options.setdefault("inverse", PatchInverse(loaded.model))
    results = []
    for index, image in enumerate(images):
        source = image.source if isinstance(image, PreparedImage) else os.fspath(image)
        try:
            result = audit_image(loaded, image, **options)
        except AuditError as err:
            result = ImageAudit(image=None, source=source, error=str(err))
        results.append(result)
        if on_image is not None:
            on_image(index, result)
    return results


def summarize_audits(results: Iterable[ImageAudit], seed: int = 0, n_boot: int = N_BOOTSTRAP) -> list[Summary]:
    """Mean MoRF AUC, LeRF AUC and ABPC per (method, stage) over the audited images, with bootstrap CIs."""
    records = []
    for result in results:
        for key, curve in result.curves.items():
            method, stage = key.split("@", 1)
            records.append((method, stage, curve.morf_auc, curve.lerf_auc))
    return summarize(records, seed=seed, n_boot=n_boot)
