"""The audit's HTML report: one self-contained file (inline PNG and SVG, no script) rendered from a results file.

``render_report(results, path)`` is what ``pytest checks --report PATH`` calls at the end of the run.
"""

from .render import overall_verdict, read_results, render_report

__all__ = ["overall_verdict", "read_results", "render_report"]
