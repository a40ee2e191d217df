"""``vit-audit``: run the packaged checks against a model, from any folder, with the same options as the plugin.

    vit-audit --model NAME --checkpoint FILE --images DIR [--audit-json results.json] [--report report.html]

The exit status is pytest's: 0 when every gate passes, 1 when any fails, 4 on a usage error.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    import pytest

    from .plugin import _checks_dir

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        args = ["--help"]
    return int(pytest.main([str(_checks_dir()), "-p", "audit.plugin", *args]))


if __name__ == "__main__":
    raise SystemExit(main())
