"""Charts of the report as plain geometry for the SVG templates: no plotting library, no script, no fonts to fetch.

Each function returns a :class:`Chart` in SVG user units; the ``chart`` macro of ``templates/macros.html.j2``
draws it (every label goes through the template's autoescaping). Missing values (``None``) break lines instead of
being drawn as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

__all__ = ["PALETTE", "Chart", "Series", "curves_chart", "paired_chart", "profile_chart", "randomisation_chart"]

# Okabe-Ito colours: distinguishable by colour-blind readers.
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000"]
MORF, LERF, ABPC, BASELINE = "#d55e00", "#0072b2", "#009e73", "#7f7f7f"
WORSE = "#b00020"  # the region and line of "less faithful than the baseline by more than the margin"


@dataclass
class Series:
    """One line of a chart: polyline pieces (split at missing values), optional markers and error bars.

    A series with ``fill`` is a shaded region instead: each piece is a polygon. A series with ``dots`` is a
    scatter: one point each, with its own tooltip (x, y, title).
    """

    label: str
    colour: str
    dash: str | None = None
    pieces: list[str] = field(default_factory=list)
    markers: list[tuple[float, float]] = field(default_factory=list)
    errors: list[tuple[float, float, float]] = field(default_factory=list)
    width: float = 1.6
    fill: str | None = None
    dots: list[tuple[float, float, str]] = field(default_factory=list)


@dataclass
class Chart:
    """A chart laid out in SVG user units."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    title: str
    x_label: str
    y_label: str
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    hlines: list[tuple[float, str, str]] = field(default_factory=list)  # (y, label, colour)
    vlines: list[tuple[float, str, str]] = field(default_factory=list)  # (x, label, colour)
    rotate_x: bool = False
    legend: list[tuple[float, float, Series]] = field(default_factory=list)  # (x, y, series) of each entry


def _finite(value: float | None) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Frame:
    """Maps data coordinates to SVG coordinates inside the plot box."""

    def __init__(self, chart: Chart, x_range: tuple[float, float], y_range: tuple[float, float]):
        self.chart, self.x_range, self.y_range = chart, x_range, y_range

    def x(self, value: float) -> float:
        low, high = self.x_range
        return round(self.chart.left + (value - low) / ((high - low) or 1.0) * (self.chart.right - self.chart.left), 1)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return round(self.chart.bottom - (value - low) / ((high - low) or 1.0) * (self.chart.bottom - self.chart.top),
                     1)

    def line(self, label: str, colour: str, xs: Sequence[float], ys: Sequence[float | None], dash: str | None = None,
             markers: bool = False, width: float = 1.6) -> Series:
        series = Series(label=label, colour=colour, dash=dash, width=width)
        piece: list[str] = []
        for x, y in zip(xs, ys):
            if _finite(y):
                piece.append(f"{self.x(x)},{self.y(y)}")
                if markers:
                    series.markers.append((self.x(x), self.y(y)))
            elif piece:
                series.pieces.append(" ".join(piece))
                piece = []
        if piece:
            series.pieces.append(" ".join(piece))
        return series


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


def _layout(title: str, x_label: str, y_label: str, width: int = 360, plot_height: int = 150,
            rotate_x: bool = False) -> Chart:
    top = 12
    return Chart(width=width, height=0, left=46, top=top, right=width - 10, bottom=top + plot_height, title=title,
                 x_label=x_label, y_label=y_label, rotate_x=rotate_x)


def _finish(chart: Chart) -> Chart:
    """Place the legend under the x axis, entries flowing left to right, and set the chart's height."""
    x, y = chart.left, chart.bottom + (66 if chart.rotate_x else 38)
    for series in chart.series:
        entry = 26 + 6.2 * len(series.label) + 12
        if x + entry > chart.width and x > chart.left:
            x, y = chart.left, y + 15
        chart.legend.append((round(x, 1), y, series))
        x += entry
    chart.height = int(y + 10)
    return chart


def curves_chart(
    title: str,
    curves: Sequence[tuple[str, Sequence[float | None] | None, str, str | None]],
    x_label: str = "fraction removed (k / steps)",
    y_label: str = "probability of the class",
) -> Chart:
    """MoRF/LeRF curves (Utkin et al. 2024, Figs. 11 and 13): y_k against x = k / steps on [0, 1].

    Args:
        title: what the chart shows.
        curves: (legend label, y values or None, colour, dash) for each line; lines without values are skipped.
    """
    drawn = [c for c in curves if c[1]]
    chart = _layout(title, x_label, y_label)
    frame = _Frame(chart, (0.0, 1.0), (0.0, 1.0))
    chart.x_ticks = [(frame.x(v), _label(v)) for v in (0, 0.25, 0.5, 0.75, 1)]
    chart.y_ticks = [(frame.y(v), _label(v)) for v in (0, 0.25, 0.5, 0.75, 1)]
    for label, values, colour, dash in drawn:
        assert values is not None  # drawn keeps only the curves with values
        steps = max(1, len(values) - 1)
        chart.series.append(frame.line(label, colour, [k / steps for k in range(len(values))], values, dash))
    return _finish(chart)


