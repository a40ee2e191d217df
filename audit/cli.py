"""``vit-audit``: run the packaged checks against a model, from any folder, with the same options as the plugin.

    vit-audit --model NAME --checkpoint FILE --images DIR [--audit-json results.json] [--report report.html]

The exit status is pytest's:

- 0 when no check failed or errored: every gate passed, or was inconclusive and skipped (without --strict); every
  comparison with a baseline passed (showed that the candidate is no worse); or the run gated nothing (--gate none:
  its report's verdict is "no gate", not a pass);
- 1 when any check failed: a gate failed (or was inconclusive under --strict), a comparison with a baseline failed
  or was inconclusive, a gated map failed the randomisation check, an image could not be read, a model did not load;
- 2 when interrupted (Ctrl-C, SIGTERM);
- 4 on a usage error (reported in one line before any model work), or when the results file or the report could
  not be written.

The command writes nothing but the paths it is given, and never over a file the run reads: no bytecode and no
pytest cache beside the installed checks (pytest's cache, when an option needs it, goes in the current folder).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# pytest options that need its cache (the cacheprovider and stepwise plugins): asking for one keeps the cache on.
CACHE_OPTIONS = frozenset({"--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--lfnf",
                           "--last-failed-no-failures", "--cache-show", "--cache-clear", "--sw", "--stepwise",
                           "--sw-skip", "--stepwise-skip", "--sw-reset", "--stepwise-reset"})


def main(argv: list[str] | None = None) -> int:
    # Before pytest imports (and rewrites) the checks and the plugin: no __pycache__ beside the installed package.
    wrote_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        import pytest

        # Found without importing the checks (only the audit package): pytest imports the plugin and the checks
        # itself, to rewrite their asserts.
        spec = importlib.util.find_spec("audit.checks")
        if spec is None or not spec.submodule_search_locations:
            print("vit-audit: the checks package is not installed; reinstall vit-audit (pip install -e .)",
                  file=sys.stderr)
            return 4
        checks_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
        args = list(sys.argv[1:] if argv is None else argv)
        if args and args[0] in ("-h", "--help"):
            print(__doc__)
            return int(pytest.main([str(checks_dir), "-p", "audit.plugin", "--help"]))  # with the cache options
        return int(pytest.main([str(checks_dir), "-p", "audit.plugin", *_cache_args(args), *args]))
    finally:
        sys.dont_write_bytecode = wrote_bytecode


def _cache_args(args: list[str]) -> list[str]:
    """pytest's cache off (it would go beside the installed checks, with the user's image names in its node ids),
    unless the command line asks for it (a cache option, or ``-p cacheprovider``): then in the current folder."""
    asked = any(arg in CACHE_OPTIONS or arg == "-pcacheprovider"
                or (arg == "-p" and following == "cacheprovider") for arg, following in zip(args, [*args[1:], None]))
    if asked:
        return ["-o", f"cache_dir={Path.cwd() / '.pytest_cache'}"]
    return ["-p", "no:cacheprovider"]


if __name__ == "__main__":
    raise SystemExit(main())
