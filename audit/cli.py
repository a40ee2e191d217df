"""``vit-audit``: run the packaged checks against a model, from any folder, with the same options as the plugin.

    vit-audit --model NAME --checkpoint FILE --images DIR [--audit-json results.json] [--report report.html]

The exit status is pytest's: 0 when every gate passes, 1 when any fails, 4 on a usage error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import pytest

    # Found without importing anything: pytest imports the plugin and the checks itself, to rewrite their asserts.
    spec = importlib.util.find_spec("checks")
    if spec is None or not spec.submodule_search_locations:
        print("vit-audit: the checks package is not installed; reinstall vit-audit (pip install -e .)", file=sys.stderr)
        return 4
    checks_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        args = ["--help"]
    return int(pytest.main([str(checks_dir), "-p", "audit.plugin", *args]))


if __name__ == "__main__":
    raise SystemExit(main())