def profile_chart(
    title: str,
    stages: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], Sequence[tuple[float | None, float | None] | None], str,
                           str | None]],
) -> Chart:
    """A layer-wise profile: one value per stage with its 95% CI as an error bar.

    Args:
        title: what the chart shows.
        stages: the x categories, in model order.
        series: (legend label, values, CIs, colour, dash) per line.
    """
    chart = _layout(title, "stage", "mean over images", width=max(360, 34 * len(stages) + 60), plot_height=170)
    values = [v for _, vals, cis, _, _ in series for v in [*vals, *(x for ci in cis if ci for x in ci)] if _finite(v)]
    low, high = min([0.0, *values]), max([1.0 if not values else max(values), 0.0])
    pad = 0.05 * ((high - low) or 1.0)
    frame = _Frame(chart, (-0.5, len(stages) - 0.5), (low - pad, high + pad))
    chart.x_ticks = [(frame.x(i), str(stage)) for i, stage in enumerate(stages)]
    chart.y_ticks = [(frame.y(v), _label(v)) for v in _ticks(low - pad, high + pad)]
    chart.hlines.append((frame.y(0.0), "0", "#999999"))
    for label, vals, cis, colour, dash in series:
        line = frame.line(label, colour, list(range(len(stages))), vals, dash, markers=True)
        for i, ci in enumerate(cis):
            if ci and _finite(ci[0]) and _finite(ci[1]):
                line.errors.append((frame.x(i), frame.y(ci[0]), frame.y(ci[1])))
        chart.series.append(line)
    return _finish(chart)


def randomisation_chart(
    title: str,
    labels: Sequence[str],
    lines: Sequence[tuple[str, Sequence[float | None], str, str | None]],
    threshold: float | None,
) -> Chart:
    """Cascading randomisation (Adebayo et al. 2018): mean |Spearman| with the trained map, head first.

    Args:
        title: what the chart shows.
        labels: what is randomised at each step ("trained", "head", "block L-1", ..., "embedding").
        lines: (legend label, mean |Spearman| values, colour, dash) per map.
        threshold: the value a gated map's CI must fall below, drawn as a dashed line.
    """
    chart = _layout(title, "randomised, cascading from the head", "|Spearman| vs trained",
                    width=max(380, 28 * len(labels) + 60), plot_height=160, rotate_x=True)
    frame = _Frame(chart, (-0.5, len(labels) - 0.5), (-0.05, 1.05))
    chart.x_ticks = [(frame.x(i), str(label)) for i, label in enumerate(labels)]
    chart.y_ticks = [(frame.y(v), _label(v)) for v in (0, 0.25, 0.5, 0.75, 1)]
    chart.hlines.append((frame.y(0.0), "0", "#999999"))
    if _finite(threshold):
        chart.hlines.append((frame.y(threshold), f"threshold {threshold:g}", "#b00020"))
    for label, values, colour, dash in lines:
        chart.series.append(frame.line(label, colour, list(range(len(values))), values, dash, markers=True, width=1.3))
    return _finish(chart)


def _below(low: float, high: float, margin: float) -> list[tuple[float, float]]:
    """The part of the square [low, high]² where y <= x - margin, as polygon vertices (empty when none)."""
    corners = [(low, low), (high, low), (high, high), (low, high)]
    inside = [y <= x - margin for x, y in corners]
    polygon = []
    for i, (x, y) in enumerate(corners):
        nx, ny = corners[(i + 1) % 4]
        if inside[i]:
            polygon.append((x, y))
        if inside[i] != inside[(i + 1) % 4]:  # the edge crosses y = x - margin
            t = ((x - margin) - y) / ((ny - y) - (nx - x))
            polygon.append((x + t * (nx - x), y + t * (ny - y)))
    return polygon if len(polygon) >= 3 else []


def paired_chart(
    title: str,
    pairs: Sequence[tuple[float | None, float | None, str]],
    margin: float | None,
    x_label: str = "baseline ABPC",
    y_label: str = "candidate ABPC",
    size: int = 260,
) -> Chart:
    """A paired scatter of a candidate against its baseline, image by image: one point per pair, the diagonal
    y = x (no change) and the margin line y = x - margin, the region below it shaded (less faithful than the
    baseline by more than the margin).

    Args:
        title: what the chart shows.
        pairs: (baseline value, candidate value, tooltip) per image; pairs with a missing value are left out.
        margin: the non-inferiority margin (None: no margin line).
        size: side of the square plot box in SVG units.
    """
    points = [(x, y, text) for x, y, text in pairs if _finite(x) and _finite(y)]
    values = [v for x, y, _ in points for v in (x, y)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if _finite(margin) and high - low < 2 * abs(margin):  # room for the margin line in the square
        middle = (low + high) / 2
        low, high = middle - abs(margin), middle + abs(margin)
    pad = 0.06 * ((high - low) or 1.0)
    low, high = low - pad, high + pad
    chart = _layout(title, x_label, y_label, width=size + 56, plot_height=size)
    frame = _Frame(chart, (low, high), (low, high))
    ticks = _ticks(low, high)
    chart.x_ticks = [(frame.x(v), _label(v)) for v in ticks]
    chart.y_ticks = [(frame.y(v), _label(v)) for v in ticks]
    if _finite(margin):
        region = _below(low, high, margin)
        if region:
            chart.series.append(Series(label="less faithful by more than the margin", colour=WORSE, fill=WORSE,
                                       pieces=[" ".join(f"{frame.x(x)},{frame.y(y)}" for x, y in region)]))
    chart.series.append(frame.line("y = x (no change)", BASELINE, [low, high], [low, high], width=1.2))
    if _finite(margin):
        xs = [max(low, low + margin), min(high, high + margin)]
        if xs[0] < xs[1]:
            chart.series.append(frame.line(f"y = x − {margin:g} (margin)", WORSE, xs, [x - margin for x in xs],
                                           dash="5 3", width=1.2))
    dots = Series(label=f"paired images ({len(points)})", colour=LERF)
    dots.dots = [(frame.x(x), frame.y(y), text) for x, y, text in points]
    chart.series.append(dots)
    return _finish(chart)
