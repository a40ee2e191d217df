"""The vit-audit checks: run them with ``pytest checks`` (project root) or the ``vit-audit`` command.

Every check reads results that the ``audit`` library computes once per run (see ``audit.run.session``); the options
and the policy come from the command line, ``--audit-config`` and ``[tool.vit-audit]`` in pyproject.toml.
"""
