"""Audit settings: command-line options, a TOML file (``--audit-config``) and ``[tool.vit-audit]`` in pyproject.toml.

Precedence: the command line, then the ``--audit-config`` file, then ``[tool.vit-audit]`` of the project's
pyproject.toml, then the defaults below. Every option has the same name in all three places (``batch-size`` on
the command line is ``batch_size`` or ``batch-size`` in TOML). Bad values, and files that cannot be read or are of
the wrong shape, raise ``ValueError`` (and nothing else) with one line:

- a value: ``<option>: <value> is not a valid <type>``, or out of its range ``<option>: expected <what> in
  <range>, got <value>`` (or a message of its own, e.g. ``unit: 'x' is not pixel or patch``); `` (in <file>)`` at
  the end when the value came from a file, and ``<key>: expected ..., got <value> (in <file>)`` for the tables
  (``tool``, ``tool.vit-audit``, ``limits``, ``limits.<method@stage>[.<limit>]``);
- a file: ``audit-config: '<file>' <problem>`` (``pyproject:`` for pyproject.toml), e.g. ``not found`` or ``is
  not a regular file (a FIFO); pass a TOML file``;
- an unknown key: ``<file>: unknown key '<key>'; known keys: ...``.

The numeric ranges are defined once, in :data:`audit.ranges.RANGES`; the code that uses a value reads them
from there.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..maps.registry import ACTIVATIONS
from ..maps.registry import names as map_names
from ..measure.curves import AUTO_BATCH, FILL_CONSTANTS, FILL_RECIPES, SCORES, PerturbationConfig
from ..measure.precision import AMPS
from ..ranges import (
    BATCH_SIZE_MAX,
    IMAGE_BATCH_MAX,
    MAX_MB_LIMIT,
    MIN_IMAGES_MAX,
    OPTIONAL_NUMBERS,
    RANDOMISATION_IMAGES_MAX,
    RANDOMISATION_SEEDS_MAX,
    RANGES,
    SEED_MAX,
    STEPS_MAX,
    THUMBNAIL_MAX,
    THUMBNAIL_MIN,
    Range,
    check_range,
    flag,
    in_file,
    show,
)
from ..results.detail import DEFAULT_DETAIL, DETAILS, check_detail
from ..verdicts.gates import LIMIT_NAMES, MIN_IMAGES, GateLimits
from ..verdicts.margins import (
    DEFAULT_ATTRACTION_MARGIN,
    DEFAULT_MIN_CLASS_AGREEMENT,
    DEFAULT_REGION_MARGIN,
    DEFAULT_STAMP_MARGIN,
    parse_margin,
)
from .policy import DEFAULT_GATES, GATE_NONE, POLICY_METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The ranges are re-exported: they are part of what a settings user reads.
__all__ = ["AuditSettings", "OPTIONS", "output_settings", "resolve_settings", "read_toml_table", "parse_gate",
           "Range", "RANGES", "check_range", "SEED_MAX", "STEPS_MAX", "BATCH_SIZE_MAX", "MIN_IMAGES_MAX",
           "RANDOMISATION_IMAGES_MAX", "THUMBNAIL_MIN", "THUMBNAIL_MAX", "MAX_MB_LIMIT"]

DEVICES = ("cpu", "cuda", "auto")
AUTO_OPTIONS = ("batch_size", "image_batch")  # numbers that may also be "auto"
EXECUTORS = ("local", "ray")  # where the (model, image) records are made (audit.run.executors)
FAIL_CORRECTIONS = ("none", "holm")  # --fail-correction: how fail verdicts of several gates are corrected
BUILT_IN = "built-in default"  # where a value that no source set comes from
DEFAULT_CACHE = ".vit-audit-cache"  # --cache: the folder of finished records, in the current folder
#: The options that make the release policy: the header says where each of them came from.
POLICY_OPTIONS = ("methods", "gate", "threshold", "min_images", "strict", "margin", "margins", "limits",
                  "min_map_agreement", "fail_correction", "randomisation_threshold", "regions", "region_roles", "probe",
                  "region_margin", "attraction_margin", "stamp_margin", "min_class_agreement", "max_attraction",
                  "max_stamp_mass", "region_threshold")
#: Options read from a policy file only (no command-line flag): the absolute limits of the probes.
TOML_ONLY = ("max_attraction", "max_stamp_mass")
REGION_ROLES = ("object", "artefact")

@dataclass
class AuditSettings:
    """Everything that defines an audit run (recorded in the results file)."""

    model: list[str] = field(default_factory=list)
    checkpoint: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    device: str = "cpu"
    methods: list[str] = field(default_factory=lambda: list(POLICY_METHODS))
    layers: list[str] = field(default_factory=lambda: ["auto"])
    steps: int = 20
    unit: str = "pixel"
    fill: float | str = 127 / 255
    batch_size: int | str = AUTO_BATCH
    image_batch: int | str = AUTO_BATCH
    seed: int = 0
    act: str = "gelu"
    amp: str | None = None
    score: str = "prob"
    labels: str | None = None
    gate: list[str] = field(default_factory=lambda: list(DEFAULT_GATES))
    threshold: float = 0.0
    min_images: int = MIN_IMAGES
    randomisation_threshold: float = 0.5
    randomisation_images: int = 10
    randomisation_seeds: int = 3
    strict: bool = False
    keep_duplicate_images: bool = False
    baseline: str | None = None
    baseline_model: str | None = None
    baseline_checkpoint: str | None = None
    margin: float | str | None = None  # None: each map's built-in default (audit.verdicts.margins.margin_for)
    margins: dict[str, float | str] = field(default_factory=dict)
    fail_correction: str = "none"
    min_map_agreement: float | None = None
    regions: str | None = None
    region_roles: dict[str, str] = field(default_factory=dict)
    probe: list[str] = field(default_factory=list)
    region_threshold: float | None = None  # docs/guides/right-reasons.md: absolute limits false-alarm
    region_margin: float = DEFAULT_REGION_MARGIN
    attraction_margin: float = DEFAULT_ATTRACTION_MARGIN
    stamp_margin: float = DEFAULT_STAMP_MARGIN
    min_class_agreement: float | None = DEFAULT_MIN_CLASS_AGREEMENT
    max_attraction: float | None = None
    max_stamp_mass: float | None = None
    audit_json: str | None = None
    report: str | None = None
    report_thumbnail: int = 64
    report_max_mb: float = 5.0
    results_detail: str = DEFAULT_DETAIL
    cache: str | None = DEFAULT_CACHE
    no_cache: bool = False
    executor: str = "local"
    ray_address: str | None = None
    limits: dict[str, GateLimits] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)  # option -> where its value came from

    def origin(self, name: str) -> str:
        """Where the value of option ``name`` came from: a file, the command line, or the built-in default."""
        return self.origins.get(name, BUILT_IN)

    def gated(self) -> list[tuple[str, str]]:
        return [parse_gate(g) for g in self.gate]

    def perturbation(self) -> PerturbationConfig:
        """The MoRF/LeRF recipe these settings ask for."""
        return PerturbationConfig(steps=self.steps, fill=self.fill, unit=self.unit, batch_size=self.batch_size,
                                  amp=self.amp, score=self.score)


# name -> (help, metavar); list-valued options are repeatable and accept comma lists.
OPTIONS: dict[str, tuple[str, str | None]] = {
    "model": ("timm model name to audit (repeatable), or 'hf' for a Hugging Face ViT/DeiT folder; default: the "
              "embedded Fashion-MNIST ViT", "NAME"),
    "checkpoint": ("checkpoint of the i-th --model (.safetensors, or .pth read with weights_only=True), or a Hugging "
                   "Face folder (config.json of model_type vit or deit, model.safetensors; --model may be left out)",
                   "PATH"),
    "images": ("image file or folder, searched recursively (repeatable)", "PATH"),
    "device": ("cpu, cuda or auto (default cpu)", "DEVICE"),
    "methods": (f"comma list of maps: {','.join(map_names())} (default: the built-in policy's "
                f"{','.join(POLICY_METHODS)})", "LIST"),
    "layers": ("stages whose maps get MoRF/LeRF curves: block indices and/or encoder, all, or auto (default: with "
               "gates, only the gated maps and random at their stages; with none, every stage)", "LIST"),
    "steps": (f"MoRF/LeRF removal steps, 1..{STEPS_MAX} (default 20)", "N"),
    "unit": ("removal unit: pixel or patch (default pixel)", "UNIT"),
    "fill": ("fill of removed pixels: a pixel value in [0, 1] (default 127/255) or a recipe: grey, black, mean "
             "(the model's normalisation mean), blur (RISE's), road (ROAD's noisy linear imputation; slow)", "FILL"),
    "batch_size": (f"perturbed images per forward pass, 1..{BATCH_SIZE_MAX}, or auto (default: from the memory a "
                   "forward needs per image and what is free, at most 64 on a CPU)", "N"),
    "image_batch": (f"images whose perturbed copies share the curves' forward passes, 1..{IMAGE_BATCH_MAX}, or auto "
                    "(default: enough to fill one batch; 1 on a CPU)", "N"),
    "seed": (f"seed of the random baseline, the bootstrap and the randomisation check, 0..{SEED_MAX} (default 0)",
             "N"),
    "act": (f"activation of the gradient maps: {', '.join(ACTIVATIONS)} (default gelu)", "NAME"),
    "amp": ("autocast dtype for perturbation forwards: bfloat16, float16, or auto (bfloat16 where the device has it "
            "natively, else float32; recommended on a CPU) (default off: float32)", "DTYPE"),
    "score": ("y of the MoRF/LeRF curves: prob (the explained class's softmax probability) or top1 (1 when the "
              "top-1 class is the image's label from --labels, else the explained class; Chefer et al.'s test)",
              "SCORE"),
    "labels": ("CSV of the images' true classes: columns file (the image's file name) and class_index", "PATH"),
    "gate": (f"gated map as method@stage, e.g. cam@encoder or grad@-2 (repeatable), or {GATE_NONE} to gate nothing; "
             f"default: the policy file's, else the built-in policy's {', '.join(DEFAULT_GATES)}", "MAP"),
    "threshold": ("mean-ABPC threshold of the gates (default 0: better than a random map)", "VALUE"),
    "min_images": (f"fewer images (or paired images) make a gate or a comparison inconclusive (default "
                   f"{MIN_IMAGES})", "N"),
    "randomisation_threshold": ("mean |Spearman| with the trained model's map that a gated map's 95% CI must fall "
                                "below once randomised, in [0, 1] (default 0.5)", "VALUE"),
    "randomisation_images": (f"images of the randomisation check, chosen round-robin over classes, "
                             f"1..{RANDOMISATION_IMAGES_MAX} (default 10)", "N"),
    "randomisation_seeds": (f"randomisations per image (seeds --seed, --seed + 1, ...), 1..{RANDOMISATION_SEEDS_MAX} "
                            "(default 3)", "N"),
    "strict": ("treat inconclusive gates against the threshold as failures too (an inconclusive comparison with "
               "a baseline fails without it)", None),
    "keep_duplicate_images": ("audit files with identical bytes under different names each (default: once)", None),
    "baseline": ("results file of the released model's audit: gate this run against it, image by image", "PATH"),
    "baseline_model": ("or audit the released model in this run: its timm model name, or 'hf'", "NAME"),
    "baseline_checkpoint": ("checkpoint of --baseline-model ('pretrained' for timm's weights, a folder for 'hf')",
                            "PATH"),
    "margin": ("non-inferiority margin on the mean ABPC difference from the baseline, for every compared map: an "
               "ABPC difference (0.05) or a percentage of the baseline's mean ABPC (25%); default: each map's own "
               "(the policy's margins table, else the built-in one)", "VALUE"),
    "fail_correction": (f"correction of the fail verdicts of several gates: {', '.join(FAIL_CORRECTIONS)} (holm: "
                        "Holm's step-down on bootstrap p-values, per model; passes are never corrected; default none)",
                        "NAME"),
    "min_map_agreement": ("gate the median Spearman of the maps with the baseline's against this (default: not "
                          "gated)", "VALUE"),
    "regions": ("where the objects (and artefacts) of the images are: a COCO instances JSON, a folder of Pascal VOC "
                "XML files or of PNG masks (by file stem), or a CSV of boxes (file,x0,y0,x1,y1[,label]); gates the "
                "relevance mass of the gated maps on the objects", "PATH"),
    "probe": ("stamp FILE (or a built-in: square:COLOR:SIZE, text:WORD) onto a copy of every image at WHERE "
              "(top-left, top-right, bottom-left, bottom-right, center, random or X,Y; default top-left) and measure "
              "what it moves (repeatable; with a baseline, gated against it)", "FILE[@WHERE]"),
    "region_threshold": ("with --regions: gate the gated maps' mean relevance mass on the objects minus chance (their "
                         "area) against this, e.g. 0 for 'above chance' (default none: measured, not gated; against a "
                         "baseline the regions are gated paired)", "VALUE"),
    "region_margin": (f"with --regions and a baseline: how much lower the mean relevance mass on the objects (and "
                      f"how much higher on artefacts) may be than the baseline's (default {DEFAULT_REGION_MARGIN})",
                      "VALUE"),
    "attraction_margin": (f"with --probe and a baseline: how much higher the largest attraction of a class to the "
                          f"stamp may be than the baseline's (default {DEFAULT_ATTRACTION_MARGIN})", "VALUE"),
    "stamp_margin": (f"with --probe and a baseline: how much higher the mean relevance mass of a gated map on the "
                     f"stamp may be than the baseline's (default {DEFAULT_STAMP_MARGIN})", "VALUE"),
    "min_class_agreement": (f"with a baseline: fail a class whose top-1 agreement with the baseline is shown below "
                            f"this (Holm over the classes; default {DEFAULT_MIN_CLASS_AGREEMENT}; none: not gated)",
                            "VALUE"),
    "audit_json": ("write the results file (schema vit-audit/1) here", "PATH"),
    "report": ("write the HTML report here", "PATH"),
    "report_thumbnail": (f"longer side of the report's thumbnails in pixels, {THUMBNAIL_MIN}..{THUMBNAIL_MAX} "
                         "(default 64)", "PX"),
    "cache": (f"folder keeping every finished (model, image) record between runs, so that a killed or repeated run "
              f"recomputes only what is missing (default {DEFAULT_CACHE})", "DIR"),
    "no_cache": ("neither read nor write the cache", None),
    "executor": ("where the (model, image) records are made: local (this process) or ray (Ray tasks, with the "
                 "extra vit-audit[ray]; default local)", "NAME"),
    "ray_address": ("the Ray cluster of --executor ray: auto, HOST:PORT or ray://HOST:PORT (default: start a Ray "
                    "instance on this machine)", "ADDR"),
    "report_max_mb": (f"size limit of the HTML report in MB, above 0 and below {MAX_MB_LIMIT} (default 5)", "MB"),
    "results_detail": (f"how much of each (model, image) record the results file keeps: {', '.join(DETAILS)} (default "
                       f"{DEFAULT_DETAIL}: everything the report draws; curves: the numbers and the gated maps' grids, "
                       "no pictures; summary: the per-image AUCs and ABPC only)", "LEVEL"),
}
LIST_OPTIONS = {"model", "checkpoint", "images", "methods", "layers", "gate", "probe"}
UNSPLIT_OPTIONS = {"probe"}  # lists whose items may hold commas (a probe's X,Y)


def _text(text: str) -> str:
    """A file name or a key in a one-line message: as is when printable, else its repr."""
    return text if text.isprintable() else repr(text)


def parse_gate(text: str) -> tuple[str, str]:
    method, sep, stage = str(text).partition("@")
    if not sep or method not in map_names() or not stage:
        raise ValueError(f"gate: {text!r} is not method@stage with a method from {', '.join(map_names())}")
    return method, stage


def parse_ray_address(text: str) -> tuple[str, int] | None:
    """The (host, port) of a ``--ray-address`` (``HOST:PORT`` or ``ray://HOST:PORT``), or None for ``auto``.

    Raises:
        ValueError: one line, when it is none of these.
    """
    if text == "auto":
        return None
    host, sep, port = str(text).removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if (not sep or not host or any(c.isspace() for c in host) or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise ValueError(f"ray-address: {text!r} is not auto, HOST:PORT or ray://HOST:PORT")
    return host, int(port)


def _read_toml(path: str | Path, option: str) -> dict[str, Any]:
    """A TOML file's data; every way it cannot be read is a one-line ``ValueError`` naming ``option`` and the file.

    Never opens anything but a regular file (opening a FIFO would wait for a writer forever): the file is checked
    before it is opened, and again on the open descriptor, opened non-blocking.
    """
    shown = repr(str(path))
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{option}: {shown} not found") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise ValueError(f"{option}: {shown} cannot be read ({_reason(err)})") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{option}: {shown} is not a regular file ({_kind(mode)}); pass a TOML file")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ValueError(f"{option}: {shown} cannot be read ({_reason(err)})") from None
    with os.fdopen(descriptor, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):  # replaced since the check above
            raise ValueError(f"{option}: {shown} is not a regular file ({_kind(mode)}); pass a TOML file")
        try:
            raw = handle.read()
        except OSError as err:
            raise ValueError(f"{option}: {shown} cannot be read ({_reason(err)})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{option}: {shown} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                         f"{err.start})") from None
    try:
        return tomllib.loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer of more digits than Python converts
        raise ValueError(f"{option}: {shown} is not valid TOML ({_reason(err)})") from None
    except RecursionError:
        raise ValueError(f"{option}: {shown} is not valid TOML (nested too deeply)") from None


def _reason(err: Exception) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return " ".join(text.split())


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a file")


def read_toml_table(path: str | Path, table: str | None, option: str = "audit-config") -> dict[str, Any]:
    """A TOML file's ``[tool.vit-audit]`` table (``table='tool.vit-audit'``), or the whole file (None).

    With ``table=None`` the file's ``[tool.vit-audit]`` table is taken when it has one, else the whole file.

    Raises:
        ValueError: one line: ``<option>: '<file>' <why>`` when the file cannot be read as TOML (``option`` names
            where the file came from, e.g. ``audit-config`` or ``pyproject``), or ``<key>: expected a table, got
            <value> (in <file>)`` when ``tool`` or ``tool.vit-audit`` is not a table.
    """
    data = _read_toml(path, option)
    where = _text(str(path))
    if table is None:
        if not isinstance(data.get("tool", {}), dict):
            raise ValueError(f"tool: expected a table, got {show(data['tool'])}{in_file(where)}")
        if "vit-audit" not in data.get("tool", {}):
            return data
        table = "tool.vit-audit"
    parts = table.split(".")
    for depth, part in enumerate(parts, 1):
        data = data.get(part, {})
        if not isinstance(data, dict):
            raise ValueError(f"{'.'.join(parts[:depth])}: expected a table, got {show(data)}{in_file(where)}")
    return data


def _as_list(name: str, value: Any, where: str | None = None) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    if name in UNSPLIT_OPTIONS:
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"{name}: expected a string or a list of strings, got {show(value)}{in_file(where)}")
        return [item.strip() for item in items if item.strip()]
    out: list[str] = []
    for item in items:
        # A layer may be written as an integer; a bool is not one, nor an integer too long to be a block index.
        if isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, int) and
                                                                          abs(item) >= 2**63):
            raise ValueError(f"{name}: expected a string or a list of strings, got {show(item)}{in_file(where)}")
        out.extend(part.strip() for part in str(item).split(",") if part.strip())
    return out


TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


def _coerce(name: str, value: Any, default: Any, where: str | None = None) -> Any:
    """``value`` as the type of ``default``; else ``ValueError``: ``<option>: <value> is not a valid <type>``.

    Strings (the command line) are parsed; from TOML, only the matching type is taken (an integer for a float,
    and an integral float for an integer, too) - never a bool for a number, nor a number for a bool.
    """
    if name in LIST_OPTIONS:
        return _as_list(name, value, where)
    if name == "margin":  # a number or "N%": read by audit.verdicts.margins.parse_margin
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        try:
            parse_margin(value)
        except ValueError as err:
            raise ValueError(f"{err}{in_file(where)}") from None
        return value
    if name == "fill" and isinstance(value, str):
        word = value.strip().lower()
        if word in FILL_CONSTANTS or word in FILL_RECIPES:
            return FILL_CONSTANTS.get(word, word)
        try:
            float(word)
        except ValueError:
            raise ValueError(f"fill: {show(value)} is neither a pixel value in [0, 1] nor a recipe "
                             f"({', '.join([*FILL_CONSTANTS, *FILL_RECIPES])}){in_file(where)}") from None
    if name in AUTO_OPTIONS:
        if isinstance(value, str) and value.strip().lower() == AUTO_BATCH:
            return AUTO_BATCH
        default = 0
    if name in OPTIONAL_NUMBERS:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        default = 0.0
    kind = "bool" if isinstance(default, bool) else type(default).__name__ if isinstance(default, (int, float)) \
        else "string"
    also = f" or {AUTO_BATCH}" if name in AUTO_OPTIONS else ""
    error = ValueError(f"{flag(name)}: {show(value)} is not a valid {kind}{also}{in_file(where)}")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        raise error
    if kind == "string":
        if value is None or isinstance(value, str):
            return None if value in (None, "", "none", "None") else value
        raise error
    if isinstance(value, bool):
        raise error
    try:
        if kind == "int":
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, (int, str)):
                return int(value)  # a string of more than 4300 digits: ValueError
        elif isinstance(value, (int, float, str)):
            return float(value)  # an int beyond the floats: OverflowError
    except (ValueError, OverflowError):
        pass
    raise error


def _normalise_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(AuditSettings)} - {"sources", "origins"}
    out = {}
    for key, value in table.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(OPTIONS))}, limits, "
                             "margins")
        out[name] = value
    return out


def _read_limits(value: Any, where: str) -> dict[str, GateLimits]:
    """The ``limits`` table: ``method@stage = {max_morf_auc = ..., ...}``, each limit a finite number."""
    if not isinstance(value, dict):
        raise ValueError(f"limits: expected a table of method@stage = {{...}}, got {show(value)}{in_file(where)}")
    out = {}
    for key, table in value.items():
        method, sep, stage = str(key).partition("@")
        if not sep or method not in map_names() or not stage:
            raise ValueError(f"limits: {key!r} is not method@stage with a method from {', '.join(map_names())}"
                             f"{in_file(where)}")
        name = f"limits.{_text(key)}"
        if not isinstance(table, dict):
            raise ValueError(f"{name}: expected a table of {', '.join(LIMIT_NAMES)}, got {show(table)}"
                             f"{in_file(where)}")
        try:
            out[key] = GateLimits.from_mapping(table, name)  # unknown limit names, values that are not numbers
        except ValueError as err:
            raise ValueError(f"{err}{in_file(where)}") from None
    return out


def _read_margins(value: Any, where: str) -> dict[str, float | str]:
    """The ``margins`` table: ``method@stage = 0.05`` (absolute) or ``method@stage = "25%"`` (relative)."""
    if not isinstance(value, dict):
        raise ValueError(f"margins: expected a table of method@stage = margin, got {show(value)}{in_file(where)}")
    for key, margin in value.items():
        method, sep, stage = str(key).partition("@")
        if not sep or method not in map_names() or not stage:
            raise ValueError(f"margins: {key!r} is not method@stage with a method from {', '.join(map_names())}"
                             f"{in_file(where)}")
        try:
            parse_margin(margin, f"margins.{_text(key)}")
        except ValueError as err:
            raise ValueError(f"{err}{in_file(where)}") from None
    return dict(value)


def _read_roles(value: Any, where: str) -> dict[str, str]:
    """The ``region-roles`` table: ``label = "object"`` or ``label = "artefact"``."""
    if not isinstance(value, dict):
        raise ValueError(f"region-roles: expected a table of label = {' or '.join(map(repr, REGION_ROLES))}, got "
                         f"{show(value)}{in_file(where)}")
    for label, role in value.items():
        if role not in REGION_ROLES:
            raise ValueError(f"region-roles.{_text(str(label))}: {show(role)} is not {' or '.join(REGION_ROLES)}"
                             f"{in_file(where)}")
    return {str(k): str(v) for k, v in value.items()}


def resolve_settings(
    cli: dict[str, Any], config_file: str | Path | None = None, pyproject: str | Path | None = None
) -> AuditSettings:
    """Merge the three sources and validate every value.

    Args:
        cli: option name -> value given on the command line (None, False or an empty list: not given).
        config_file: the ``--audit-config`` TOML file (its ``[tool.vit-audit]`` table if it has one, else the file).
        pyproject: the project's pyproject.toml, whose ``[tool.vit-audit]`` table holds the policy (passed over
            when it is not a regular file).

    Raises:
        ValueError: only this, with one line naming the option or the file, and for a value read from a file
            ``(in <file>)`` at its end.
    """
    settings = AuditSettings()
    defaults = {f.name: getattr(settings, f.name) for f in fields(AuditSettings)}
    layers: list[tuple[str, dict[str, Any]]] = []
    if pyproject is not None and Path(pyproject).is_file():
        table = read_toml_table(pyproject, "tool.vit-audit", option="pyproject")
        if table:
            layers.append((f"{_text(str(pyproject))} [tool.vit-audit]", table))
    if config_file is not None:
        layers.append((_text(str(config_file)), read_toml_table(config_file, None)))
    given = {k: v for k, v in cli.items() if not (v is None or v is False or (isinstance(v, list) and not v))}
    layers.append(("command line", given))
    origins: dict[str, str] = {}
    for where, table in layers:
        table = _normalise_keys(table, where)
        limits = table.pop("limits", None)
        if limits is not None:
            settings.limits.update(_read_limits(limits, where))
            origins["limits"] = where
        margins = table.pop("margins", None)
        if margins is not None:
            settings.margins.update(_read_margins(margins, where))
            origins["margins"] = where
        roles = table.pop("region_roles", None)
        if roles is not None:
            settings.region_roles.update(_read_roles(roles, where))
            origins["region_roles"] = where
        for name, value in table.items():
            setattr(settings, name, _coerce(name, value, defaults[name], where))
            origins[name] = where
        if table or limits or margins or roles:
            settings.sources.append(where)
    if not settings.model and settings.checkpoint:
        from ..model.hf import HF_MODEL, is_hf_folder

        if all(is_hf_folder(path) for path in settings.checkpoint):  # such a folder names its own architecture
            settings.model = [HF_MODEL] * len(settings.checkpoint)
            origins["model"] = origins["checkpoint"]
    if GATE_NONE in settings.gate:
        if settings.gate != [GATE_NONE]:
            raise ValueError(f"gate: {GATE_NONE} gates nothing and cannot be listed with other gates "
                             f"({', '.join(settings.gate)}){in_file(origins.get('gate'))}")
        settings.gate = []
    if "gate" not in origins:  # the built-in gates: those of maps the run computes, at the stages it measures
        listed = None if {"all", "auto"} & set(settings.layers) else set(settings.layers)
        kept = [gate for gate in settings.gate if parse_gate(gate)[0] in settings.methods
                and (listed is None or parse_gate(gate)[1] in listed)]
        if kept != settings.gate:
            dropped = [gate for gate in settings.gate if gate not in kept]
            origins["gate"] = (f"{BUILT_IN} ({', '.join(dropped)} left out: not computed by --methods or not at a "
                               "stage of --layers)")
            settings.gate = kept
    settings.origins = origins
    _validate(settings, origins)
    return settings


def output_settings(
    cli: dict[str, Any], config_file: str | Path | None = None, pyproject: str | Path | None = None
) -> dict[str, Any]:
    """Where the results file and the report go, read leniently from the sources of :func:`resolve_settings`.

    For a run whose settings are invalid: the one-line error is still written to both files. A source that cannot
    be read, and any value of the wrong type or out of range, is passed over; the rest of the settings are not
    looked at. Never raises for any content of the files, and never opens anything but a regular file.
    """
    defaults = AuditSettings()
    out: dict[str, Any] = {"audit_json": None, "report": None, "report_thumbnail": defaults.report_thumbnail,
                           "report_max_mb": defaults.report_max_mb}
    tables: list[dict[str, Any]] = []
    table: str | dict[str, Any] | None  # a table's name, then a table
    for path, table, option in ((pyproject, "tool.vit-audit", "pyproject"), (config_file, None, "audit-config")):
        if path is not None:
            try:
                tables.append(read_toml_table(path, table, option))
            except ValueError:
                pass
    tables.append({k: v for k, v in cli.items() if v is not None})
    for table in tables:
        for key, value in table.items():
            name = str(key).replace("-", "_")
            if name in ("audit_json", "report") and isinstance(value, str):
                out[name] = _coerce(name, value, None)  # as resolve_settings reads it: "" or "none" turns it off
            elif name in ("report_thumbnail", "report_max_mb"):
                try:
                    number = _coerce(name, value, out[name])
                except ValueError:
                    continue
                if number in RANGES[name]:
                    out[name] = number
    return out


def input_paths(cli: dict[str, Any], config_file: str | Path | None = None,
                pyproject: str | Path | None = None) -> list[tuple[str, str]]:
    """(option, path) of every file a run would read, read leniently from the sources of :func:`resolve_settings`
    (for a run stopped by a usage error: its outputs must not be written over them either). Never raises."""
    inputs: dict[str, list[str]] = {}
    for path, table, option in ((pyproject, "tool.vit-audit", "pyproject"), (config_file, None, "audit-config"),
                                (None, None, "command line")):
        try:
            values = cli if option == "command line" else read_toml_table(path, table, option) if path else {}
        except ValueError:
            continue
        for key, value in values.items():
            name = str(key).replace("-", "_")
            paths = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
            if name in INPUT_OPTIONS and paths:
                inputs[name] = paths
    out = [(flag(name), path) for name, paths in inputs.items() for path in paths]
    return out + [(option, str(path)) for path, option in ((config_file, "audit-config"), (pyproject, "pyproject"))
                  if path is not None]


#: The options that name files a run reads: its outputs must never be one of them.
INPUT_OPTIONS = ("baseline", "labels", "checkpoint", "baseline_checkpoint", "images", "regions")


def run_inputs(settings: AuditSettings, config_file: str | Path | None = None,
               pyproject: str | Path | None = None) -> list[tuple[str, str]]:
    """(option, path) of every file a run reads (the policy files included), for the outputs' check."""
    out: list[tuple[str, str]] = []
    for name in INPUT_OPTIONS:
        value = getattr(settings, name)
        out.extend((flag(name), path) for path in (value if isinstance(value, list) else [value]) if path)
    out += [(option, str(path)) for path, option in ((config_file, "audit-config"), (pyproject, "pyproject"))
            if path is not None]
    return out


