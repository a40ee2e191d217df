"""The autocast dtype of a run's perturbation forwards: ``--amp auto`` takes bfloat16 where the device runs it
natively, float32 elsewhere.

bfloat16 autocast is fast only where the hardware multiplies bfloat16 matrices: a CUDA device for which
``torch.cuda.is_bf16_supported(including_emulation=False)`` holds, an x86 CPU with AVX-512 BF16 or AMX (the
``avx512_bf16`` or ``amx_bf16`` flag of /proc/cpuinfo), an Arm CPU with the BF16 extension (the ``bf16`` feature).
Elsewhere it is emulated, and slower than float32: the bare ViT-Ti ran :data:`SLOWDOWN` slower under bfloat16
autocast on an AVX2-only AMD EPYC.
``auto`` is not the default: a default that depended on the machine would change a run's numbers from one machine
to the next.

:func:`cpu_info` is the one place the CPU is probed; tests replace it (or pass ``cpu=`` to :func:`resolve_amp`).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["AMPS", "AUTO_AMP", "CpuInfo", "NATIVE_BF16", "Precision", "SLOWDOWN", "cpu_info", "resolve_amp"]

AUTO_AMP = "auto"
AMPS = ("bfloat16", "float16", AUTO_AMP)  # what --amp takes; left off, the forwards run in float32
# the CPU flags of native bfloat16 matrix instructions, by instruction set
NATIVE_BF16 = {"x86": ("avx512_bf16", "amx_bf16"), "arm": ("bf16",)}
SLOWDOWN = "6.6x"  # bare ViT-Ti, bfloat16 autocast against float32: AMD EPYC, AVX2 only, 2 threads, torch 2.14
CPUINFO = "/proc/cpuinfo"
FLAG_KEYS = ("flags", "features")  # the feature lines of /proc/cpuinfo: x86's flags, Arm's Features
# torch's own probes, for an x86 machine without /proc/cpuinfo: flag -> function of torch.cpu
TORCH_PROBES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}


@dataclass(frozen=True)
class CpuInfo:
    """What :func:`resolve_amp` needs to know of a CPU.

    Attributes:
        machine: ``platform.machine()``, e.g. ``x86_64`` or ``aarch64``.
        capability: ``torch.backends.cpu.get_cpu_capability()``, e.g. ``AVX2`` or ``AVX512``: the vector
            instructions torch's kernels use (it does not say whether bfloat16 matrix instructions exist).
        flags: the CPU's feature flags (the first processor's ``flags`` or ``Features`` line of /proc/cpuinfo);
            None when they could not be read.
    """

    machine: str
    capability: str
    flags: frozenset[str] | None

    @property
    def family(self) -> str | None:
        """``x86``, ``arm``, or None for another instruction set."""
        machine = self.machine.lower()
        if machine in ("x86_64", "amd64", "x86", "i386", "i686"):
            return "x86"
        return "arm" if machine.startswith(("aarch64", "arm")) else None

    @property
    def wanted(self) -> tuple[str, ...]:
        """The flags that would make bfloat16 native on this instruction set."""
        return NATIVE_BF16.get(self.family or "", ())

    def native_bf16(self) -> list[str] | None:
        """The flags of native bfloat16 matrix instructions this CPU has ([] when none), or None when unknown."""
        if self.flags is None or not self.wanted:
            return None
        return [flag for flag in self.wanted if flag in self.flags]

    def describe(self) -> str:
        """``AVX2``, or ``aarch64, SVE256``: the capability, and the machine where it is not an x86 one."""
        return self.capability if self.family == "x86" else f"{self.machine}, {self.capability}"


def cpu_info() -> CpuInfo:
    """This machine's CPU: its flags from /proc/cpuinfo, else (on x86) from torch's own probes, else unknown."""
    machine = platform.machine()
    info = CpuInfo(machine, torch.backends.cpu.get_cpu_capability(), _proc_flags())
    if info.flags is None and info.family == "x86":
        info = CpuInfo(machine, info.capability, _torch_flags())
    return info


def _proc_flags(path: str = CPUINFO) -> frozenset[str] | None:
    """The first processor's feature flags in ``path``, or None when it cannot be read or has none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() in FLAG_KEYS:
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def _torch_flags() -> frozenset[str] | None:
    """The flags of :data:`TORCH_PROBES` that torch's probes find, or None when this torch has none of them."""
    probes = [getattr(torch.cpu, name, None) for name in TORCH_PROBES.values()]
    if not all(callable(probe) for probe in probes):
        return None
    return frozenset(flag for flag, probe in zip(TORCH_PROBES, probes) if cast("Callable[[], bool]", probe)())


