"""`pytest checks` on the real ViT-Ti over the 41 ImageNet photos: the verdicts of README's policy table."""

from __future__ import annotations

import json
import re

import pytest

from audit.plugin import _checks_dir

from conftest import DIVERSE_DIR, IMAGENET_DIR, ROOT, VIT_TINY_FILE, VIT_TINY_NAME, require_shared

pytest_plugins = ["pytester"]


def readme_policy_table(column: str = "cats") -> dict[str, tuple[float, str]]:
    """{"method@stage": (mean ABPC, verdict)} from the policy table of docs/evidence/calibrations.md, between the policy
    markers: the 200 diverse photos' columns (``"diverse"``) or the 41 cats' (``"cats"``)."""
    text = (ROOT / "docs" / "evidence" / "calibrations.md").read_text()
    table = text.split("<!-- policy-table -->")[1]
    cell = r"([+-]\d\.\d{3}) \[[^]]*\] \| \*\*(\w+)\*\*"
    rows = re.findall(rf"^\| `(\w+@\w+)` \| {cell} \| {cell} \|", table, re.MULTILINE)
    return {key: (float(d), dv) if column == "diverse" else (float(c), cv) for key, d, dv, c, cv in rows}


def test_readme_policy_matches_pyproject():
    from audit.config.settings import resolve_settings

    policy = resolve_settings({"model": ["x"], "checkpoint": ["y"]}, pyproject=ROOT / "pyproject.toml")
    assert sorted(readme_policy_table()) == sorted(policy.gate) == sorted(readme_policy_table("diverse"))


def _policy_run(pytester, monkeypatch, images, expected):
    """`pytest checks -k "gate or randomisation"` under the project's policy; checks the gates against ``expected``."""
    monkeypatch.chdir(ROOT)  # the project's own pyproject.toml holds the policy
    results_path = pytester.path / "results.json"
    result = pytester.runpytest(
        str(_checks_dir()), "-p", "audit.plugin", "-p", "no:cacheprovider", "-k", "gate or randomisation",
        "--model", VIT_TINY_NAME, "--checkpoint", str(require_shared(VIT_TINY_FILE)),
        "--images", str(require_shared(images)), "--methods", "grad,chefer,random", "--no-cache",
        "--audit-json", str(results_path), "--report", "", "--batch-size", "80",
        # these tests are about the gates: the randomisation check's default (10 images x 3 seeds, ~50 s on the
        # ViT-Ti) is left to tests/test_sanity.py and to the audit itself
        "--randomisation-images", "2", "--randomisation-seeds", "1",
    )
    results = json.loads(results_path.read_text())
    gates = {f"{g['method']}@{g['stage']}": g for g in results["gates"]}
    assert sorted(gates) == sorted(expected)
    for key, (value, verdict) in expected.items():
        assert gates[key]["verdict"] == verdict, gates[key]["reason"]
        assert gates[key]["statistic"] == pytest.approx(value, abs=0.0015), key
        baseline = gates[key]["random_baseline"]
        assert baseline["ci95"][0] < 0 < baseline["ci95"][1], f"random baseline at {key} is not null: {baseline}"
    assert result.ret == (1 if "fail" in {v for _, v in expected.values()} else 0)
    return results, gates


@pytest.mark.shared
@pytest.mark.e2e
@pytest.mark.slow
def test_gate_verdicts_on_the_41_photos_match_the_readme(pytester, monkeypatch):
    """About 3.5 minutes on 2 CPU cores (README's table, reproduced): run with `pytest tests -m slow`."""
    results, gates = _policy_run(pytester, monkeypatch, IMAGENET_DIR, readme_policy_table("cats"))
    assert all(gate["n_images"] == 41 for gate in gates.values())
    assert sum(run["class"] == 283 for run in results["runs"]) == 39  # Persian cat


@pytest.mark.shared
@pytest.mark.e2e
@pytest.mark.slow
def test_gate_verdicts_on_the_200_diverse_photos_match_the_readme(pytester, monkeypatch):
    """About 12 minutes on 2 CPU cores: run with `pytest tests -m slow`."""
    results, gates = _policy_run(pytester, monkeypatch, DIVERSE_DIR, readme_policy_table("diverse"))
    assert all(gate["n_images"] == 200 for gate in gates.values())
