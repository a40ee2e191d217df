"""mkdocs hook: the pages' tables that are generated from the code when the site is built.

- ``<!-- generated: options -->``: every option from its one definition (:data:`audit.config.settings.OPTIONS`,
  the help text ``pytest --help`` and ``vit-audit --help`` print) with its default (:class:`AuditSettings`).
- ``<!-- generated: maps -->``: every registered map method (:func:`audit.maps.registry.methods_table`).
"""

from __future__ import annotations

import dataclasses

OPTIONS_MARK = "<!-- generated: options -->"
MAPS_MARK = "<!-- generated: maps -->"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def options_table() -> str:
    from audit.config.settings import LIST_OPTIONS, OPTIONS, AuditSettings

    defaults = {}
    for f in dataclasses.fields(AuditSettings):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    rows = ["| option | TOML key | default | meaning |", "| --- | --- | --- | --- |"]
    for name, (help_text, metavar) in OPTIONS.items():
        flag = f"--{name.replace('_', '-')}" + (f" {metavar}" if metavar else "")
        if name in LIST_OPTIONS:
            flag += " (repeatable)"
        default = defaults.get(name)
        shown = "" if default in (None, [], {}) else f"`{','.join(default) if isinstance(default, list) else default}`"
        rows.append(f"| `{flag}` | `{name.replace('_', '-')}` | {_cell(shown)} | {_cell(help_text)} |")
    rows.append("| `--audit-config TOML` | | | TOML file of vit-audit options (its [tool.vit-audit] table, or the "
                "whole file) |")
    return "\n".join(rows)


def maps_table() -> str:
    from audit.maps.registry import methods_table

    rows = ["| method | family | stages | reads (what the randomisation check randomises) | map | defined in |",
            "| --- | --- | --- | --- | --- | --- |"]
    for m in methods_table():
        rows.append(f"| `{m['name']}` | {m['family']} | {m['stages']} | {_cell(m['reads'])} | {_cell(m['summary'])} | "
                    f"{_cell(m['citation'])} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - mkdocs' hook signature
    if OPTIONS_MARK in markdown:
        markdown = markdown.replace(OPTIONS_MARK, options_table())
    if MAPS_MARK in markdown:
        markdown = markdown.replace(MAPS_MARK, maps_table())
    return markdown