@dataclass(frozen=True)
class Precision:
    """The dtype a run's perturbation forwards use, and why.

    Attributes:
        requested: ``--amp`` as given: None (off), ``bfloat16``, ``float16`` or ``auto``.
        amp: the autocast dtype used, or None for float32.
        reason: one line saying why.
        warning: one line when the run asked for bfloat16 where it is emulated (slower than float32), else None.
    """

    requested: str | None
    amp: str | None
    reason: str
    warning: str | None = None

    @property
    def emulated(self) -> bool:
        """Whether the forwards run bfloat16 autocast where the device does not have it natively."""
        return self.warning is not None

    def record(self) -> dict[str, Any]:
        """The results file's ``precision``."""
        return asdict(self)

    def header_lines(self) -> list[str]:
        """The run header's line: ``auto``'s choice and reason, or the warning; nothing otherwise."""
        if self.requested == AUTO_AMP:
            return [f"vit-audit: precision: --amp auto: {self.amp or 'float32'}: {self.reason}"]
        return [f"vit-audit: precision: {self.warning}"] if self.warning else []

    def plan_note(self, device: str) -> str | None:
        """What the plan line's ETA adds on ``device``: that bfloat16 is emulated there (None otherwise)."""
        if not self.emulated:
            return None
        where = "CPU" if torch.device(device).type == "cpu" else "device"
        return f"bfloat16 is slower on this {where} (emulated: --amp auto or off is faster)"


def _cuda_bf16() -> bool:
    """Whether the current CUDA device has native bfloat16: ``torch.cuda.is_bf16_supported`` without counting
    emulation (which it counts by default in the torch versions that have ``including_emulation``)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch, which counts only native support
        return torch.cuda.is_bf16_supported()


def resolve_amp(requested: str | None, device: str, cpu: CpuInfo | None = None,
                cuda_bf16: bool | None = None) -> Precision:
    """The autocast dtype for ``--amp requested`` on ``device`` (``cpu`` or ``cuda``, resolved), with its reason.

    ``auto`` gives bfloat16 where the device has it natively, else None (float32). An explicit dtype is kept; asked
    for bfloat16 where it is emulated, the result carries a warning.

    Args:
        requested: None, ``'bfloat16'``, ``'float16'`` or ``'auto'``.
        device: the run's device.
        cpu: the CPU to decide for; None probes this one (:func:`cpu_info`).
        cuda_bf16: whether the CUDA device has native bfloat16; None asks torch (:func:`_cuda_bf16`).

    Raises:
        ValueError: ``requested`` is not one of these.
    """
    if requested is not None and requested not in AMPS:
        raise ValueError(f"amp: {requested!r} is not {', '.join(AMPS[:-1])} or {AMPS[-1]}")
    if requested is None:
        return Precision(None, None, "--amp is off: float32")
    if requested == "float16":
        return Precision(requested, requested, "--amp float16 as given")
    kind = torch.device(device).type
    if kind == "cuda":
        native = _cuda_bf16() if cuda_bf16 is None else cuda_bf16
        why = ("native on this CUDA device (torch.cuda.is_bf16_supported, emulation excluded)" if native else
               "this CUDA device has no native bfloat16 (torch.cuda.is_bf16_supported, emulation excluded)")
        warning = None if native or requested == AUTO_AMP else (
            f"--amp bfloat16: {why}, so its autocast is emulated and slow; use --amp auto or leave --amp off")
    elif kind == "cpu":
        cpu = cpu_info() if cpu is None else cpu
        found = cpu.native_bf16()
        native = bool(found)
        if found:
            why = f"native on this CPU ({'/'.join(found)})"
        elif found is None:
            why = (f"cannot tell whether this CPU ({cpu.describe()}) has native bfloat16 matrix instructions (its "
                   f"feature flags could not be read from {CPUINFO})")
        else:
            why = (f"this CPU ({cpu.describe()}) has no native bfloat16 matrix instructions "
                   f"({'/'.join(cpu.wanted)})")
        warning = None if found is None or native or requested == AUTO_AMP else (
            f"--amp bfloat16: bfloat16 autocast is emulated on this CPU ({cpu.describe()}, no "
            f"{'/'.join(cpu.wanted)}): measured {SLOWDOWN} slower than float32 for the bare ViT-Ti on such a CPU; "
            "use --amp auto or leave --amp off")
    else:
        native, why, warning = False, f"no probe of native bfloat16 on a {kind} device", None
    if requested == AUTO_AMP:
        return Precision(requested, "bfloat16" if native else None, why)
    return Precision(requested, requested, f"--amp bfloat16 as given; {why}", warning)
