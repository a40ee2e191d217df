"""Where the results file and the report go: checked before any model work, written at the end of the run.

Both are written atomically, only where the user named them, and only over regular files: a device such as
``/dev/null``, a pipe or a folder is refused before the run, and again just before writing. A run stopped by a usage
error still writes both, with its one-line error.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, cast

from ..config.settings import input_paths, output_settings
from .cache import check_cache_dir

__all__ = ["check_outputs", "write_outputs", "write_stopped_run"]


def check_outputs(settings, create: bool = True, inputs: list[tuple[str, str]] | None = None) -> None:
    """Fail before any model work when the results file or the report could not be written at the end, or would be
    written over a file the run reads.

    A target that exists must be a regular file (the writer replaces it: a device such as ``/dev/null`` or a pipe
    would be replaced by a file), the two outputs must be different files, and neither may be one of ``inputs``
    ((option, path): the baseline, the labels, a checkpoint, an image, the policy files), whatever path spelling
    reaches it (a link, ``..``, a relative path). With ``create=False`` (``--collect-only``, which writes nothing) a
    missing folder is not created.
    """
    outputs = [(option, path) for option, path in (("audit-json", settings.audit_json), ("report", settings.report))
               if path]
    for option, path in outputs:
        source = input_at(path, inputs or [])
        if source is not None:
            raise ValueError(f"{option}: {path!r} is the {source[0]} file {source[1]!r} this run reads; writing it "
                             f"would lose it: give --{option} another path")
    for option, path in outputs:
        folder = Path(path).parent
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise ValueError(f"{option}: cannot create the folder of {path!r} ({err.strerror or err}); choose a "
                                 "writable path") from None
        if Path(path).is_dir() or (folder.is_dir() and not os.access(folder, os.W_OK)):
            problem = "is a folder" if Path(path).is_dir() else "is in a folder that cannot be written"
            raise ValueError(f"{option}: {path!r} {problem}; choose a writable file path")
        kind = _not_regular(path)
        if kind:
            raise ValueError(f"{option}: {path!r} is {kind}, not a regular file; choose a regular file path")
    if settings.cache and not settings.no_cache:
        check_cache_dir(settings.cache, create=create)
    if len(outputs) == 2 and _same_file(settings.audit_json, settings.report):
        raise ValueError(f"report: {settings.report!r} is the same file as the results file {settings.audit_json!r}; "
                         "give --report and --audit-json different paths")


def _not_regular(path: str | os.PathLike[str]) -> str | None:
    """What an existing output target is when it is not a regular file ('a character device', ...), else None.

    Follows symbolic links: a link to a pipe is a pipe. Nothing there (or a dangling link) is None: the writer
    creates a regular file.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _same_file(one: str, other: str) -> bool:
    """Whether two paths reach one file: the same inode when both exist, else the same resolved path."""
    try:
        if os.path.exists(one) and os.path.exists(other):
            return os.path.samefile(one, other)
        return Path(one).resolve() == Path(other).resolve()
    except (OSError, ValueError):
        return False


def input_at(path: str, inputs: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The (option, path) of ``inputs`` that ``path`` would write over, or None."""
    return next(((option, other) for option, other in inputs if _same_file(path, other)), None)


def _refuse_not_regular(path: str) -> None:
    """Raise OSError when the target became something the atomic writer must not replace (checked before writing)."""
    kind = _not_regular(path)
    if kind:
        raise OSError(f"{path!r} is {kind}, not a regular file")


def write_stopped_run(message: str, cli: dict[str, Any], config_file: str | None, pyproject: Path | None) -> str:
    """Write the results file and the report of a run stopped by a usage error; say where, or why not, in words."""
    paths = output_settings(cli, config_file, pyproject)
    if not (paths["audit_json"] or paths["report"]):
        return ""
    from ..results.schema import stopped_results

    device = cli.get("device") if isinstance(cli.get("device"), str) else None
    outcomes = write_outputs(stopped_results(message, device=device), paths["audit_json"], paths["report"],
                              paths["report_thumbnail"], paths["report_max_mb"],
                              protected=input_paths(cli, config_file, pyproject))
    names = {"results": "results file", "report": "report"}
    return " (" + "; ".join(f"{names[name]}: {path if path is not None else 'not written either'}"
                            for name, _, path, _ in outcomes) + ")"


def write_outputs(results: dict[str, Any], audit_json: str | None, report: str | None, thumbnail: int,
                   max_mb: float, protected: list[tuple[str, str]] | None = None
                   ) -> list[tuple[str, str, Path | None, str]]:
    """Write the results file and the report where asked, never over a file of ``protected`` (the run's inputs).

    Returns:
        Per output asked for, ``(name, target, path written or None, detail)``: ``name`` is ``'results'`` or
        ``'report'``; ``detail`` is the error when nothing was written, else the report's render time ('' for the
        results file).
    """
    outcomes: list[tuple[str, str, Path | None, str]] = []
    for name, target in (("results", audit_json), ("report", report)):
        source = input_at(target, protected or []) if target else None
        if source is not None:
            outcomes.append((name, cast(str, target), None,
                             f"{target!r} is the {source[0]} file this run reads: not written"))
    done = {target for _, target, _, _ in outcomes}
    audit_json = None if audit_json in done else audit_json
    report = None if report in done else report
    if audit_json:
        from ..results.schema import write_json

        try:
            _refuse_not_regular(audit_json)
            outcomes.append(("results", audit_json, write_json(audit_json, results), ""))
        except OSError as err:
            outcomes.append(("results", audit_json, None, str(err)))
    if report:
        start = time.perf_counter()
        try:
            from ..reports import render_report

            if audit_json and _same_file(audit_json, report):
                raise OSError(f"{report!r} is the same file as the results file")
            _refuse_not_regular(report)
            path = render_report(results, report, thumbnail=thumbnail, max_mb=max_mb)
        except (ImportError, OSError) as err:
            outcomes.append(("report", report, None, str(err)))
        else:
            outcomes.append(("report", report, path, f"{time.perf_counter() - start:.1f} s to render"))
    return outcomes
