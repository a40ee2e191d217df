"""Where a run's (model, image) records are made: one after the other in this process, or as tasks on a Ray cluster.

An executor is started before the checks run (a usage error when it cannot be), yields each case as its record is done,
and is closed with the run. ``local`` makes the records with :meth:`audit.run.work.RecordWork.run`. ``ray`` (the extra
``vit-audit[ray]``) makes every record that is neither stored nor cached as one Ray task: one GPU per task where the
cluster has GPUs and ``--device`` allows them, one CPU otherwise. Finished records stream back as they finish; the
session stores each in the run's records and the cache, which stay on this machine. A task whose worker died is run
again by Ray (``max_retries``); a task that fails for good leaves its record to its check, which makes it in this
process and reports what went wrong, as the local executor does.

A task carries what its worker may not see: the image's bytes, the settings, the recipe, the plan and the label (read
from ``--labels`` here). The checkpoint is read from the same absolute path on the worker, and one whose sha256 differs
from this machine's gives the record a one-line error. Each worker process loads a model once and keeps it for its next
tasks.
"""

from __future__ import annotations

import importlib.util
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from ..config.settings import AuditSettings, parse_ray_address
from ..errors import AuditError, ExecutorError
from ..model.restore import PatchInverse
from .inputs import load_named
from .records import RecordMaker
from .work import Case, RecordWork, RemoteTask

__all__ = ["LocalExecutor", "RayExecutor", "executor_for"]

MAX_RETRIES = 3  # runs of a task after the first, when its worker dies
CPUS_PER_TASK = 1  # each task's CPU share, and its torch threads
IN_FLIGHT_PER_SLOT = 2  # tasks submitted ahead of each task slot of the cluster (their images held meanwhile)
CONNECT_TIMEOUT_S = 5.0  # to find the cluster's port open before Ray is asked to connect


def executor_for(settings: AuditSettings) -> LocalExecutor | RayExecutor:
    """The executor ``--executor`` names (not started)."""
    return RayExecutor(settings.ray_address, settings.device) if settings.executor == "ray" else LocalExecutor()


class LocalExecutor:
    """The records made one after the other in this process."""

    def start(self) -> None:
        """Nothing to start."""

    def describe(self) -> str:
        return "local"

    def summary_lines(self) -> list[str]:
        return []

    def make(self, work: RecordWork, cases: Iterable[Case]) -> Iterator[Case]:
        """Make each case's record, yielding the case when it is done. Consecutive cases of one model are made in
        groups of ``--image-batch`` (:meth:`audit.run.work.RecordWork.run_group`). A record that raises is left for
        its check to compute again and report."""
        for group in _groups(work, cases):
            try:
                if len(group) > 1:
                    work.run_group(group)
                else:
                    work.run(group[0])
            except Exception:  # noqa: BLE001 - the check that reads each record reports the error
                pass
            yield from group

    def close(self) -> None:
        """Nothing to close."""


def _groups(work: RecordWork, cases: Iterable[Case]) -> Iterator[list[Case]]:
    """Consecutive cases of one model, at most the model's ``--image-batch`` in each group."""
    group: list[Case] = []
    size = 1
    for case in cases:
        if group and (case.model_id != group[0].model_id or len(group) >= size):
            yield group
            group = []
        if not group:
            size = work.image_batch(case.model_id)
        group.append(case)
    if group:
        yield group


