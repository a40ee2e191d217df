"""The Ray executor: records made as Ray tasks on a local cluster of two workers equal a local run's, a worker
killed mid-run loses no record, and Ray missing or a cluster that cannot be reached is one line and exit 4.

The cluster is started by the tests on this machine (two worker processes, one CPU each) and stopped, with its
temporary files removed, whatever the tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from conftest import audit_files, nested_audit

pytest_plugins = ["pytester"]

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera", "moon")
FAST = ["--methods", "cam,grad,random", "--gate", "cam@encoder", "--steps", "10", "--batch-size", "32",
        "-k", "test_faithfulness"]  # the faithfulness and gate checks: they read every record
TOLERANCE = 1e-6
TIMING_KEYS = ("seconds", "created", "duration")
HOW = {"/settings": ("executor", "ray_address", "audit_json", "cache", "no_cache", "origins"),  # how and where,
       "/environment": ("threads",)}  # not what, a run computed (the driver's threads; each task has one)
TASK_TITLE = b"ray::_make_record"  # the process title of a Ray worker while it runs a record's task


def _ray():
    try:
        import ray
    except ImportError:
        message = "needs Ray: pip install -e '.[test]' (or '.[ray]')"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return ray


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return audit_files(tmp_path_factory.mktemp("ray-data"), PHOTOS)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster on this machine: a head node whose two CPUs run two worker processes."""
    ray = _ray()
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # Ray's Cluster writes the head's address under $RAY_TMPDIR/ray (default /tmp/ray), a folder it does not make
    (Path(temp) / "ray").mkdir()
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    started = None
    try:
        started = Cluster(initialize_head=True, shutdown_at_exit=False,
                          head_node_args={"num_cpus": 2, "include_dashboard": False, "temp_dir": temp})
        yield started
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if started is not None:
            started.shutdown()
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory) -> dict:
    """A local run's results file, made in this process with one torch thread as each Ray task has: float32 sums
    taken in another order can flip near-ties in a map's ranking and move an AUC by more than 1e-6."""
    folder = tmp_path_factory.mktemp("local-run")
    here, threads = Path.cwd(), torch.get_num_threads()
    os.chdir(folder)
    torch.set_num_threads(1)
    try:
        code = pytest.main(_args(files, "--audit-json", "local.json", "--no-cache", "-q"))
    finally:
        torch.set_num_threads(threads)
        os.chdir(here)
    assert code in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    return json.loads((folder / "local.json").read_text())


@pytest.fixture(autouse=True)
def _isolated(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)


def _args(files, *extra) -> list[str]:
    return [*nested_audit(), "--model", "test_vit", "--checkpoint", str(files["checkpoint"]),
            "--images", str(files["photos"]), *FAST, *extra]


def _compare(ours, theirs, where: str = "") -> int:
    """Assert two results files are equal but for timings and how they were run (numbers to 1e-6); the count of
    numbers compared."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        skip = TIMING_KEYS + HOW.get(where, ())
        keys = [k for k in ours if k not in skip]
        assert sorted(keys) == sorted(k for k in theirs if k not in skip), where
        return sum(_compare(ours[k], theirs[k], f"{where}/{k}") for k in keys)
    if isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        return sum(_compare(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(ours, theirs)))
    if isinstance(ours, float) and isinstance(theirs, (int, float)):
        assert abs(ours - theirs) <= TOLERANCE, f"{where}: {ours} vs {theirs}"
        return 1
    assert ours == theirs, f"{where}: {ours!r} vs {theirs!r}"
    return 0


def _check_equal(results: dict, reference: dict) -> None:
    assert results["settings"]["executor"] == "ray" and reference["settings"]["executor"] == "local"
    assert _compare(results, reference) > 0
    runs = results["runs"]
    assert len(runs) == len(PHOTOS) and not any(run.get("error") for run in runs)
    aucs = [m["morf_auc"] for run in runs for m in run["maps"].values() if m["morf_auc"] is not None]
    grids = [m["grid"] for run in runs for m in run["maps"].values()]
    assert len(aucs) == 2 * len(PHOTOS) and len(grids) >= 3 * len(PHOTOS)  # cam and random curves; every map's grid


def _cached(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "runs").glob("*.json") if not p.name.startswith("."))


@pytest.mark.e2e
def test_records_made_as_ray_tasks_equal_a_local_run_and_stream_into_the_cache(pytester, files, cluster, reference):
    result = pytester.runpytest(*_args(files, "--executor", "ray", "--ray-address", cluster.address,
                                       "--audit-json", "ray.json", "--cache", "store"))
    out = result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), out
    assert f"executor ray (the Ray cluster at {cluster.address!r}: 2 CPUs, 0 GPUs; one CPU per task, on cpu" in out
    assert f"ray: {len(PHOTOS)} record(s) made by Ray tasks" in out and "failed for good" not in out
    assert f"cache: 0 record(s) reused, {len(PHOTOS)} computed" in out
    assert len(_cached(pytester.path / "store")) == len(PHOTOS)
    _check_equal(json.loads((pytester.path / "ray.json").read_text()), reference)

    again = pytester.runpytest(*_args(files, "--executor", "ray", "--ray-address", cluster.address,
                                      "--audit-json", "again.json", "--cache", "store"))
    assert f"cache: {len(PHOTOS)} record(s) reused, 0 computed" in again.stdout.str()
    assert "made by Ray tasks" not in again.stdout.str()  # no task was needed
    _check_equal(json.loads((pytester.path / "again.json").read_text()), reference)


def _running_tasks(parent: int) -> list[int]:
    """The worker processes of ``parent`` (the cluster's raylet) running a record's task now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent:  # the field after the state: the parent's pid
            pids.append(int(entry.name))
    return pids


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds Ray's worker processes in /proc (Linux)")
def test_a_worker_killed_mid_run_loses_no_record(pytester, files, cluster, reference):
    raylet = cluster.head_node.all_processes["raylet"][0].process.pid
    store, killed, stop = pytester.path / "store", [], threading.Event()

    def kill_one_running_task() -> None:  # once a record is done: mid-run
        while not stop.is_set():
            tasks = _running_tasks(raylet) if store.exists() and _cached(store) else []
            if tasks:
                os.kill(tasks[0], signal.SIGKILL)
                killed.append(tasks[0])
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_running_task, daemon=True)
    killer.start()
    try:
        result = pytester.runpytest(*_args(files, "--executor", "ray", "--ray-address", cluster.address,
                                           "--audit-json", "ray.json", "--cache", "store"))
    finally:
        stop.set()
        killer.join()
    out = result.stdout.str()
    assert len(killed) == 1, "no task was running once the first record was done"
    assert f"ray: {len(PHOTOS)} record(s) made by Ray tasks" in out and "failed for good" not in out, out
    assert len(_cached(store)) == len(PHOTOS)
    _check_equal(json.loads((pytester.path / "ray.json").read_text()), reference)


