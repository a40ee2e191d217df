"""What a run writes, and where: outputs of an interrupted run, refused output targets, failed writes, and nothing
beside the installed package (nested pytest runs with pytester, and the ``vit-audit`` command as a subprocess)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

from audit import cli
from audit.results.schema import stopped_results
from audit.run.outputs import write_outputs

from conftest import nested_audit, save_tiny

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut")
# the randomisation check on 2 images and 1 seed: its default (10 x 3) is tests/test_sanity.py's to test
FAST = ["--methods", "cam,grad,random", "--layers", "encoder", "--steps", "10", "--batch-size", "32",
        "--randomisation-images", "2", "--randomisation-seeds", "1"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> dict[str, Path]:
    """test_vit weights as safetensors, a folder of one photo, and a folder of many (for a run still going)."""
    root = tmp_path_factory.mktemp("output-data")
    save_tiny("test_vit", root / "test_vit.safetensors")
    one, many = root / "one", root / "many"
    one.mkdir()
    many.mkdir()
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        Image.fromarray(array).convert("RGB").resize((200, 160)).save(many / f"{name}.png")
    shutil.copy(many / "chelsea.png", one / "chelsea.png")
    for i in range(60):  # distinct images (identical ones are counted once)
        picture = Image.open(many / f"{PHOTOS[i % len(PHOTOS)]}.png")
        picture.putpixel((i, 0), (i, 255 - i, 0))
        picture.save(many / f"copy{i:02d}.png")
    return {"checkpoint": root / "test_vit.safetensors", "one": one, "many": many}


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    """Nested runs take their policy from the test's own folder, not from this project's pyproject.toml."""
    monkeypatch.chdir(pytester.path)


def _args(files, *extra, images=None):
    return [*nested_audit(), "--model", "test_vit", "--checkpoint", str(files["checkpoint"]), "--images",
            str(images or files["one"]), *FAST, *extra]


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.lines if line.startswith("ERROR:")]


def _guard_writers(monkeypatch, targets) -> list[str]:
    """Make the atomic writer refuse (and record) any write to ``targets``; other writes (the run's records) go on."""
    import audit.reports.render
    import audit.results.schema

    original = audit.results.schema.write_text_atomically
    refused = {os.path.abspath(t) for t in targets}
    attempts: list[str] = []

    def guarded(path, text):
        if os.path.abspath(path) in refused:
            attempts.append(str(path))
            raise OSError(errno.EACCES, "the test refuses this write", str(path))
        return original(path, text)

    monkeypatch.setattr(audit.results.schema, "write_text_atomically", guarded)
    monkeypatch.setattr(audit.reports.render, "write_text_atomically", guarded)
    return attempts


# -- SIGTERM ---------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_sigterm_writes_what_is_done_marks_it_interrupted_and_removes_the_temporary_folder(tiny_files, tmp_path):
    command = shutil.which("vit-audit")
    assert command, "the vit-audit console script is not installed: pip install -e '.[test]'"
    temp, work = tmp_path / "tmp", tmp_path / "work"
    temp.mkdir()
    work.mkdir()
    n_images = len(list(tiny_files["many"].iterdir()))
    with open(tmp_path / "out.txt", "w") as out:
        process = subprocess.Popen([command, "--model", "test_vit", "--checkpoint", str(tiny_files["checkpoint"]),
                                    "--images", str(tiny_files["many"]), *FAST, "--audit-json", "r.json",
                                    "--report", "r.html"], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TMPDIR": str(temp)})
        try:
            deadline = time.monotonic() + 120
            while not list(temp.glob("vit-audit-*/runs/*.json")):  # an image audited: the run is under way
                assert process.poll() is None, (tmp_path / "out.txt").read_text()[-3000:]
                assert time.monotonic() < deadline, "the run did not start auditing within 120 s"
                time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = (tmp_path / "out.txt").read_text()
    assert status == 2, output[-3000:]  # pytest's "interrupted"
    results = json.loads((work / "r.json").read_text())
    assert results["schema"] == "vit-audit/1" and results["interrupted"] == "SIGTERM"
    assert 0 < len(results["runs"]) < n_images, "the run was not interrupted part way"
    assert (work / "r.html").read_text().rstrip().endswith("</html>")
    assert "interrupted by SIGTERM" in output
    # besides the named outputs, only the default cache: it keeps every record finished before the signal
    assert sorted(p.name for p in work.iterdir()) == [".vit-audit-cache", "r.html", "r.json"]
    assert len(list((work / ".vit-audit-cache" / "runs").glob("*.json"))) >= len(results["runs"])
    assert list(temp.glob("vit-audit-*")) == []


# -- output targets --------------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("option", ["--audit-json", "--report"])
@pytest.mark.parametrize("link", [False, True], ids=["fifo", "link-to-fifo"])
def test_an_output_target_that_is_not_a_regular_file_is_a_usage_error_and_is_left_alone(
        pytester, tiny_files, option, link):
    fifo = pytester.path / "pipe"
    os.mkfifo(fifo)
    target = fifo
    if link:
        target = pytester.path / "link"
        target.symlink_to(fifo)
    result = pytester.runpytest(*_args(tiny_files, option, str(target)))
    assert result.ret == 4
    errors = _error_lines(result)
    assert len(errors) == 1, result.stderr.str()
    assert errors[0].startswith(f"ERROR: {option[2:]}: {str(target)!r} is a named pipe (FIFO), not a regular file")
    assert stat.S_ISFIFO(os.stat(target).st_mode) and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not link or os.path.islink(target)
    assert sorted(p.name for p in pytester.path.iterdir()) == sorted(["pipe"] + (["link"] if link else []))


@pytest.mark.e2e
def test_dev_null_is_refused_before_anything_is_written(pytester, tiny_files, monkeypatch):
    attempts = _guard_writers(monkeypatch, ["/dev/null"])  # never replace the system's /dev/null, even on a bug
    result = pytester.runpytest(*_args(tiny_files, "--audit-json", "/dev/null", "--report", "/dev/null"))
    assert result.ret == 4
    assert _error_lines(result) == ["ERROR: audit-json: '/dev/null' is a character device, not a regular file; "
                                    "choose a regular file path (results file: not written either; report: not "
                                    "written either)"]
    assert attempts == []
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.e2e
def test_the_same_path_for_both_outputs_is_a_usage_error(pytester, tiny_files):
    pytester.mkdir("sub")
    result = pytester.runpytest(*_args(tiny_files, "--audit-json", "out.html", "--report", "sub/../out.html"))
    assert result.ret == 4
    errors = _error_lines(result)
    assert len(errors) == 1, result.stderr.str()
    assert errors[0].startswith("ERROR: report: 'sub/../out.html' is the same file as the results file 'out.html'; "
                                "give --report and --audit-json different paths")
    results = json.loads((pytester.path / "out.html").read_text())  # the stopped run's results file, not a report
    assert "is the same file as the results file" in results["error"]


def test_the_writer_refuses_a_target_that_became_not_a_regular_file(tmp_path):
    json_fifo, report_fifo = tmp_path / "r.json", tmp_path / "r.html"
    os.mkfifo(json_fifo)
    os.mkfifo(report_fifo)
    outcomes = write_outputs(stopped_results("stopped"), str(json_fifo), str(report_fifo), 64, 5.0)
    assert [(name, path) for name, _, path, _ in outcomes] == [("results", None), ("report", None)]
    assert all("is a named pipe (FIFO), not a regular file" in detail for *_, detail in outcomes)
    assert stat.S_ISFIFO(os.lstat(json_fifo).st_mode) and stat.S_ISFIFO(os.lstat(report_fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]  # no temporary file left either


# -- failed writes ---------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_results_file_that_cannot_be_written_at_the_end_makes_the_exit_status_4(pytester, tiny_files, monkeypatch):
    import audit.results.schema

    original = audit.results.schema.write_text_atomically

    def disk_full(path, text):
        if Path(path).name == "r.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(path, text)

    monkeypatch.setattr("audit.results.schema.write_text_atomically", disk_full)
    result = pytester.runpytest(*_args(tiny_files, "--audit-json", "r.json", "-k", "restoration"))
    assert result.ret == 4, result.stdout.str()
    result.stdout.fnmatch_lines(["results: NOT written to r.json (*No space left on device*)"])
    assert "passed" in result.stdout.str() and "failed" not in result.stdout.str()


# -- nothing beside the package --------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under ``root``, with its modification time."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            entries[str(path.relative_to(root))] = path.lstat().st_mtime_ns
    return entries


@pytest.mark.e2e
def test_vit_audit_writes_nothing_beside_the_installed_package(tiny_files, tmp_path):
    command = shutil.which("vit-audit")
    assert command, "the vit-audit console script is not installed: pip install -e '.[test]'"
    # An installed copy of the checkout (compiled, as pip compiles what it installs), found first on PYTHONPATH:
    # the shared checkout is not written to, and other runs there do not disturb the snapshot.
    install = tmp_path / "install"
    install.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    # laid out as pip installs it: the checks and the report under the audit namespace
    for name, target in (("audit", "audit"), ("checks", "audit/checks"), ("reports", "audit/reports")):
        shutil.copytree(ROOT / name, install / target, ignore=ignore)
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy(ROOT / name, install / name)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(install)], check=True)
    before = _snapshot(install)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(install), *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run([command, "--model", "test_vit", "--checkpoint", str(tiny_files["checkpoint"]), "--images",
                          str(tiny_files["one"]), *FAST, "--audit-json", "r.json", "--report", "r.html"], cwd=work,
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"rootdir: {install}" in run.stdout  # the copy was audited with, not the checkout
    after = _snapshot(install)
    assert sorted(set(after) - set(before)) == [] and {k: v for k, v in after.items() if before[k] != v} == {}
    assert sorted(p.name for p in work.iterdir()) == [".vit-audit-cache", "r.html", "r.json"]  # and the cache


@pytest.mark.parametrize("args, expected", [
    ([], ["-p", "no:cacheprovider"]),
    (["--model", "m", "-q"], ["-p", "no:cacheprovider"]),
    (["--lf"], ["-o", "cache_dir=<cwd>"]),
    (["--sw"], ["-o", "cache_dir=<cwd>"]),
    (["-p", "cacheprovider"], ["-o", "cache_dir=<cwd>"]),
])
def test_the_command_turns_pytest_s_cache_off_unless_asked_and_then_keeps_it_in_the_current_folder(args, expected):
    cache = str(Path.cwd() / ".pytest_cache")
    assert cli._cache_args(args) == [a.replace("<cwd>", cache) for a in expected]


@pytest.mark.e2e
@pytest.mark.parametrize("flag", ["--collect-only", "--co"])
def test_collect_only_writes_nothing(pytester, tiny_files, flag):
    (pytester.path / "r.json").write_bytes(b'{"schema": "vit-audit/1", "mine": 1}')
    result = pytester.runpytest(*_args(tiny_files, flag, "--audit-json", "r.json", "--report", "new/r.html"))
    assert result.ret == 0, result.stdout.str()
    assert "test_restoration[test_vit-chelsea]" in result.stdout.str()
    result.stdout.fnmatch_lines(["*= vit-audit =*", "nothing audited (--collect-only): the results file and the "
                                 "report were not written"])
    assert (pytester.path / "r.json").read_bytes() == b'{"schema": "vit-audit/1", "mine": 1}'
    assert sorted(p.name for p in pytester.path.iterdir()) == ["r.json"]  # not even the report's folder
    stopped = pytester.runpytest(*_args(tiny_files, flag, "--steps", "0", "--audit-json", "r.json"))
    assert stopped.ret == 4 and _error_lines(stopped) == ["ERROR: steps: expected a positive integer, got 0"]
    assert (pytester.path / "r.json").read_bytes() == b'{"schema": "vit-audit/1", "mine": 1}'
