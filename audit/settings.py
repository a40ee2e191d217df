"""Audit settings: command-line options, a TOML file (``--audit-config``) and ``[tool.vit-audit]`` in pyproject.toml.

Precedence: the command line, then the ``--audit-config`` file, then ``[tool.vit-audit]`` of the project's
pyproject.toml, then the defaults below. Every option has the same name in all three places (``batch-size`` on
the command line is ``batch_size`` or ``batch-size`` in TOML). Bad values raise ``ValueError`` naming the option.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .gates import MIN_IMAGES, GateLimits
from .maps import ACTIVATIONS, METHODS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["AuditSettings", "OPTIONS", "output_settings", "resolve_settings", "read_toml_table", "parse_gate"]

DEVICES = ("cpu", "cuda", "auto")


@dataclass
class AuditSettings:
    """Everything that defines an audit run (recorded in the results file)."""

    model: list[str] = field(default_factory=list)
    checkpoint: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    device: str = "cpu"
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    layers: list[str] = field(default_factory=lambda: ["all"])
    steps: int = 20
    unit: str = "pixel"
    fill: float = 127 / 255
    batch_size: int = 64
    seed: int = 0
    act: str = "gelu"
    amp: str | None = None
    gate: list[str] = field(default_factory=list)
    threshold: float = 0.0
    min_images: int = MIN_IMAGES
    randomisation_threshold: float = 0.5
    randomisation_images: int = 2
    strict: bool = False
    audit_json: str | None = None
    report: str | None = None
    report_thumbnail: int = 64
    report_max_mb: float = 5.0
    limits: dict[str, GateLimits] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def gated(self) -> list[tuple[str, str]]:
        return [parse_gate(g) for g in self.gate]


# name -> (help, metavar); list-valued options are repeatable and accept comma lists.
OPTIONS: dict[str, tuple[str, str | None]] = {
    "model": ("timm model name to audit (repeatable); default: the embedded Fashion-MNIST ViT", "NAME"),
    "checkpoint": ("checkpoint of the i-th --model (.safetensors, or .pth read with weights_only=True)", "PATH"),
    "images": ("image file or folder, searched recursively (repeatable)", "PATH"),
    "device": ("cpu, cuda or auto (default cpu)", "DEVICE"),
    "methods": (f"comma list of maps: {','.join(METHODS)} (default all)", "LIST"),
    "layers": ("stages whose faithfulness is measured: block indices and/or encoder, or all (default all)", "LIST"),
    "steps": ("MoRF/LeRF removal steps (default 20)", "N"),
    "unit": ("removal unit: pixel or patch (default pixel)", "UNIT"),
    "fill": ("pixel-space fill value of removed pixels, in [0, 1] (default 127/255)", "VALUE"),
    "batch_size": ("perturbed images per forward pass (default 64)", "N"),
    "seed": ("seed of the random baseline, the bootstrap and the randomisation check (default 0)", "N"),
    "act": (f"activation of the gradient maps: {', '.join(ACTIVATIONS)} (default gelu)", "NAME"),
    "amp": ("autocast dtype for perturbation forwards: bfloat16 or float16 (default off: float32)", "DTYPE"),
    "gate": ("gated map as method@stage, e.g. cam@encoder or grad@-2 (repeatable); default: the policy", "MAP"),
    "threshold": ("mean-ABPC threshold of the gates (default 0: better than a random map)", "VALUE"),
    "min_images": (f"fewer images make a gate inconclusive (default {MIN_IMAGES})", "N"),
    "randomisation_threshold": ("Spearman correlation a gated map must fall below once randomised (default 0.5)",
                                "VALUE"),
    "randomisation_images": ("images used by the randomisation check (default 2)", "N"),
    "strict": ("treat inconclusive gates as failures (for release gating)", None),
    "audit_json": ("write the results file (schema vit-audit/1) here", "PATH"),
    "report": ("write the HTML report here", "PATH"),
    "report_thumbnail": ("longer side of the report's thumbnails in pixels (default 64)", "PX"),
    "report_max_mb": ("size limit of the HTML report in MB (default 5)", "MB"),
}
LIST_OPTIONS = {"model", "checkpoint", "images", "methods", "layers", "gate"}


def parse_gate(text: str) -> tuple[str, str]:
    method, sep, stage = str(text).partition("@")
    if not sep or method not in METHODS or not stage:
        raise ValueError(f"gate: {text!r} is not method@stage with a method from {', '.join(METHODS)}")
    return method, stage


def read_toml_table(path: str | Path, table: str | None) -> dict[str, Any]:
    """A TOML file's ``[tool.vit-audit]`` table (``table='tool.vit-audit'``), or the whole file (None)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"audit-config: {str(path)!r} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"audit-config: {str(path)!r} is not valid TOML ({err})") from None
    if table is None:
        return data.get("tool", {}).get("vit-audit", data) if "tool" in data else data
    for part in table.split("."):
        data = data.get(part, {})
    return data


def _as_list(name: str, value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if not isinstance(item, (str, int)):
            raise ValueError(f"{name}: expected a string or a list of strings, got {item!r}")
        out.extend(part.strip() for part in str(item).split(",") if part.strip())
    return out


def _coerce(name: str, value: Any, default: Any) -> Any:
    if name in LIST_OPTIONS:
        return _as_list(name, value)
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name.replace('_', '-')}: {value!r} is not a valid {type(default).__name__}") from None
    return None if value in (None, "", "none", "None") else str(value)


