"""The map methods, each declared once: its name, family, stages, what the randomisation check randomises for it, its
computation and its citation.

Every part of vit-audit that depends on a method reads it from here: the options (which names are accepted), the
plan (which stages a method is measured at, what it costs), the capture (whether attention is kept), the
randomisation check (the cascade step after which a map's inputs are all randomised), the results file and the
report (which maps are baselines), and the documentation's maps table. A method is added by one module that defines
its computation and calls :func:`register`::

    from audit.maps.registry import MapMethod, register

    def token_norm(ctx, stage):
        tokens = ctx.cap.layout.patch_tokens(ctx.cap.tokens[stage])
        return MapResult("token_norm", stage, ctx.cap.layout.to_grid(tokens.norm(dim=-1).float()))

    register(MapMethod("token_norm", family="example", summary="the norm of each patch token",
                       citation="-", compute=token_norm))

An installed package makes its methods known to every run (``pytest checks`` and ``vit-audit`` included) with an
entry point in the group ``vit_audit.maps`` naming the module that registers them::

    [project.entry-points."vit_audit.maps"]
    token_norm = "my_package.token_norm"

Two kinds of method exist. A *block* method (``stages="blocks"``) is computed from one capture at every stage of the
model (blocks ``0..L-1`` and ``encoder``): ``compute(ctx: MapContext, stage) -> MapResult``. An *input* method
(``stages="input"``) has one stage, ``input``, and is computed from the normalised image and the run's removal
baseline: ``compute(ctx: InputContext) -> Tensor`` on the patch grid.
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..model.capture import Capture
from ..model.layout import MAP_STAGE_INPUT, TokenLayout, normalize_stage

__all__ = ["ACTIVATIONS", "ENTRY_POINTS", "READS", "STAGE_KINDS", "InputContext", "MapContext", "MapMethod",
           "MapResult", "compute_input_map", "compute_maps", "finish_map", "get", "input_methods", "is_constant",
           "load_entry_points", "methods_table", "names", "needs_attention", "register", "unregister"]

ACTIVATIONS = {
    "gelu": lambda t: F.gelu(t),  # exact (erf) GELU, as in the paper's eqs. 3-4
    "relu": F.relu,
    "identity": lambda t: t,
}
#: What a map reads, which decides the step of the randomisation cascade after which all of it is randomised
#: (:func:`audit.measure.randomisation.dependency_step`).
READS = {
    "block": "the stage's tokens and the gradient from the head down to them",
    "attention": "the stage's attention probabilities (at 'encoder', the last block's)",
    "attention_up_to": "the attention of every block up to the stage",
    "model": "every parameter of the model",
    "nothing": "no parameter: a baseline that does not depend on the model's weights",
}
STAGE_KINDS = ("blocks", "input")
ENTRY_POINTS = "vit_audit.maps"  # the entry-point group of installed packages' map methods
CONSTANT_RTOL = 1e-6
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class MapResult:
    """One map of one image.

    Attributes:
        method: a registered method's name.
        stage: ``'0'..'L-1'``, ``'encoder'`` or ``'input'``.
        values: (h, w) float32 map, raw (before any upsampling or rescaling); None when not applicable.
        degenerate: the map is constant, so it ranks nothing; ``reason`` says why.
        reason: why the map is degenerate or not applicable; None otherwise.
    """

    method: str
    stage: str
    values: torch.Tensor | None
    degenerate: bool = False
    reason: str | None = None

    @property
    def key(self) -> str:
        return f"{self.method}@{self.stage}"

    @property
    def applicable(self) -> bool:
        return self.values is not None

    @property
    def rankable(self) -> bool:
        """Whether the map can be scored by MoRF/LeRF (applicable and not constant)."""
        return self.values is not None and not self.degenerate


@dataclass
class MapContext:
    """What a block method computes from: the model, one image's capture, the gradient maps' activation, the seed
    of the random baseline and the image's id. ``once`` shares work between the stages of one image."""

    model: nn.Module
    cap: Capture
    activation: Callable[[torch.Tensor], torch.Tensor]
    seed: int = 0
    image: str = ""
    memo: dict[str, Any] = field(default_factory=dict)

    def once(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self.memo:
            self.memo[name] = make()
        return self.memo[name]


@dataclass
class InputContext:
    """What an input method computes from: the model, the normalised image ``z`` and the normalised removal
    baseline ``z0`` (the run's fill, every pixel removed), the explained class, the token layout, and how many
    forwards may share a batch."""

    model: nn.Module
    z: torch.Tensor
    z0: torch.Tensor
    target: int
    layout: TokenLayout
    batch_size: int = 64


@dataclass(frozen=True)
class MapMethod:
    """A map method, declared once.

    Attributes:
        name: the name options, gates (``name@stage``) and results use: lower case, digits and ``_``.
        family: the family the documentation groups it under (``paper``, ``attention``, ``gradient``, ``baseline``).
        summary: one line: what the map is.
        citation: where it is defined.
        compute: the computation (see the module's docstring for the two signatures).
        stages: ``"blocks"`` (every block and ``encoder``) or ``"input"`` (one stage, ``input``).
        reads: what the map reads, a key of :data:`READS`.
        needs_attention: the capture must keep the attention probabilities (and their gradients).
        baseline: a reference map (random, center): compared against, never a subject of the checks.
        default: in the library's default set of methods (:func:`audit.audit_images` without ``methods``).
        extra_forwards: forwards (a backward counts as two) the method costs per image beyond the capture, for the
            plan's estimate of a run's work.
    """

    name: str
    family: str
    summary: str
    citation: str
    compute: Callable[..., Any]
    stages: str = "blocks"
    reads: str = "block"
    needs_attention: bool = False
    baseline: bool = False
    default: bool = False
    extra_forwards: int = 0

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"map method: {self.name!r} is not a name of lower-case letters, digits and '_'")
        if self.stages not in STAGE_KINDS:
            raise ValueError(f"map method {self.name}: stages {self.stages!r} is not one of {', '.join(STAGE_KINDS)}")
        if self.reads not in READS:
            raise ValueError(f"map method {self.name}: reads {self.reads!r} is not one of {', '.join(READS)}")


