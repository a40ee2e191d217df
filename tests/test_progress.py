"""The progress line: image i/n with seconds per image and an ETA, quiet under -q, from the controller with xdist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from audit.run.progress import Progress

from conftest import audit_files, nested_audit

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut")
FAST = ["--methods", "cam,random", "--gate", "cam@encoder", "--steps", "5", "--batch-size", "32", "--no-cache"]
LINE = re.compile(r"vit-audit: image (\d+)/(\d+) \(\d+\.\d s/image, (ETA|done in) [\d:]+( s)?\)")


class _Reporter:
    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def write_line(self, text):
        self.calls.append(("line", text))

    def rewrite(self, text, erase=False):
        self.calls.append(("rewrite", text))

    def ensure_newline(self):
        self.calls.append(("newline", ""))

    def write(self, text):
        self.calls.append(("write", text))


@pytest.mark.parametrize("live", [False, True])
def test_progress_writes_one_line_per_image_and_ends_the_live_line(live):
    reporter = _Reporter()
    progress = Progress(reporter, 3, live=live)
    for _ in range(3):
        progress.advance()
    progress.advance(2)  # a count that did not grow writes nothing
    written = [text for kind, text in reporter.calls if kind == ("rewrite" if live else "line")]
    assert [LINE.fullmatch(text).group(1, 2) for text in written] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert "ETA" in written[0] and "done in" in written[-1]
    assert (reporter.calls[-1] == ("write", "\n")) == live


def test_no_reporter_writes_nothing():
    progress = Progress(None, 2, live=False)
    progress.advance()
    assert progress.done == 1 and LINE.fullmatch(progress.line())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return audit_files(tmp_path_factory.mktemp("progress-data"), PHOTOS)


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)


def _args(files, *extra):
    return [*nested_audit(), "--model", "test_vit", "--checkpoint", str(files["checkpoint"]),
            "--images", str(files["photos"]), *FAST, *extra]


def _progress_lines(text: str) -> list[tuple[str, str]]:
    return [m.group(1, 2) for m in LINE.finditer(text)]


@pytest.mark.e2e
def test_an_audit_prints_progress_before_the_checks_and_nothing_under_quiet(pytester, files):
    result = pytester.runpytest(*_args(files))
    out = result.stdout.str()
    assert _progress_lines(out) == [("1", "3"), ("2", "3"), ("3", "3")]
    assert out.index("vit-audit: image 3/3") < out.index("test_faithfulness.py")  # made before the checks run
    assert "plan: 3 images x 2 maps with curves x 8 removal forwards" in out
    assert "curves for the gated maps and random at their stages only: cam@encoder, random@encoder" in out
    quiet = pytester.runpytest(*_args(files, "-q"))
    assert _progress_lines(quiet.stdout.str()) == []


@pytest.mark.e2e
def test_only_the_records_the_selected_checks_read_are_made(pytester, files):
    pytester.runpytest(*_args(files, "-k", "faithfulness and not gate and chelsea", "--audit-json", "r.json"))
    results = json.loads((pytester.path / "r.json").read_text())
    assert [run["image_id"] for run in results["runs"]] == ["chelsea"]


@pytest.mark.e2e
def test_with_xdist_the_controller_reports_the_workers_records(pytester, files):
    result = pytester.runpytest(*_args(files, "-n", "2"))
    assert ("3", "3") in _progress_lines(result.stdout.str())
    assert result.ret == pytest.ExitCode.OK or result.ret == pytest.ExitCode.TESTS_FAILED