def _normalise_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    known = {f.name for f in fields(AuditSettings)} - {"sources"}
    out = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(OPTIONS))}, limits")
        out[name] = value
    return out


def resolve_settings(
    cli: dict[str, Any], config_file: str | Path | None = None, pyproject: str | Path | None = None
) -> AuditSettings:
    """Merge the three sources and validate every value.

    Args:
        cli: option name -> value given on the command line (None or missing: not given).
        config_file: the ``--audit-config`` TOML file (its ``[tool.vit-audit]`` table if it has one, else the file).
        pyproject: the project's pyproject.toml, whose ``[tool.vit-audit]`` table holds the policy.
    """
    settings = AuditSettings()
    defaults = {f.name: getattr(settings, f.name) for f in fields(AuditSettings)}
    layers: list[tuple[str, dict[str, Any]]] = []
    if pyproject is not None and Path(pyproject).is_file():
        table = read_toml_table(pyproject, "tool.vit-audit")
        if table:
            layers.append((f"{pyproject} [tool.vit-audit]", table))
    if config_file is not None:
        layers.append((str(config_file), read_toml_table(config_file, None)))
    layers.append(("command line", {k: v for k, v in cli.items() if v not in (None, [], False)}))
    for where, table in layers:
        table = _normalise_keys(dict(table), where)
        limits = table.pop("limits", None)
        if limits is not None:
            if not isinstance(limits, dict):
                raise ValueError(f"{where}: limits must be a table of method@stage = {{...}}")
            for key, value in limits.items():
                parse_gate(key)
                settings.limits[key] = GateLimits.from_mapping(value, f"limits.{key}")
        for name, value in table.items():
            setattr(settings, name, _coerce(name, value, defaults[name]))
        if table or limits:
            settings.sources.append(where)
    _validate(settings)
    return settings


def output_settings(
    cli: dict[str, Any], config_file: str | Path | None = None, pyproject: str | Path | None = None
) -> dict[str, Any]:
    """Where the results file and the report go, read leniently from the sources of :func:`resolve_settings`.

    For a run whose settings are invalid: the one-line error is still written to both files. A source that cannot
    be read, and any value of the wrong type, is passed over; the rest of the settings are not looked at.
    """
    defaults = AuditSettings()
    out: dict[str, Any] = {"audit_json": None, "report": None, "report_thumbnail": defaults.report_thumbnail,
                           "report_max_mb": defaults.report_max_mb}
    tables: list[dict[str, Any]] = []
    for path, table in ((pyproject, "tool.vit-audit"), (config_file, None)):
        if path is not None and Path(path).is_file():
            try:
                tables.append(read_toml_table(path, table))
            except ValueError:
                pass
    tables.append({k: v for k, v in cli.items() if v is not None})
    for table in tables:
        for key, value in (table.items() if isinstance(table, dict) else ()):
            name = str(key).replace("-", "_")
            if name in ("audit_json", "report") and isinstance(value, str):
                out[name] = _coerce(name, value, None)  # as resolve_settings reads it: "" or "none" turns it off
            elif name in ("report_thumbnail", "report_max_mb") and not isinstance(value, bool):
                try:
                    number = _coerce(name, value, out[name])
                except ValueError:
                    continue
                if (8 <= number <= 512) if name == "report_thumbnail" else number > 0:
                    out[name] = number
    return out


def _validate(s: AuditSettings) -> None:
    if s.device not in DEVICES:
        raise ValueError(f"device: {s.device!r} is not one of {', '.join(DEVICES)}")
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown or not s.methods:
        raise ValueError(f"methods: unknown {unknown or 'empty list'}; choose from {', '.join(METHODS)}")
    if s.act not in ACTIVATIONS:
        raise ValueError(f"act: {s.act!r} is not one of {', '.join(ACTIVATIONS)}")
    if s.amp not in (None, "bfloat16", "float16"):
        raise ValueError(f"amp: {s.amp!r} is not bfloat16 or float16")
    if s.unit not in ("pixel", "patch"):
        raise ValueError(f"unit: {s.unit!r} is not pixel or patch")
    for name in ("steps", "batch_size", "min_images", "randomisation_images", "report_thumbnail"):
        if getattr(s, name) < 1:
            raise ValueError(f"{name.replace('_', '-')}: expected a positive integer, got {getattr(s, name)}")
    if not 0.0 <= s.fill <= 1.0:
        raise ValueError(f"fill: {s.fill} is outside [0, 1]")
    if s.report_max_mb <= 0:
        raise ValueError(f"report-max-mb: expected a positive number, got {s.report_max_mb}")
    for gate in s.gate:
        method, _ = parse_gate(gate)
        if method not in s.methods:
            raise ValueError(f"gate: {gate!r} gates a map that --methods does not compute ({','.join(s.methods)})")
    for layer in s.layers:
        if layer != "all" and layer != "encoder":
            try:
                int(layer)
            except ValueError:
                raise ValueError(f"layers: {layer!r} is not a block index, 'encoder' or 'all'") from None
    if len(s.checkpoint) != len(s.model):
        raise ValueError(f"checkpoint: {len(s.checkpoint)} checkpoints for {len(s.model)} models; give one "
                         "--checkpoint per --model, in the same order ('pretrained' for timm's own weights)")