@pytest.mark.e2e
def test_a_cluster_lost_mid_run_is_one_line_and_a_usage_error_that_keeps_the_finished_records(pytester, files,
                                                                                               monkeypatch):
    from audit.errors import ExecutorError
    from audit.run.executors import LocalExecutor

    made = LocalExecutor.make

    def lost_after_two(self, session, cases):
        for done, case in enumerate(made(self, session, cases), 1):
            yield case
            if done == 2:
                raise ExecutorError("executor: lost the Ray cluster at 'head:6379' (Connection reset) after 2 "
                                    "record(s), which are kept in the cache; run again to resume")

    monkeypatch.setattr(LocalExecutor, "make", lost_after_two)
    result = pytester.runpytest(*_args(files, "--audit-json", "r.json", "--cache", "store"))
    assert _usage_error(result) == ("ERROR: executor: lost the Ray cluster at 'head:6379' (Connection reset) after 2 "
                                    "record(s), which are kept in the cache; run again to resume")
    assert len(json.loads((pytester.path / "r.json").read_text())["runs"]) == 2
    assert len(_cached(pytester.path / "store")) == 2


def test_an_image_sent_as_bytes_is_prepared_and_named_as_its_file(files, tmp_path):
    from audit import load_model
    from audit.errors import ImageError
    from audit.model.images import prepare_image

    config = load_model("test_vit", files["checkpoint"]).data_config
    path = files["photos"] / "chelsea.png"
    sent = prepare_image(path.read_bytes(), config, name="chelsea", source=str(path))
    read = prepare_image(str(path), config, name="chelsea")
    assert (sent.name, sent.source) == (read.name, read.source) and torch.equal(sent.pixel, read.pixel)
    broken = tmp_path / "broken.png"
    broken.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageError) as from_file:
        prepare_image(str(broken), config)
    with pytest.raises(ImageError) as from_bytes:
        prepare_image(broken.read_bytes(), config, source=str(broken))
    assert str(from_bytes.value) == str(from_file.value) and repr(str(broken)) in str(from_bytes.value)


def _usage_error(result) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.str()
    return errors[0]


@pytest.mark.e2e
def test_executor_ray_without_ray_installed_is_one_line_and_a_usage_error(pytester, files, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray: ImportError
    pytester.runpytest(*_args(files, "--audit-json", "first.json", "--cache", "store", "-k",
                              "test_faithfulness and chelsea"))
    assert len(_cached(pytester.path / "store")) == 1
    result = pytester.runpytest(*_args(files, "--executor", "ray", "--audit-json", "r.json", "--cache", "store"))
    assert _usage_error(result).startswith("ERROR: executor: ray is not installed; pip install 'vit-audit[ray]' "
                                           "(or use --executor local)")
    assert json.loads((pytester.path / "r.json").read_text())["error"].startswith("executor: ray is not installed")
    assert len(_cached(pytester.path / "store")) == 1  # what an earlier run made is kept


@pytest.mark.e2e
def test_a_ray_address_that_cannot_be_reached_is_one_line_and_a_usage_error(pytester, files):
    _ray()
    with socket.socket() as bound:  # a port bound but never listened on: a connection there is refused
        bound.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{bound.getsockname()[1]}"
        started = time.perf_counter()
        result = pytester.runpytest(*_args(files, "--executor", "ray", "--ray-address", address, "--no-cache"))
    assert _usage_error(result).startswith(f"ERROR: ray-address: cannot reach a Ray cluster at {address!r} ("
                                           "Connection refused); start one there (ray start --head) or fix "
                                           "--ray-address")
    assert time.perf_counter() - started < 30  # not Ray's own minutes of retries
