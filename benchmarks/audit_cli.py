"""The benchmarks' one way of running ``vit-audit`` on a model and reading its results file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path


def run_audit(args: list[str], out: Path, checks: str | None = None) -> tuple[int, dict]:
    """``vit-audit ARGS --audit-json OUT --no-cache -q [-k CHECKS]`` in OUT's folder; (exit status, results file).

    Raises:
        SystemExit: the run wrote no results file, or one with a usage error, with the end of its output.
    """
    command = [shutil.which("vit-audit") or "vit-audit", *args, "--audit-json", str(out), "--no-cache", "-q",
               *(["-k", checks] if checks else [])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    results = json.loads(out.read_text()) if out.exists() else {"error": "no results file"}
    if results.get("error"):
        raise SystemExit(f"audit failed ({done.returncode}): {results['error']}\n{done.stdout[-3000:]}")
    return done.returncode, results
