"""The accepted values of the numeric options, defined once: read by the settings (before any model work), by
``output_settings``, and by the code that uses each value (``reports.render.render_report``, the session).

Also the small pieces every one-line settings message is made of: a value shown shortened (:func:`show`), an
option's flag (:func:`flag`) and where a value came from (:func:`in_file`).
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any

__all__ = ["BATCH_SIZE_MAX", "IMAGE_BATCH_MAX", "MAX_MB_LIMIT", "MIN_IMAGES_MAX", "OPTIONAL_NUMBERS",
           "RANDOMISATION_IMAGES_MAX", "RANGES", "Range", "SEED_MAX", "STEPS_MAX", "THUMBNAIL_MAX", "THUMBNAIL_MIN",
           "check_range", "finite", "flag", "in_file", "range_message", "show"]

SEED_MAX = 2**32 - 1  # numpy's default_rng and torch's manual_seed take 0 <= seed < 2**32 on every path
STEPS_MAX = 10_000  # the per-model bound (at most the pixels or patches of the input) is checked by the session
BATCH_SIZE_MAX = 1_000_000
IMAGE_BATCH_MAX = 64  # images whose perturbed copies share the curves' batches (each holds its capture meanwhile)
MIN_IMAGES_MAX = 1_000_000
RANDOMISATION_IMAGES_MAX = 1_000
RANDOMISATION_SEEDS_MAX = 100
THUMBNAIL_MIN, THUMBNAIL_MAX = 8, 512  # report thumbnails: THUMBNAIL_MIN <= px <= THUMBNAIL_MAX
MAX_MB_LIMIT = 10_000  # report size limit: 0 < MB < MAX_MB_LIMIT


@dataclass(frozen=True)
class Range:
    """The accepted values of a numeric option: ``value in RANGES[name]``.

    Integer ranges take ``int`` only (not bool); the others ``int`` or ``float`` (not bool), finite. Infinite
    bounds mean "any finite number".
    """

    what: str
    low: float
    high: float
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not self.integer and not finite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if math.isinf(self.low) and math.isinf(self.high):
            return "any finite number"
        return (f"{'(' if self.open_low else '['}{_number_text(self.low)}, {_number_text(self.high)}"
                f"{')' if self.open_high else ']'}")


RANGES: dict[str, Range] = {
    "steps": Range("an integer", 1, STEPS_MAX, integer=True),
    "batch_size": Range("an integer", 1, BATCH_SIZE_MAX, integer=True),
    "image_batch": Range("an integer", 1, IMAGE_BATCH_MAX, integer=True),
    "seed": Range("an integer", 0, SEED_MAX, integer=True),
    "min_images": Range("an integer", 1, MIN_IMAGES_MAX, integer=True),
    "randomisation_images": Range("an integer", 1, RANDOMISATION_IMAGES_MAX, integer=True),
    "randomisation_seeds": Range("an integer", 1, RANDOMISATION_SEEDS_MAX, integer=True),
    "report_thumbnail": Range("an integer number of pixels", THUMBNAIL_MIN, THUMBNAIL_MAX, integer=True),
    "report_max_mb": Range("a size in MB", 0, MAX_MB_LIMIT, open_low=True, open_high=True),
    "fill": Range("a pixel value", 0.0, 1.0),
    "threshold": Range("a finite number", -math.inf, math.inf),
    "randomisation_threshold": Range("an absolute Spearman correlation", 0.0, 1.0),
    "min_map_agreement": Range("a Spearman correlation", -1.0, 1.0),
    "region_margin": Range("a share of relevance", 0.0, 1.0),
    "region_threshold": Range("a difference of shares of relevance", -1.0, 1.0),
    "attraction_margin": Range("a share of images", 0.0, 1.0),
    "stamp_margin": Range("a share of relevance", 0.0, 1.0),
    "min_class_agreement": Range("a share of images", 0.0, 1.0),
    "max_attraction": Range("a share of images", 0.0, 1.0),
    "max_stamp_mass": Range("a share of relevance", 0.0, 1.0),
}
#: Numeric options that may be left unset (None: not used).
OPTIONAL_NUMBERS = {"min_map_agreement", "min_class_agreement", "max_attraction", "max_stamp_mass",
                    "region_threshold"}


def finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)  # an int too large for a float raises OverflowError
    except OverflowError:
        return False


def _number_text(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """A value in a one-line message: its repr, shortened."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits; a list nested too deeply
        return f"<{type(value).__name__}>"


def flag(name: str) -> str:
    return name.replace("_", "-")


def in_file(where: str | None) -> str:
    """The ' (in FILE)' tail of a message about a value read from a file (nothing for the command line)."""
    return f" (in {where})" if where and where != "command line" else ""


def range_message(name: str, value: Any) -> str:
    """The message for ``value`` outside ``RANGES[name]``: ``<option>: expected <what> in <range>, got <value>``."""
    rng, option = RANGES[name], flag(name)
    if rng.integer and rng.low == 1 and isinstance(value, int) and not isinstance(value, bool) and value < 1:
        return f"{option}: expected a positive integer, got {show(value)}"  # the words of the first versions
    if name == "fill":
        return f"fill: {show(value)} is outside [0, 1]"  # the words of the first versions
    if math.isinf(rng.low) and math.isinf(rng.high):
        return f"{option}: expected {rng.what}, got {show(value)}"
    return f"{option}: expected {rng.what} in {rng}, got {show(value)}"


def check_range(name: str, value: Any, where: str | None = None) -> None:
    """Raise ``ValueError`` (one line naming the option, and ``where`` unless it is the command line) when
    ``value`` is not in ``RANGES[name]``."""
    if value not in RANGES[name]:
        raise ValueError(range_message(name, value) + in_file(where))
