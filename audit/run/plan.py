"""What a run measures and gates on each model: the stages of its curves, its gated maps and every map's key.

Worked out from the settings and the model before any check runs, so that a setting the model cannot take (a block
it does not have, a gated stage not measured, more steps than pixels) is a usage error naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import torch

from ..config.settings import AuditSettings
from ..maps import registry
from ..measure.curves import AUTO_BATCH, PerturbationConfig, amp_context, batch_size_for, max_steps, perturbed_copies
from ..model.layout import MAP_STAGE_INPUT, normalize_stage, stage_names
from ..model.load import LoadedModel
from ..ranges import IMAGE_BATCH_MAX

__all__ = ["AUTO", "ModelPlan", "auto_image_batch", "forwards_per_image", "map_keys", "plan_lines", "plan_model",
           "time_forwards"]

AUTO = "auto"  # --layers auto: with gates, curves for the gated maps and random at their stages only


@dataclass(frozen=True)
class ModelPlan:
    """One model's plan.

    Attributes:
        measured: the stages whose maps get MoRF/LeRF curves (``input`` whenever ``ig`` gets curves).
        gates: the gated (method, stage) pairs, stages in canonical form.
        curves_for: the maps (``"<method>@<stage>"``) of the measured stages that get curves; None: every rankable
            one. Under ``--layers auto`` with gates: the gated maps, ``random`` at their stages, and every map of a
            stage ``--layers`` names besides ``auto``.
    """

    measured: list[str]
    gates: list[tuple[str, str]]
    curves_for: list[str] | None = None

    def rule(self) -> str:
        """One line saying which maps get curves (the run's header prints it)."""
        if self.curves_for is None:
            return f"curves for every map at stages {', '.join(self.measured)}"
        return (f"curves for the gated maps and random at their stages only: {', '.join(self.curves_for)} "
                "(--layers all or a list of stages measures more)")


def plan_model(settings: AuditSettings, loaded: LoadedModel) -> ModelPlan:
    """The stages measured and gated for one model.

    Raises:
        ValueError: a stage the model does not have, a gate on a stage that is not measured or that its map does not
            have, or more removal steps than the model's input has units.
    """
    depth = loaded.layout.depth
    auto = AUTO in settings.layers and bool(settings.gate)
    listed = [s for s in settings.layers if s != AUTO]
    if "all" in settings.layers or (AUTO in settings.layers and not settings.gate):
        listed = stage_names(depth)
    try:
        explicit = list(dict.fromkeys(normalize_stage(s, depth) for s in listed))
        gates = [(m, normalize_stage(s, depth)) for m, s in settings.gated()]
    except ValueError as err:
        raise ValueError(f"{err} (model {loaded.name!r})") from None
    curves_for = None
    measured = explicit
    if auto:
        gated_stages = [s for _, s in gates if s != MAP_STAGE_INPUT]
        measured = list(dict.fromkeys(explicit + gated_stages + [s for _, s in gates if s == MAP_STAGE_INPUT]))
        keys = [f"{m}@{s}" for m, s in gates]
        keys += [f"random@{s}" for s in gated_stages if "random" in settings.methods]
        keys += [f"{m}@{s}" for m, s in map_keys(settings.methods, depth) if s in explicit]
        curves_for = list(dict.fromkeys(keys))
    inputs = registry.names(stages="input")
    wrong = [f"{m}@{s}" for m, s in gates if (m in inputs) != (s == MAP_STAGE_INPUT)]
    if wrong:
        raise ValueError(f"gate: {', '.join(wrong)}: 'input' is the one stage of {', '.join(inputs)} and a stage of "
                         "no other map")
    if not auto and registry.input_methods(settings.methods) and MAP_STAGE_INPUT not in measured:
        measured.append(MAP_STAGE_INPUT)  # measured whenever asked for
    missing = [f"{m}@{s}" for m, s in gates if s not in measured]
    if missing:
        raise ValueError(f"gate: {', '.join(missing)} gated but their stage is not in --layers "
                         f"({','.join(settings.layers)})")
    most = max_steps(settings.unit, loaded.input_size, loaded.layout.grid)
    if settings.steps > most:
        raise ValueError(f"steps: {settings.steps} removal steps, but model {loaded.name!r} takes "
                         f"{'x'.join(map(str, loaded.input_size))} inputs with only {most} {settings.unit}s to "
                         f"remove; use --steps {most} or fewer")
    return ModelPlan(measured, gates, curves_for)


def map_keys(methods: list[str], depth: int) -> list[tuple[str, str]]:
    """(method, stage) of every map of a model of ``depth`` blocks: each block and the encoder (an input method such
    as ``ig``: the input)."""
    inputs = registry.names(stages="input")
    keys = [(method, stage) for stage in stage_names(depth) for method in methods if method not in inputs]
    return keys + [(method, MAP_STAGE_INPUT) for method in methods if method in inputs]


def forwards_per_image(plan: ModelPlan, settings: AuditSettings, depth: int) -> tuple[int, int]:
    """(maps with curves, forward passes) of one image under ``plan``: an upper bound, as identical maps share
    their curves and degenerate maps get none.

    A backward pass counts as two forwards: the capture is 3, Integrated Gradients ``3 x (steps + 1)``; each map with
    curves adds ``2 x (steps - 1)`` removal forwards, and every image 2 shared ones (clean, all removed).
    """
    keys = [f"{m}@{s}" for m, s in map_keys(settings.methods, depth)
            if s in plan.measured and (plan.curves_for is None or f"{m}@{s}" in plan.curves_for)]
    forwards = 3 + perturbed_copies(len(keys), settings.steps)
    forwards += sum(registry.get(m).extra_forwards for m in settings.methods)
    return len(keys), forwards


def auto_image_batch(plan: ModelPlan, settings: AuditSettings, loaded: LoadedModel, config: PerturbationConfig,
                     device: str) -> int:
    """``--image-batch auto``: as many images as it takes for their perturbed copies to fill one batch of the curves,
    at most :data:`IMAGE_BATCH_MAX`.

    One image under the default policy has ``2 + 2 x (steps - 1) x maps`` perturbed copies (154 for two gated maps
    and ``random``'s at 20 steps), so on a CPU (a batch of at most 64) every image is batched on its own, and on a
    GPU whose batch holds 1,024 images seven images share each batch.
    """
    n_curves, _ = forwards_per_image(plan, settings, loaded.layout.depth)
    batch = batch_size_for(config, loaded.model.to(device), loaded.input_size)
    return max(1, min(IMAGE_BATCH_MAX, -(-batch // perturbed_copies(n_curves, settings.steps))))


def time_forwards(model: torch.nn.Module, input_size: tuple[int, int], channels: int, device: str,
                  batch_size: int | str, amp: str | None, seconds: float = 0.5) -> float:
    """Forward passes per second of ``model`` on batches like the curves' (after one warm-up batch)."""
    batch = 16 if batch_size == AUTO_BATCH else max(1, min(cast(int, batch_size), 16))  # a number unless auto
    images = torch.zeros(batch, channels, *input_size, device=device)
    done, start = 0, None
    with torch.inference_mode(), amp_context(torch.device(device), amp):
        while start is None or (time.perf_counter() - start < seconds and done < 64):
            model(images)
            if start is None:  # the first batch warms up
                start = time.perf_counter()
                continue
            done += batch
    return done / max(time.perf_counter() - start, 1e-9)


def plan_lines(plan: ModelPlan, settings: AuditSettings, loaded: LoadedModel, n_images: int, device: str,
               note: str | None = None) -> list[str]:
    """What a run will measure on a model: which maps get curves, and images x maps x forwards with an ETA from a
    short timing of the model under ``settings.amp`` (the run's header prints them before any model work); ``note``
    ends the ETA's line (:meth:`audit.measure.precision.Precision.plan_note`: bfloat16 emulated on this device)."""
    n_curves, forwards = forwards_per_image(plan, settings, loaded.layout.depth)
    rate = time_forwards(loaded.model.to(device), loaded.input_size, loaded.data_config["input_size"][0], device,
                         settings.batch_size, settings.amp)
    total = forwards * n_images
    timed = f"{device} in {settings.amp}" if settings.amp else device
    return [plan.rule(),
            f"plan: {n_images} images x {n_curves} maps with curves x {2 * (settings.steps - 1)} removal forwards "
            f"(+ capture and shared ones) = {total:,} forwards at most; ETA ~{_duration(total / rate)} at "
            f"{rate:.0f} forwards/s timed on {timed}" + (f"; {note}" if note else "")]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
