"""`pytest checks` on the real ViT-Ti over the 41 ImageNet photos: the verdicts of README's policy table."""

from __future__ import annotations

import json
import re

import pytest

from audit.plugin import _checks_dir

from conftest import IMAGENET_DIR, ROOT, VIT_TINY_FILE, VIT_TINY_NAME, require_shared

pytest_plugins = ["pytester"]


def readme_policy_table() -> dict[str, tuple[float, str]]:
    """{"method@stage": (mean ABPC, verdict)} from the README table between the policy markers."""
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- policy-table -->")[1]
    rows = re.findall(r"^\| `(\w+@\w+)` \| ([+-]\d\.\d{3}) \[[^]]*\] \| \*\*(\w+)\*\* \|", table, re.MULTILINE)
    return {key: (float(value), verdict) for key, value, verdict in rows}


def test_readme_policy_matches_pyproject():
    from audit.settings import resolve_settings

    policy = resolve_settings({"model": ["x"], "checkpoint": ["y"]}, pyproject=ROOT / "pyproject.toml")
    assert sorted(readme_policy_table()) == sorted(policy.gate)


def test_gate_verdicts_on_the_41_photos_match_the_readme(pytester, monkeypatch):
    expected = readme_policy_table()
    monkeypatch.chdir(ROOT)  # the project's own pyproject.toml holds the policy
    results_path = pytester.path / "results.json"
    result = pytester.runpytest(
        str(_checks_dir()), "-p", "audit.plugin", "-p", "no:cacheprovider", "-k", "gate or randomisation",
        "--model", VIT_TINY_NAME, "--checkpoint", str(require_shared(VIT_TINY_FILE)),
        "--images", str(require_shared(IMAGENET_DIR)), "--methods", "cam,grad,grad_cls,random",
        "--layers", "0,encoder", "--audit-json", str(results_path), "--report", "", "--batch-size", "80",
    )
    results = json.loads(results_path.read_text())
    gates = {f"{g['method']}@{g['stage']}": g for g in results["gates"]}
    assert sorted(gates) == sorted(expected)
    for key, (value, verdict) in expected.items():
        assert gates[key]["n_images"] == 41
        assert gates[key]["verdict"] == verdict, gates[key]["reason"]
        assert gates[key]["statistic"] == pytest.approx(value, abs=0.0015), key
        baseline = gates[key]["random_baseline"]
        assert baseline["ci95"][0] < 0 < baseline["ci95"][1], f"random baseline at {key} is not null: {baseline}"
    assert result.ret == (1 if "fail" in {v for _, v in expected.values()} else 0)
    assert sum(run["class"] == 283 for run in results["runs"]) == 39  # Persian cat