class RayExecutor:
    """The records made as Ray tasks, on a cluster or on a Ray instance started on this machine.

    Args:
        address: ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; None starts a Ray instance on this machine.
        device: the run's ``--device``: ``cpu`` runs every task on one CPU; ``auto`` and ``cuda`` give each task one
            GPU where the cluster has GPUs (``cuda``: a usage error where it has none).
    """

    def __init__(self, address: str | None, device: str):
        self.address, self.device = address, device
        self.task_device = "cpu"
        self.slots = 1  # tasks the cluster runs at once
        self.resources: dict[str, float] = {}
        self._ray: Any = None
        self._task: Any = None
        self._connected_here = False  # ray.init was called by start(): close() shuts it down
        self.made = 0  # records made by Ray tasks in this run
        self.failed: list[str] = []  # why each task that failed for good failed (its check made its record here)

    @property
    def where(self) -> str:
        return f"the Ray cluster at {self.address!r}" if self.address else "a Ray instance on this machine"

    def start(self) -> None:
        """Connect to the cluster (or start a Ray instance on this machine), and decide where the tasks run.

        Raises:
            ExecutorError: one line: Ray is not installed, the cluster cannot be reached, or ``--device cuda`` was
                asked for on a cluster without GPUs.
        """
        try:
            import ray
        except ImportError:
            raise ExecutorError("executor: ray is not installed; pip install 'vit-audit[ray]' (or use --executor "
                                "local)") from None
        if not ray.is_initialized():
            endpoint = parse_ray_address(self.address) if self.address else None
            if endpoint is not None:
                assert self.address is not None  # an endpoint is parsed from the address
                _check_reachable(*endpoint, self.address)
            if self.address and self.address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
                raise ExecutorError(f"ray-address: {self.address!r} is reached through Ray Client, which is not "
                                    "installed; pip install 'ray[client]' (or give the cluster's HOST:PORT)")
            _init(ray, self.address)
            self._connected_here = True
        self._ray = ray
        try:
            self.resources = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            gpus, cpus = int(self.resources.get("GPU", 0)), int(self.resources.get("CPU", 0))
            if self.device == "cuda" and gpus == 0:
                raise ExecutorError(f"device: cuda was asked for but {self.where} has no GPUs; use --device auto "
                                    "or cpu")
            self.task_device = "cuda" if self.device != "cpu" and gpus > 0 else "cpu"
            self.slots = max(1, gpus if self.task_device == "cuda" else cpus // CPUS_PER_TASK)
            self._task = ray.remote(_make_record).options(
                num_cpus=CPUS_PER_TASK, num_gpus=1 if self.task_device == "cuda" else 0, max_retries=MAX_RETRIES,
                retry_exceptions=False)
        except BaseException:
            self.close()
            raise

    def describe(self) -> str:
        if self._task is None:
            return f"ray ({self.where}, not connected)"
        cpus, gpus = int(self.resources.get("CPU", 0)), int(self.resources.get("GPU", 0))
        share = "one GPU" if self.task_device == "cuda" else "one CPU"
        return (f"ray ({self.where}: {cpus} CPUs, {gpus} GPUs; {share} per task, on {self.task_device}, up to "
                f"{MAX_RETRIES} retries)")

    def make(self, work: RecordWork, cases: Iterable[Case]) -> Iterator[Case]:
        """Make the cases' records as Ray tasks, yielding each case when its record is stored.

        Raises:
            ExecutorError: one line, when the cluster is lost mid-run; the records finished by then are stored and
                cached.
        """
        ray = self._ray
        pending: dict[Any, tuple[Case, RemoteTask, float]] = {}
        todo = iter(cases)
        done = 0
        try:
            while True:
                for case in todo:
                    task = work.remote_task(case, self.task_device)
                    if task is None:  # had here: stored, cached, or failing before any model work
                        done += 1
                        yield case
                    else:
                        pending[self._task.remote(task.payload)] = (case, task, time.perf_counter())
                    if len(pending) >= self.slots * IN_FLIGHT_PER_SLOT:
                        break
                if not pending:
                    return
                try:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                except Exception as err:  # noqa: BLE001 - the connection itself failed: nothing more can be made
                    kept = "the results file and the cache" if work.caching else "the results file"
                    raise ExecutorError(f"executor: lost {self.where} ({_one_line(err)}) after {done} record(s), kept "
                                        f"in {kept}; run again to make the rest") from None
                case, task, started = pending.pop(ready[0])
                try:
                    record = ray.get(ready[0])
                except ray.exceptions.RayError as err:  # retries spent, or a bug: its check makes it here
                    self.failed.append(f"{case.id}: {_one_line(err)}")
                    done += 1
                    yield case
                    continue
                work.keep_remote(case, task, record, time.perf_counter() - started)
                self.made += 1
                done += 1
                yield case
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - the cluster may be gone already
                    pass

    def summary_lines(self) -> list[str]:
        """``ray: 18 record(s) made by Ray tasks ...`` and the tasks that failed for good, once tasks were run."""
        if not (self.made or self.failed):
            return []
        failed = (f"; {len(self.failed)} task(s) failed for good, their records made by their checks here (first: "
                  f"{self.failed[0]})" if self.failed else "")
        return [f"ray: {self.made} record(s) made by Ray tasks on {self.where}{failed}"]

    def close(self) -> None:
        """Disconnect from the cluster (and stop the Ray instance started on this machine)."""
        if self._connected_here and self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._connected_here = False


def _check_reachable(host: str, port: int, address: str) -> None:
    """A one-line ``ExecutorError`` when nothing answers at ``host:port`` (Ray would wait for minutes)."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else err.strerror or str(err)
        raise ExecutorError(f"ray-address: cannot reach a Ray cluster at {address!r} ({reason}); start one there "
                            "(ray start --head) or fix --ray-address") from None


def _init(ray: Any, address: str | None) -> None:
    """``ray.init``, keeping this process's SIGTERM handler (Ray replaces it with one that exits at once)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as err:  # noqa: BLE001 - whatever Ray raises, the run cannot use the cluster
        if address is None:
            raise ExecutorError(f"executor: cannot start a Ray instance on this machine ({_one_line(err)}); give "
                                "--ray-address of a running cluster or use --executor local") from None
        raise ExecutorError(f"ray-address: cannot connect to a Ray cluster at {address!r} ({_one_line(err)}); start "
                            "one there (ray start --head) or fix --ray-address") from None
    finally:
        if before is not None:
            signal.signal(signal.SIGTERM, before)


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message (Ray's run over many), or its type."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


# -- in a Ray worker -----------------------------------------------------------------------------------------------
_MODELS: dict[tuple[str, str, str | None], tuple[Any, PatchInverse] | str] = {}  # this worker's models, or why not


def _worker_model(name: str, checkpoint: str, sha256: str | None) -> tuple[Any, PatchInverse] | str:
    """The model of a task, loaded once per worker process; a one-line error where it cannot be had here."""
    key = (name, checkpoint, sha256)
    if key not in _MODELS:
        node = socket.gethostname()
        try:
            loaded = load_named(name, checkpoint)
        except AuditError as err:
            _MODELS[key] = f"on Ray node {node}: {err}"
        else:
            if loaded.checkpoint_sha256 != sha256:
                _MODELS[key] = (f"checkpoint {checkpoint!r} on Ray node {node} has sha256 "
                                f"{str(loaded.checkpoint_sha256)[:16]}..., not this run's {str(sha256)[:16]}...; put "
                                "the same file at that path on every node")
            else:
                _MODELS[key] = (loaded, PatchInverse(loaded.model))
    return _MODELS[key]


def _make_record(task: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: the record of one (model, image), made with the cache off (the driver keeps the cache).

    Returns ``{"worker_error": line}`` where the model cannot be had on this worker.
    """
    import torch

    torch.set_num_threads(CPUS_PER_TASK)
    model = _worker_model(*task["model"])
    if isinstance(model, str):
        return {"worker_error": model}
    loaded, inverse = model
    label = task["label"]
    maker = RecordMaker(task["settings"], task["config"], task["device"])
    return maker.make(loaded, task["plan"], inverse, (task["path"], task["image_id"], task["sha256"], task["data"]),
                      label_of=None if label is None else lambda _path, _classes: label)
