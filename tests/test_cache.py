"""The run cache: finished records kept between runs, a killed run resumed, bad cache folders and entries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audit.run.cache import RunCache, check_cache_dir

from conftest import audit_files, nested_audit

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "moon")
FAST = ["--methods", "cam,grad,random", "--gate", "cam@encoder", "--steps", "10", "--batch-size", "32"]
TIMING_KEYS = ("seconds", "created", "duration")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return audit_files(tmp_path_factory.mktemp("cache-data"), PHOTOS)


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)


def _args(files, *extra, images=None) -> list[str]:
    return [*nested_audit(), "--model", "test_vit", "--checkpoint", str(files["checkpoint"]),
            "--images", str(images or files["photos"]), *FAST, *extra]


def _numbers(path: Path) -> dict:
    """The results file without what only says when and how long."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in TIMING_KEYS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(json.loads(path.read_text()))


def _cached(folder: Path) -> list[Path]:
    """The finished entries (not a ``.tmp-*.json`` being written, nor one a kill left half-written)."""
    return sorted(p for p in (folder / "runs").glob("*.json") if not p.name.startswith("."))


@pytest.mark.e2e
def test_a_second_run_reuses_every_record_and_writes_the_same_results(pytester, files):
    first = pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", "store"))
    assert first.ret == pytest.ExitCode.OK
    assert len(_cached(pytester.path / "store")) == len(PHOTOS)
    assert f"cache: 0 record(s) reused, {len(PHOTOS)} computed" in first.stdout.str()
    second = pytester.runpytest(*_args(files, "--audit-json", "b.json", "--cache", "store"))
    assert f"cache: {len(PHOTOS)} record(s) reused, 0 computed" in second.stdout.str()
    assert second.ret == first.ret
    a, b = _numbers(pytester.path / "a.json"), _numbers(pytester.path / "b.json")
    a["settings"].pop("audit_json"), b["settings"].pop("audit_json")
    assert a == b


@pytest.mark.e2e
def test_the_default_cache_folder_and_no_cache(pytester, files):
    pytester.runpytest(*_args(files, "--audit-json", "a.json"))
    assert len(_cached(pytester.path / ".vit-audit-cache")) == len(PHOTOS)
    pytester.runpytest(*_args(files, "--audit-json", "b.json", "--no-cache", "--cache", "elsewhere"))
    assert not (pytester.path / "elsewhere").exists()
    assert json.loads((pytester.path / "b.json").read_text())["settings"]["no_cache"] is True


@pytest.mark.e2e
def test_a_record_made_with_another_recipe_is_never_served(pytester, files):
    pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", "store"))
    result = pytester.runpytest(*_args(files, "--audit-json", "b.json", "--cache", "store", "--steps", "9"))
    assert f"cache: 0 record(s) reused, {len(PHOTOS)} computed" in result.stdout.str()
    assert len(_cached(pytester.path / "store")) == 2 * len(PHOTOS)


@pytest.mark.parametrize("change", [dict(steps=9), dict(fill="black"), dict(fill=0.5), dict(seed=1),
                                    dict(methods=["cam"]), dict(amp="bfloat16"), dict(act="relu"),
                                    dict(score="top1"), dict(unit="patch"), dict(batch_size=7), dict(image_batch=3),
                                    dict(report_thumbnail=96), "label", "image", "checkpoint", "plan", "device"])
def test_every_setting_that_changes_a_record_changes_its_key(change):
    from dataclasses import replace
    from types import SimpleNamespace

    from audit.config.settings import AuditSettings
    from audit.run.cache import run_key
    from audit.run.plan import ModelPlan

    settings = AuditSettings(model=["m"], checkpoint=["c"], methods=["cam", "grad"])
    loaded = SimpleNamespace(name="m", checkpoint_sha256="a" * 64, data_config={"input_size": (3, 8, 8)})
    plan = ModelPlan(["encoder"], [("cam", "encoder")], ["cam@encoder", "random@encoder"])
    base = run_key(settings, loaded, plan, "cpu", "b" * 64, None)
    args = [settings, loaded, plan, "cpu", "b" * 64, None]
    if isinstance(change, dict):
        args[0] = replace(settings, **change)
    elif change == "label":
        args[5] = 3
    elif change == "image":
        args[4] = "c" * 64
    elif change == "checkpoint":
        args[1] = SimpleNamespace(**{**vars(loaded), "checkpoint_sha256": "d" * 64})
    elif change == "plan":
        args[2] = ModelPlan(["encoder"], [("cam", "encoder")], None)
    else:
        args[3] = "cuda"
    assert RunCache.digest(run_key(*args)) != RunCache.digest(base)
    assert run_key(settings, loaded, plan, "cpu", None, None) is None  # an unreadable image is never cached
    no_digest = SimpleNamespace(**{**vars(loaded), "checkpoint_sha256": None})
    assert run_key(settings, no_digest, plan, "cpu", "b" * 64, None) is None


