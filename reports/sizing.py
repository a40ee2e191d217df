"""How big the report draws each image's figures, and the pictures of its "right for the right reasons" section: the
plans it steps down, fullest first, to stay under its size limit, and what each plan leaves out, in words."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["REASONS_SHARE", "Plan", "ReasonsPlan", "describe_cuts", "describe_reasons_cuts", "plans_for",
           "reasons_plans"]

#: The share of the room left for pictures (the size limit less the page without its image sections) that the
#: "right for the right reasons" section may take; the image sections get the rest.
REASONS_SHARE = 0.25


@dataclass(frozen=True)
class Plan:
    """How one image's figures are drawn; the report steps down these plans until it fits its size limit.

    Attributes:
        maps: longer side in pixels of the per-block map cells.
        strips: longer side of the removal-strip frames and of the encoder-output maps (0: left out).
        restorations: longer side of the restoration pictures (0: left out).
        colours: palette size of those pictures (None: true colour).
        input_size: longer side of the input picture (0: left out).
        grid: per-block map grid for ``'all'`` methods, the ``'featured'`` ones (gated and random), or ``'none'``.
    """

    maps: int
    strips: int
    restorations: int
    colours: int | None
    input_size: int
    grid: str = "all"


def plans_for(thumbnail: int) -> list[Plan]:
    """Plans from the fullest to the smallest, for a requested thumbnail size."""
    big = min(max(2 * thumbnail, 96), 160)
    t, three_quarters, half = thumbnail, max(8, round(0.75 * thumbnail)), max(8, thumbnail // 2)
    full = Plan(t, t, t, None, big)
    small = Plan(half, half, half, 16, max(half, 96))
    return [
        full,
        replace(full, colours=128),
        replace(full, colours=48),
        Plan(three_quarters, t, three_quarters, 32, big),
        Plan(half, three_quarters, half, 32, max(half, 96)),
        Plan(half, half, half, 32, max(half, 96)),
        small,
        replace(small, grid="featured"),
        replace(small, grid="none"),
        replace(small, grid="none", restorations=0),
        replace(small, grid="none", restorations=0, strips=0, input_size=max(half, 64)),
        replace(small, grid="none", restorations=0, strips=0, input_size=0),
    ]


def describe_cuts(plan: Plan, full: Plan) -> list[str]:
    """What a plan leaves out compared with the full one, in words."""
    cuts = []
    for name, size, asked in (("map cells", plan.maps, full.maps), ("removal strips and encoder maps", plan.strips,
                              full.strips), ("restorations", plan.restorations, full.restorations)):
        if 0 < size < asked:
            cuts.append(f"{name} at {size} px instead of {asked} px")
    if plan.colours is not None:
        cuts.append(f"pictures reduced to {plan.colours} colours")
    if plan.input_size == 0:
        cuts.append("input picture left out")
    elif plan.input_size < full.input_size:
        cuts.append(f"input picture at {plan.input_size} px instead of {full.input_size} px")
    if plan.grid == "featured":
        cuts.append("per-block map grid only for the gated methods and the random baseline")
    elif plan.grid == "none":
        cuts.append("per-block map grid left out")
    if plan.restorations == 0:
        cuts.append("restoration rows left out")
    if plan.strips == 0:
        cuts.append("MoRF/LeRF removal strips and encoder-output maps left out")
    return cuts


@dataclass(frozen=True)
class ReasonsPlan:
    """How the pictures of the "right for the right reasons" section are drawn; stepped down like :class:`Plan`.

    Attributes:
        pictures: longer side in pixels of the regions, the maps and the clean and stamped pictures (0: no picture,
            the section's tables only).
        small: longer side of the SpRAy view's mean maps and exemplars.
        colours: palette size of the pictures (None: true colour).
        regions: images shown with their regions, per model.
        strips: images shown clean and stamped, per probe.
        exemplars: exemplars shown per SpRAy cluster.
    """

    pictures: int
    small: int
    colours: int | None
    regions: int
    strips: int
    exemplars: int


def reasons_plans(thumbnail: int) -> list[ReasonsPlan]:
    """The section's plans from the fullest to the one without pictures, for a requested thumbnail size."""
    t, three_quarters, half = thumbnail, max(8, round(0.75 * thumbnail)), max(8, thumbnail // 2)
    return [
        ReasonsPlan(t, half, None, 6, 4, 4),
        ReasonsPlan(t, half, 64, 6, 4, 4),
        ReasonsPlan(three_quarters, half, 32, 6, 4, 4),
        ReasonsPlan(half, max(8, t // 3), 16, 3, 2, 2),
        ReasonsPlan(0, 0, None, 0, 0, 0),
    ]


def describe_reasons_cuts(plan: ReasonsPlan, full: ReasonsPlan) -> list[str]:
    """What a plan of the section leaves out compared with the full one, in words."""
    if plan.pictures == 0:
        return ["pictures left out (regions, clean and stamped strips, SpRAy maps and exemplars): tables only"]
    cuts = []
    if plan.pictures < full.pictures:
        cuts.append(f"pictures at {plan.pictures} px instead of {full.pictures} px")
    if plan.small < full.small:
        cuts.append(f"SpRAy maps and exemplars at {plan.small} px instead of {full.small} px")
    if plan.colours is not None:
        cuts.append(f"pictures reduced to {plan.colours} colours")
    for name, shown, asked in (("images with their regions per model", plan.regions, full.regions),
                               ("clean and stamped images per probe", plan.strips, full.strips),
                               ("exemplars per SpRAy cluster", plan.exemplars, full.exemplars)):
        if shown < asked:
            cuts.append(f"{shown} {name} instead of {asked}")
    return cuts
