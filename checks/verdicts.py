"""How a check turns a verdict into pytest's outcome, in one place for every check module.

Against a threshold an inconclusive verdict is skipped with its reason (a failure under ``--strict``); against a
baseline it fails, because the candidate must show that it is no worse.
"""

from __future__ import annotations

import pytest


def decide(verdict: str, reason: str, strict: bool, paired: bool = False) -> None:
    """Fail on ``fail``; on ``inconclusive`` fail when ``paired`` (a comparison with a baseline) or ``strict``, else
    skip; skip a measurement that is ``not gated`` or ``not applicable``, with its reason; return on ``pass``."""
    if verdict in ("not gated", "not applicable"):
        pytest.skip(reason)
    if verdict == "fail":
        pytest.fail(reason, pytrace=False)
    if verdict == "inconclusive":
        if paired:
            pytest.fail(f"inconclusive (not shown to be no worse): {reason}", pytrace=False)
        if strict:
            pytest.fail(f"inconclusive (--strict): {reason}", pytrace=False)
        pytest.skip(f"inconclusive: {reason}")
