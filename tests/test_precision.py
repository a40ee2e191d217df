"""--amp auto: bfloat16 where the device has it natively, float32 elsewhere; both kinds of CPU faked by injection."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from audit.config.settings import resolve_settings
from audit.measure import precision
from audit.measure.precision import CpuInfo, cpu_info, resolve_amp
from audit.results.schema import SCHEMA
from audit.run.assemble import assemble_results
from audit.run.cache import run_key
from audit.run.session import AuditSession
from audit.verdicts.compare import Baseline, check_recipe
from audit.zoo import EMBEDDED_MODEL, embedded_checkpoint, embedded_images

from conftest import nested_audit

pytest_plugins = ["pytester"]

AVX2 = CpuInfo("x86_64", "AVX2", frozenset({"sse4_2", "avx", "avx2", "fma"}))
AVX512_BF16 = CpuInfo("x86_64", "AVX512", frozenset({"avx2", "avx512f", "avx512_bf16"}))
AMX = CpuInfo("x86_64", "AVX512", frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"}))
NEOVERSE_V1 = CpuInfo("aarch64", "SVE256", frozenset({"fp", "asimd", "sve", "bf16"}))
NEOVERSE_N1 = CpuInfo("aarch64", "DEFAULT", frozenset({"fp", "asimd", "asimdhp"}))
UNKNOWN = CpuInfo("arm64", "DEFAULT", None)

NO_BF16 = "this CPU (AVX2) has no native bfloat16 matrix instructions (avx512_bf16/amx_bf16)"


@pytest.mark.parametrize("cpu, amp, reason", [
    (AVX2, None, NO_BF16),
    (AVX512_BF16, "bfloat16", "native on this CPU (avx512_bf16)"),
    (AMX, "bfloat16", "native on this CPU (amx_bf16)"),
    (NEOVERSE_V1, "bfloat16", "native on this CPU (bf16)"),
    (NEOVERSE_N1, None, "this CPU (aarch64, DEFAULT) has no native bfloat16 matrix instructions (bf16)"),
    (UNKNOWN, None, "cannot tell whether this CPU (arm64, DEFAULT) has native bfloat16 matrix instructions"),
], ids=["avx2", "avx512_bf16", "amx", "aarch64-bf16", "aarch64", "unknown"])
def test_auto_takes_bfloat16_only_on_a_cpu_with_native_bfloat16(cpu, amp, reason):
    chosen = resolve_amp("auto", "cpu", cpu=cpu)
    assert (chosen.requested, chosen.amp, chosen.warning) == ("auto", amp, None)
    assert chosen.reason.startswith(reason)
    assert chosen.header_lines() == [f"vit-audit: precision: --amp auto: {amp or 'float32'}: {chosen.reason}"]
    assert chosen.plan_note("cpu") is None


@pytest.mark.parametrize("supported, amp", [(True, "bfloat16"), (False, None)])
def test_auto_on_cuda_asks_torch_whether_the_device_has_bfloat16(supported, amp):
    chosen = resolve_amp("auto", "cuda", cpu=AVX2, cuda_bf16=supported)
    assert chosen.amp == amp and chosen.warning is None
    assert "torch.cuda.is_bf16_supported, emulation excluded" in chosen.reason
    explicit = resolve_amp("bfloat16", "cuda", cuda_bf16=supported)
    assert explicit.amp == "bfloat16" and explicit.emulated is not supported


def test_bfloat16_asked_for_is_kept_and_warned_about_where_it_is_emulated():
    slow = resolve_amp("bfloat16", "cpu", cpu=AVX2)
    assert slow.amp == "bfloat16" and slow.emulated
    assert slow.warning == ("--amp bfloat16: bfloat16 autocast is emulated on this CPU (AVX2, no "
                            "avx512_bf16/amx_bf16): measured 6.6x slower than float32 for the bare ViT-Ti on such a "
                            "CPU; use --amp auto or leave --amp off")
    assert slow.header_lines() == [f"vit-audit: precision: {slow.warning}"]
    assert slow.plan_note("cpu") == "bfloat16 is slower on this CPU (emulated: --amp auto or off is faster)"
    for cpu in (AMX, NEOVERSE_V1, UNKNOWN):  # native, or not known to be emulated: no warning
        fast = resolve_amp("bfloat16", "cpu", cpu=cpu)
        assert fast.amp == "bfloat16" and fast.warning is None and fast.header_lines() == []


def test_off_and_float16_are_kept_as_given():
    off = resolve_amp(None, "cpu", cpu=AMX)
    assert (off.amp, off.warning, off.header_lines()) == (None, None, [])
    assert off.record() == {"requested": None, "amp": None, "reason": "--amp is off: float32", "warning": None}
    assert resolve_amp("float16", "cpu", cpu=AVX2).amp == "float16"
    with pytest.raises(ValueError, match="amp: 'bf16' is not bfloat16, float16 or auto"):
        resolve_amp("bf16", "cpu", cpu=AVX2)


def test_the_probe_reads_the_first_processors_flags(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n")
    assert precision._proc_flags(str(x86)) == {"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"}
    assert "bf16" in precision._proc_flags(str(arm))
    assert precision._proc_flags(str(tmp_path / "missing")) is None
    here = cpu_info()  # this machine, whatever it is
    assert here.capability and (here.flags is None or isinstance(here.flags, frozenset))


def test_settings_take_auto_and_refuse_other_spellings(tmp_path):
    base = {"model": ["test_vit"], "checkpoint": ["w.safetensors"], "images": ["photos"]}
    assert resolve_settings({**base, "amp": "auto"}).amp == "auto"
    assert resolve_settings(base).amp is None  # the default stays float32
    config = tmp_path / "audit.toml"
    config.write_text('amp = "auto"\n')
    assert resolve_settings(base, config).amp == "auto"
    for bad in ("bf16", "AUTO", "float32"):
        with pytest.raises(ValueError, match=f"^amp: '{bad}' is not bfloat16, float16 or auto \\(leave it off for "
                                             "float32\\)$"):
            resolve_settings({**base, "amp": bad})


def _session(tmp_path, monkeypatch, cpu: CpuInfo, amp: str = "auto") -> AuditSession:
    monkeypatch.setattr(precision, "cpu_info", lambda: cpu)
    images = sorted(embedded_images().glob("*.png"))[:2]
    settings = resolve_settings({"model": [EMBEDDED_MODEL], "checkpoint": [str(embedded_checkpoint())],
                                 "images": [str(p) for p in images], "methods": ["cam", "random"],
                                 "gate": ["cam@encoder"], "layers": ["encoder"], "steps": "5", "amp": amp,
                                 "no_cache": True})
    return AuditSession(settings, tmp_path / "work")


@pytest.mark.parametrize("cpu, amp", [(AVX2, None), (AMX, "bfloat16")], ids=["avx2", "amx"])
def test_the_session_resolves_auto_before_the_recipe_the_cache_key_and_the_results(tmp_path, monkeypatch, cpu, amp):
    session = _session(tmp_path, monkeypatch, cpu)
    assert session.settings.amp == session.config.amp == amp
    loaded = next(iter(session.models.values()))
    plan = next(iter(session.plans.values()))
    assert run_key(session.settings, loaded, plan, session.device, "0" * 64, None)["amp"] == amp
    results = assemble_results(session)
    assert results["perturbation"]["amp"] == results["settings"]["amp"] == amp
    assert results["precision"] == {"requested": "auto", "amp": amp, "reason": session.precision.reason,
                                    "warning": None}
    # a baseline made with the other dtype is refused, as any other recipe difference
    other = "bfloat16" if amp is None else None
    baseline = Baseline("released.json", None, {"schema": SCHEMA, "settings": asdict(session.settings),
                                                "perturbation": {**session.config.describe(), "amp": other}},
                        {"name": loaded.name})
    with pytest.raises(ValueError, match=f"amp {other!r} \\(baseline\\) vs {amp!r} \\(this run\\)"):
        check_recipe(baseline, session.config.describe(), asdict(session.settings), loaded)


@pytest.mark.e2e
def test_a_run_says_its_choice_in_the_header_and_the_results_file(pytester, monkeypatch):
    monkeypatch.chdir(pytester.path)  # the nested run's policy is its own folder's
    images = sorted(embedded_images().glob("*.png"))[:2]
    args = [*nested_audit(), "--model", EMBEDDED_MODEL, "--checkpoint", str(embedded_checkpoint()),
            *[a for p in images for a in ("--images", str(p))], "--methods", "cam,random", "--layers", "encoder",
            "--gate", "cam@encoder", "--steps", "5", "--no-cache", "-k", "test_model_loads"]
    for cpu, amp, line in ((AVX2, None, f"--amp auto: float32: {NO_BF16}"),
                           (AMX, "bfloat16", "--amp auto: bfloat16: native on this CPU (amx_bf16)")):
        monkeypatch.setattr(precision, "cpu_info", lambda cpu=cpu: cpu)
        results = pytester.path / f"{amp}.json"
        run = pytester.runpytest(*args, "--amp", "auto", "--audit-json", str(results))
        assert run.ret == 0, run.stdout.str()
        run.stdout.fnmatch_lines([f"vit-audit: precision: {line}"])
        written = json.loads(results.read_text())
        assert written["precision"]["amp"] == written["perturbation"]["amp"] == amp
        assert written["precision"]["requested"] == "auto" and written["settings"]["amp"] == amp
    monkeypatch.setattr(precision, "cpu_info", lambda: AVX2)
    run = pytester.runpytest(*args, "--amp", "bfloat16", "--collect-only")
    run.stdout.fnmatch_lines(["vit-audit: precision: --amp bfloat16: bfloat16 autocast is emulated on this CPU*",
                              "*forwards/s timed on cpu in bfloat16; bfloat16 is slower on this CPU (emulated: "
                              "--amp auto or off is faster)"])
