"""Records computed once per run, in a folder shared by every process of the run (pytest-xdist workers included).

Each record is a JSON file under a kind's folder (``runs``, ``sanity``, ``gates``, ``comparisons``), written under
a file lock so that it is computed by exactly one process and read by the others. File names are derived from the
record's key by a readable prefix and a digest of the exact key, so two keys never share a file, whatever
characters they hold (``a b`` and ``a_b``, or names longer than a file name may be).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from ..results.schema import clean, write_json

__all__ = ["RecordStore", "file_name"]

KINDS = ("runs", "sanity", "gates", "comparisons")
_Record = TypeVar("_Record", dict[str, Any], list[dict[str, Any]])  # a record, or a family of records
READABLE_CHARS = 60


def file_name(key: tuple[str, ...]) -> str:
    """A file name for ``key``: unique for every key, readable for the usual ones."""
    exact = json.dumps(list(key), ensure_ascii=False)
    readable = "--".join("".join(c if c.isalnum() or c in "-_.@" else "_" for c in part) for part in key)
    digest = hashlib.sha256(exact.encode("utf-8")).hexdigest()[:16]
    return f"{readable[:READABLE_CHARS]}-{digest}.json"


class RecordStore:
    """JSON records of a run, keyed by tuples of strings, shared by every process through ``workdir``."""

    def __init__(self, workdir: str | os.PathLike[str]):
        self.workdir = Path(workdir)
        for kind in KINDS:
            (self.workdir / kind).mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, key: tuple[str, ...]) -> Path:
        return self.workdir / kind / file_name(key)

    def once(self, kind: str, key: tuple[str, ...], compute: Callable[[], _Record]) -> _Record:
        """The record of ``key``: computed by the first process that asks, read by the others."""
        path = self.path(kind, key)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                return json.loads(path.read_text())
            record = clean(compute())
            write_json(path, record)
            return record

    def write(self, kind: str, key: tuple[str, ...], record: dict[str, Any]) -> None:
        write_json(self.path(kind, key), record)

    def read(self, kind: str, key: tuple[str, ...]) -> dict[str, Any] | None:
        path = self.path(kind, key)
        return json.loads(path.read_text()) if path.exists() else None

    def read_all(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.workdir / kind).glob("*.json"))]