def _validate(s: AuditSettings, origins: dict[str, str] | None = None) -> None:
    """Check the merged settings; ``origins`` says where each option's value came from (for the message)."""
    origins = origins or {}

    def fail(name: str, message: str) -> ValueError:
        return ValueError(message + in_file(origins.get(name)))

    if s.device not in DEVICES:
        raise fail("device", f"device: {s.device!r} is not one of {', '.join(DEVICES)}")
    if not s.methods:
        raise fail("methods", f"methods: expected at least one of {','.join(map_names())}, got an empty list")
    unknown = [m for m in s.methods if m not in map_names()]
    if unknown:
        raise fail("methods", f"methods: unknown {unknown}; choose from {', '.join(map_names())}")
    if s.act not in ACTIVATIONS:
        raise fail("act", f"act: {s.act!r} is not one of {', '.join(ACTIVATIONS)}")
    if s.amp is not None and s.amp not in AMPS:
        raise fail("amp", f"amp: {s.amp!r} is not {', '.join(AMPS[:-1])} or {AMPS[-1]} (leave it off for float32)")
    if s.unit not in ("pixel", "patch"):
        raise fail("unit", f"unit: {s.unit!r} is not pixel or patch")
    if s.score not in SCORES:
        raise fail("score", f"score: {s.score!r} is not {' or '.join(SCORES)}")
    try:
        check_detail(s.results_detail)
    except ValueError as err:
        raise fail("results_detail", str(err)) from None
    if s.fail_correction not in FAIL_CORRECTIONS:
        raise fail("fail_correction", f"fail-correction: {s.fail_correction!r} is not one of "
                   f"{', '.join(FAIL_CORRECTIONS)}")
    if s.executor not in EXECUTORS:
        raise fail("executor", f"executor: {s.executor!r} is not one of {', '.join(EXECUTORS)}")
    if s.ray_address is not None:
        if s.executor != "ray":
            raise fail("ray_address", f"ray-address: {s.ray_address!r} is given but the executor is {s.executor}; "
                       "add --executor ray (or --ray-address none)")
        try:
            parse_ray_address(s.ray_address)
        except ValueError as err:
            raise fail("ray_address", str(err)) from None
    for name in RANGES:
        if (name == "fill" and isinstance(s.fill, str)) or (name in AUTO_OPTIONS and getattr(s, name) == AUTO_BATCH):
            continue  # a recipe, or auto: checked when read
        if not (name in OPTIONAL_NUMBERS and getattr(s, name) is None):
            check_range(name, getattr(s, name), origins.get(name))
    for gate in s.gate:
        try:
            method, _ = parse_gate(gate)
        except ValueError as err:
            raise fail("gate", str(err)) from None
        if method not in s.methods:
            raise fail("gate", f"gate: {gate!r} gates a map that --methods does not compute ({','.join(s.methods)})")
    if not s.layers:
        raise fail("layers", "layers: expected at least one block index, 'encoder', 'all' or 'auto', got an empty list")
    for layer in s.layers:
        if layer not in ("all", "auto", "encoder"):
            try:
                int(layer)
            except ValueError:
                raise fail("layers", f"layers: {layer!r} is not a block index, 'encoder', 'all' or 'auto'") from None
    if s.baseline and (s.baseline_model or s.baseline_checkpoint):
        raise fail("baseline", "baseline: give either --baseline (a results file) or --baseline-model and "
                   "--baseline-checkpoint (audited in this run), not both")
    if bool(s.baseline_model) != bool(s.baseline_checkpoint):
        raise fail("baseline_model" if s.baseline_model else "baseline_checkpoint",
                   "baseline-model: --baseline-model and --baseline-checkpoint go together ('pretrained' for timm's "
                   "own weights)")
    if len(s.checkpoint) != len(s.model):
        raise fail("checkpoint" if "checkpoint" in origins else "model",
                   f"checkpoint: {len(s.checkpoint)} checkpoints for {len(s.model)} models; give one "
                   "--checkpoint per --model, in the same order ('pretrained' for timm's own weights)")
