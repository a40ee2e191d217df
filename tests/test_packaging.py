"""What an installed vit-audit provides: every package of the repository, the checks and the report under the audit
namespace (a user's own checks/ or reports/ cannot shadow them), and the pytest plugin through its entry point."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import audit.checks
import audit.reports

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_of_the_repository_is_installed():
    config = _setuptools()
    folders = {"audit.checks": "checks", "audit.reports": "reports"}
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "audit").rglob("__init__.py")}
    assert set(config["packages"]) == found | set(folders)
    assert config["package-dir"] == folders


def test_checks_and_reports_are_under_the_audit_namespace():
    assert Path(audit.checks.__file__).resolve().parent == ROOT / "checks"
    assert Path(audit.reports.__file__).resolve().parent == ROOT / "reports"


@pytest.mark.e2e
def test_a_users_own_checks_and_reports_packages_do_not_shadow_them(tmp_path):
    for name in ("checks", "reports"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user package was imported')\n")
    code = "import audit.checks, audit.reports; print(audit.checks.__file__); print(audit.reports.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert [Path(p).resolve().parent for p in out] == [ROOT / "checks", ROOT / "reports"]


def test_the_plugin_is_a_pytest11_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="pytest11") if p.value == "audit.plugin"]
    assert [p.name for p in points] == ["audit.plugin"]
    assert points[0].load().__name__ == "audit.plugin"


def test_the_library_is_typed():
    assert (ROOT / "audit" / "py.typed").exists()
    assert "py.typed" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "audit"]
