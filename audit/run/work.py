"""What an executor sees of a run: the (model, image) cases, and the narrow interface through which it has their
records made (:class:`RecordWork`). :class:`audit.run.session.AuditSession` implements it; the executors
(:mod:`audit.run.executors`) know nothing else of the session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

__all__ = ["Case", "MapKey", "ProbeKey", "RecordWork", "RemoteTask"]


class MapKey(NamedTuple):
    """One map of one model: what ``audit_map``, ``audit_model_map``, ``audit_gate``, ``audit_region``,
    ``audit_region_pair`` and ``audit_comparison`` are parametrised by (a tuple: ``model_id, method, stage = key``)."""

    model_id: str
    method: str
    stage: str

    @property
    def key(self) -> str:
        """``method@stage``, as gates and the results file write it."""
        return f"{self.method}@{self.stage}"


class ProbeKey(NamedTuple):
    """One probe of one model: what ``audit_probe`` is parametrised by (``model_id, probe = key``)."""

    model_id: str
    probe: str


class Case:
    """One (model, image) pair: what per-image checks are parametrised by."""

    def __init__(self, model_id: str, image_id: str, path: str):
        self.model_id, self.image_id, self.path = model_id, image_id, path

    @property
    def id(self) -> str:
        return f"{self.model_id}-{self.image_id}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_id, self.image_id)

    def __repr__(self) -> str:
        return f"Case({self.id})"


@dataclass
class RemoteTask:
    """A case's record to be made elsewhere: ``payload`` is everything the worker needs (settings, plan, model name
    and checkpoint, the image's bytes); the record is cached under ``key`` (None: not cached)."""

    payload: dict[str, Any]
    key: dict[str, Any] | None


class RecordWork(Protocol):
    """The run as an executor sees it."""

    @property
    def caching(self) -> bool:
        """Whether finished records are also kept in the cache."""

    def image_batch(self, model_id: str) -> int:
        """How many of a model's images share the curves' batches (``--image-batch``)."""

    def run(self, case: Case) -> Any:
        """Make (or read) the record of one case, in this process."""

    def run_group(self, cases: list[Case]) -> None:
        """Make the records of consecutive cases of one model together, in this process."""

    def remote_task(self, case: Case, device: str) -> RemoteTask | None:
        """The task that makes the case's record on a worker running on ``device``; None where the record was had
        here instead (stored, cached, or failing before any model work)."""

    def keep_remote(self, case: Case, task: RemoteTask, record: dict[str, Any], seconds: float) -> None:
        """Keep the record a worker returned for ``task`` (and cache it, as a local run would)."""
