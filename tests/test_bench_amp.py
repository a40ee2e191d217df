"""benchmarks/bench_amp.py on two photos with the embedded model: a float32 control and a bfloat16 run."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from skimage import data

from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_amp.py"


def _script() -> ModuleType:
    if "bench_amp" not in sys.modules:  # registered before running: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location("bench_amp", SCRIPT)
        sys.modules["bench_amp"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_amp"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "camera"):
        Image.fromarray(getattr(data, name)()).save(folder / f"{name}.png")
    return folder


def _run(photos: Path, out: Path, amp: str, markdown: bool = False) -> dict:
    code = _script().main(["--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()), "--images",
                           str(photos), "--steps", "3", "--warmup", "0", "--amp", amp, "--out", str(out),
                           *(["--markdown"] if markdown else [])])
    assert code == 0
    return json.loads(out.read_text())


def test_float32_control_changes_nothing(photos: Path, tmp_path: Path) -> None:
    report = _run(photos, tmp_path / "control.json", "float32")
    assert report["n_images"] == 2 and report["compared"] == "control" and report["n_maps"] > 0
    assert report["max_abs_delta_auc"] == 0.0 and report["max_abs_delta_abpc"] == 0.0
    assert set(report["gated"]) == {"grad@0", "chefer@encoder"}
    for gate in report["gated"].values():
        assert gate["abpc_float32"] == gate["abpc_control"] and not gate["verdict_flips"]
        assert gate["verdict_float32"] == "inconclusive"  # 2 images are fewer than the gates' minimum


def test_bfloat16_reports_bound_time_and_gates(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = _run(photos, tmp_path / "amp.json", "bfloat16", markdown=True)
    assert report["amp"] == "bfloat16" and report["perturbation"]["amp"] == "bfloat16"
    assert 0.0 <= report["p99_abs_delta_auc"] <= report["max_abs_delta_auc"] < 0.1
    assert report["seconds_float32"] > 0 and report["seconds_bfloat16"] > 0 and math.isfinite(report["speedup"])
    for key, entry in report["maps"].items():
        assert entry["n_images"] == 2, key
    image = report["images"][0]["auc"]
    assert all(set(aucs) == {"float32", "bfloat16"} for aucs in image.values())
    out = capsys.readouterr().out
    assert "| grad@0 | 2 |" in out and "| chefer@encoder | 2 |" in out and "speed-up" in out
