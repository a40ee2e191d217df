"""Registers the vit-audit pytest plugin for ``pytest checks`` run from the project root."""

pytest_plugins = ["audit.plugin"]