_METHODS: dict[str, MapMethod] = {}


def register(method: MapMethod, *, replace: bool = False) -> MapMethod:
    """Add a method to the registry (a ``ValueError`` when its name is taken, unless ``replace``)."""
    if method.name in _METHODS and not replace:
        raise ValueError(f"map method {method.name!r} is registered already")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (a test's toy method, after the test)."""
    _METHODS.pop(name, None)


def load_entry_points() -> list[str]:
    """Import every module named in the ``vit_audit.maps`` entry-point group (each registers its methods); a module
    that fails to import is a one-line warning naming it, and the run goes on without it. Returns the names loaded."""
    loaded = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            entry.load()
        except Exception as err:  # noqa: BLE001 - whatever a third-party module raises, the built-in maps still work
            warnings.warn(f"map methods: entry point {entry.name!r} ({entry.value}) failed to load "
                          f"({type(err).__name__}: {err}); fix or uninstall the package that declares it",
                          stacklevel=2)
            continue
        loaded.append(entry.name)
    return loaded


def get(name: str) -> MapMethod:
    """The registered method ``name``; a one-line ``ValueError`` naming the registered ones otherwise."""
    if name not in _METHODS:
        raise ValueError(f"methods: unknown {name!r}; choose from {', '.join(_METHODS)}")
    return _METHODS[name]


def names(*, family: str | None = None, stages: str | None = None, baseline: bool | None = None,
          default: bool | None = None) -> tuple[str, ...]:
    """The registered methods' names in registration order, optionally only those with the given attributes."""
    return tuple(m.name for m in _METHODS.values()
                 if (family is None or m.family == family) and (stages is None or m.stages == stages)
                 and (baseline is None or m.baseline == baseline) and (default is None or m.default == default))


def needs_attention(methods: Iterable[str]) -> bool:
    """Whether any of ``methods`` reads the attention (so the capture must keep it)."""
    return any(name in _METHODS and _METHODS[name].needs_attention for name in methods)


def input_methods(methods: Iterable[str]) -> list[MapMethod]:
    """The input methods among ``methods``, in the order given."""
    return [_METHODS[name] for name in methods if name in _METHODS and _METHODS[name].stages == "input"]


def methods_table() -> list[dict[str, Any]]:
    """Every registered method as a row (name, family, stages, what it reads, summary, citation): the documentation's
    maps table."""
    return [{"name": m.name, "family": m.family,
             "stages": "input" if m.stages == "input" else "0..L-1, encoder",
             "reads": READS[m.reads], "summary": m.summary, "citation": m.citation,
             "baseline": m.baseline, "needs_attention": m.needs_attention} for m in _METHODS.values()]


def is_constant(values: torch.Tensor) -> bool:
    """True when every value equals the others up to float32 rounding (relative 1e-6 of the largest magnitude)."""
    finite = values[torch.isfinite(values)]
    if finite.numel() < values.numel():
        return False
    spread = float(values.max() - values.min())
    return spread <= CONSTANT_RTOL * float(values.abs().max()) or spread == 0.0


def finish_map(result: MapResult) -> MapResult:
    """Flag a map with non-finite values or constant values as degenerate (it ranks nothing)."""
    if result.values is not None and not result.degenerate:
        if not bool(torch.isfinite(result.values).all()):
            result.degenerate, result.reason = True, "map has non-finite values"
        elif is_constant(result.values):
            result.degenerate = True
            result.reason = f"map is constant ({float(result.values.flatten()[0]):.3g} everywhere)"
    return result


def compute_input_map(method: MapMethod, ctx: InputContext) -> MapResult:
    """An input method's checked map at its one stage, ``input`` (degenerate when constant or not finite)."""
    return finish_map(MapResult(method.name, MAP_STAGE_INPUT, method.compute(ctx)))


@torch.no_grad()
def compute_maps(
    model: nn.Module,
    cap: Capture,
    methods: Iterable[str] | None = None,
    stages: Iterable[int | str] | None = None,
    act: str = "gelu",
    seed: int = 0,
    image: str = "",
) -> dict[str, MapResult]:
    """Compute the block maps of a captured image.

    Args:
        model: the model the capture came from.
        cap: the image's :class:`~audit.model.capture.Capture`.
        methods: registered names (those reading attention need ``cap`` made with ``attention=True``); input methods
            are skipped here (their one stage is made from the image, :func:`audit.measure.image_audit.input_maps`).
            Default: the default methods.
        stages: block indices and/or ``'encoder'``; default all of them.
        act: ``'gelu'`` (the paper), ``'relu'`` or ``'identity'``, for the gradient maps.
        seed: seed of the ``random`` baseline (mixed with ``image`` and the stage).
        image: the image's id, so that every image gets its own random map.

    Returns:
        ``{"<method>@<stage>": MapResult}`` in stage-major order.
    """
    methods = list(names(default=True) if methods is None else methods)
    unknown = [m for m in methods if m not in _METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; choose from {', '.join(_METHODS)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"act: unknown {act!r}; choose from {', '.join(ACTIVATIONS)}")
    depth = cap.layout.depth
    stage_list = cap.map_stages if stages is None else [normalize_stage(s, depth) for s in stages]
    stage_list = [stage for stage in stage_list if stage in cap.tokens and stage != MAP_STAGE_INPUT]
    block = [_METHODS[m] for m in methods if _METHODS[m].stages == "blocks"]
    ctx = MapContext(model, cap, ACTIVATIONS[act], seed, image)
    results: dict[str, MapResult] = {}
    for stage in stage_list:
        for method in block:
            result = finish_map(method.compute(ctx, stage))
            results[result.key] = result
    return results