@pytest.mark.e2e
def test_a_record_of_another_checkpoint_is_never_served(pytester, files, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(files["checkpoint"]))
    weights["head.bias"] = weights["head.bias"] + torch.linspace(0, 1, weights["head.bias"].numel())
    other = tmp_path / "other.safetensors"
    save_file(weights, str(other))
    pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", "store"))
    args = _args(files, "--audit-json", "b.json", "--cache", "store")
    args[args.index(str(files["checkpoint"]))] = str(other)
    result = pytester.runpytest(*args)
    assert f"cache: 0 record(s) reused, {len(PHOTOS)} computed" in result.stdout.str()


@pytest.mark.e2e
def test_one_image_added_computes_only_that_one(pytester, files, tmp_path):
    some = tmp_path / "some"
    some.mkdir()
    for photo in sorted(files["photos"].iterdir())[:-1]:
        (some / photo.name).write_bytes(photo.read_bytes())
    pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", "store", images=some))
    last = sorted(files["photos"].iterdir())[-1]
    (some / last.name).write_bytes(last.read_bytes())
    result = pytester.runpytest(*_args(files, "--audit-json", "b.json", "--cache", "store", images=some))
    assert f"cache: {len(PHOTOS) - 1} record(s) reused, 1 computed" in result.stdout.str()


@pytest.mark.e2e
def test_a_corrupt_entry_is_ignored_with_a_warning_and_recomputed(pytester, files):
    pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", "store"))
    entries = _cached(pytester.path / "store")
    entries[0].write_text('{"key": {"truncated')
    entries[1].write_text(json.dumps({"key": {"another": "key"}, "record": {}}))
    result = pytester.runpytest(*_args(files, "--audit-json", "b.json", "--cache", "store"))
    out = result.stdout.str()
    assert f"cache: {len(PHOTOS) - 2} record(s) reused, 2 computed" in out
    assert "2 unusable entries ignored" in out
    assert "is not valid JSON (a corrupt or truncated entry); ignored and recomputed" in out
    assert "was made for another key" in out
    a, b = _numbers(pytester.path / "a.json"), _numbers(pytester.path / "b.json")
    assert a["runs"] == b["runs"] and a["gates"] == b["gates"]
    json.loads(entries[0].read_text())  # rewritten whole


@pytest.mark.e2e
def test_a_cache_that_is_a_file_or_cannot_be_made_is_a_usage_error(pytester, files):
    (pytester.path / "plain").write_text("x")
    for target, expected in (("plain", "cache: 'plain' is not a folder; give --cache a folder (or --no-cache)"),
                             ("plain/sub", "cache: cannot create 'plain/sub'")):
        result = pytester.runpytest(*_args(files, "--audit-json", "a.json", "--cache", target))
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        assert expected in result.stderr.str()
        results = json.loads((pytester.path / "a.json").read_text())  # the error is written, as for any usage error
        assert expected in json.dumps(results)


def test_check_cache_dir_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder to a non-root user
    with pytest.raises(ValueError, match="cache: '.*' cannot be written; give --cache a writable folder"):
        check_cache_dir(tmp_path / "c")


def test_an_unreadable_entry_warns_and_counts_as_computed(tmp_path):
    cache = RunCache(tmp_path / "c")
    key = {"a": 1}
    cache.put(key, {"x": 1.5})
    assert cache.get(key) == {"x": 1.5} and cache.get({"a": 2}) is None
    cache.path(key).write_bytes(b"\xff\xfe")
    with pytest.warns(UserWarning, match="ignored and recomputed"):
        assert cache.get(key) is None
    assert (cache.hits, cache.misses) == (1, 2)


@pytest.mark.e2e
def test_a_killed_run_resumes_without_recomputing_and_gives_the_same_results(pytester, files):
    """SIGKILL a run once some records are on disk; the rerun computes only the rest, and its results file equals
    that of a run that was never stopped."""
    args = _args(files, "--layers", "all", "--steps", "60", "--cache", "store")
    command = [sys.executable, "-m", "pytest", *args, "--audit-json", "killed.json", "-q"]
    process = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_cached(pytester.path / "store")) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(_cached(pytester.path / "store"))
    assert 2 <= done < len(PHOTOS), f"{done} records when killed: the run was not stopped part-way"
    assert not (pytester.path / "killed.json").exists()
    resumed = pytester.runpytest(*args, "--audit-json", "resumed.json")
    assert f"cache: {done} record(s) reused, {len(PHOTOS) - done} computed" in resumed.stdout.str()
    whole = pytester.runpytest(*[a if a != "store" else "fresh" for a in args], "--audit-json", "whole.json")
    assert "cache: 0 record(s) reused" in whole.stdout.str()
    a, b = _numbers(pytester.path / "resumed.json"), _numbers(pytester.path / "whole.json")
    for results in (a, b):
        results["settings"].pop("audit_json"), results["settings"].pop("cache")
    assert a == b
