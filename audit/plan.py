"""What a run measures and gates on each model: the stages of its curves, its gated maps and every map's key.

Worked out from the settings and the model before any check runs, so that a setting the model cannot take (a block
it does not have, a gated stage not measured, more steps than pixels) is a usage error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .layout import MAP_STAGE_INPUT, normalize_stage, stage_names
from .maps import INPUT_METHODS
from .models import LoadedModel
from .perturb import max_steps
from .settings import AuditSettings

__all__ = ["ModelPlan", "map_keys", "plan_model"]


@dataclass(frozen=True)
class ModelPlan:
    """One model's plan.

    Attributes:
        measured: the stages whose maps get MoRF/LeRF curves (``input`` whenever ``ig`` is asked for).
        gates: the gated (method, stage) pairs, stages in canonical form.
    """

    measured: list[str]
    gates: list[tuple[str, str]]


def plan_model(settings: AuditSettings, loaded: LoadedModel) -> ModelPlan:
    """The stages measured and gated for one model.

    Raises:
        ValueError: a stage the model does not have, a gate on a stage that is not measured or that its map does not
            have, or more removal steps than the model's input has units.
    """
    depth = loaded.layout.depth
    layers = stage_names(depth) if "all" in settings.layers else settings.layers
    try:
        measured = list(dict.fromkeys(normalize_stage(s, depth) for s in layers))
        gates = [(m, normalize_stage(s, depth)) for m, s in settings.gated()]
    except ValueError as err:
        raise ValueError(f"{err} (model {loaded.name!r})") from None
    wrong = [f"{m}@{s}" for m, s in gates if (m in INPUT_METHODS) != (s == MAP_STAGE_INPUT)]
    if wrong:
        raise ValueError(f"gate: {', '.join(wrong)}: 'input' is the one stage of {', '.join(INPUT_METHODS)} and a "
                         "stage of no other map")
    if any(m in INPUT_METHODS for m in settings.methods) and MAP_STAGE_INPUT not in measured:
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
    return ModelPlan(measured, gates)


def map_keys(methods: list[str], depth: int) -> list[tuple[str, str]]:
    """(method, stage) of every map of a model of ``depth`` blocks: each block and the encoder (``ig``: the input)."""
    keys = [(method, stage) for stage in stage_names(depth) for method in methods if method not in INPUT_METHODS]
    return keys + [(method, MAP_STAGE_INPUT) for method in methods if method in INPUT_METHODS]
