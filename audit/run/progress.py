"""Progress of an audit: image i/n, seconds per image and an ETA, on pytest's terminal while the records are made.

Without pytest-xdist the (model, image) records the selected checks need are computed before the checks run (one
after the other, or as Ray tasks under ``--executor ray``), with a live line on a terminal (rewritten in place) and
one plain line per image otherwise. With xdist the workers compute them; the controller prints a plain line whenever
the count of finished records grows. Nothing is printed under ``-q``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["Progress", "RecordWatcher", "make_records", "needed_cases"]

RUN_FIXTURES = {"audit_gate", "audit_map", "audit_comparison"}  # checks that read every image's record


def needed_cases(session, items: list[Any]) -> list:
    """The cases whose records the selected checks read, in the run's order."""
    cases = session.cases()
    if any(RUN_FIXTURES & set(getattr(item, "fixturenames", ())) for item in items):
        return cases
    wanted = {item.callspec.params["audit_case"].key for item in items
              if hasattr(item, "callspec") and "audit_case" in item.callspec.params}
    return [case for case in cases if case.key in wanted]


def make_records(session, items: list[Any], config) -> None:
    """Make the records the selected checks read with the run's executor (:mod:`audit.run.executors`), showing
    progress as each is done. A record that raises is left for its check to compute again and report."""
    cases = needed_cases(session, items)
    progress = Progress.for_config(config, len(cases))
    progress.start()
    for _ in session.executor.make(session, cases):
        progress.advance()


class Progress:
    """Writes ``vit-audit: image i/n (s/image, ETA)`` lines to pytest's terminal reporter.

    Args:
        reporter: pytest's terminal reporter, or None (nothing is written).
        total: the records to make.
        live: rewrite one line in place (a terminal) instead of writing a line per image.
    """

    def __init__(self, reporter, total: int, live: bool):
        self.reporter, self.total, self.live = reporter, total, live
        self.done = 0
        self.started = time.perf_counter()

    @classmethod
    def for_config(cls, config, total: int, live: bool = True) -> Progress:
        """Progress on pytest's terminal (none under ``-q``); ``live`` where it is a terminal and ``live`` is asked."""
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or config.get_verbosity() < 0:
            reporter = None
        live = live and reporter is not None and reporter._tw.hasmarkup and reporter.isatty()
        return cls(reporter, total, live)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        if self.done == 0:
            return f"vit-audit: image 0/{self.total}"
        per_image = elapsed / self.done
        left = per_image * (self.total - self.done)
        return (f"vit-audit: image {self.done}/{self.total} ({per_image:.1f} s/image, "
                f"{'done in ' + _clock(elapsed) if self.done >= self.total else 'ETA ' + _clock(left)})")

    def advance(self, done: int | None = None) -> None:
        """One more record finished (or ``done`` of them in all); writes the line when the count grew."""
        count = self.done + 1 if done is None else min(done, self.total)
        if count <= self.done:
            return
        self.done = count
        if self.reporter is None:
            return
        if self.live:
            self.reporter.rewrite(self.line(), erase=True)
            if self.done >= self.total:
                self.reporter.ensure_newline()
                self.reporter.write("\n")
        else:
            self.reporter.write_line(self.line())

    def start(self) -> None:
        if self.reporter is not None and self.total:
            self.reporter.ensure_newline()
            if self.live:
                self.reporter.rewrite(self.line(), erase=True)


class RecordWatcher:
    """Counts the finished records in the run's shared folder (the controller's view under xdist)."""

    def __init__(self, workdir: str, progress: Progress):
        self.folder = Path(workdir) / "runs"
        self.progress = progress

    def poll(self) -> None:
        self.progress.advance(sum(1 for _ in self.folder.glob("*.json")))


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"
