"""The hardware a run asks for: ``trainer.accelerator: auto`` resolved to ``cpu`` or ``gpu``,
and ``trainer.precision: auto``: bf16 mixed precision where the hardware computes in bf16,
float32 elsewhere.

bf16 autocast only pays where bf16 matrix products run natively: on x86 CPUs with the
AVX512-BF16 or AMX-BF16 instructions (oneDNN kernels; without them oneDNN emulates bf16 and
a step is slower than in float32) and on CUDA GPUs that compute in bf16 (Ampere and
later). The CPU test reads the instruction-set flags the kernel reports in
``/proc/cpuinfo`` (what ``lscpu`` lists; no flags elsewhere, so ``auto`` is float32 on
other systems). The losses compute in float32 under autocast either way.
"""

from pathlib import Path

import torch

AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")


def resolve_accelerator(accelerator: str) -> str:
    """``trainer.accelerator`` as ``cpu`` or ``gpu``: ``auto`` is ``gpu`` when CUDA is
    available, ``cuda`` is ``gpu``."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator == "cuda" else accelerator


def cpu_bf16_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The bf16 flags of :data:`CPU_BF16_FLAGS` that ``cpuinfo``'s ``flags`` line lists
    (empty where the file is missing)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            flags = set(value.split())
            return tuple(flag for flag in CPU_BF16_FLAGS if flag in flags)
    return ()


def cpu_supports_bf16() -> bool:
    """True if torch has oneDNN and the CPU has AVX512-BF16 or AMX-BF16."""
    return torch.backends.mkldnn.is_available() and bool(cpu_bf16_flags())


def cuda_supports_bf16() -> bool:
    """True if the current CUDA GPU computes in bf16 natively (not emulated)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` when the resolved ``accelerator`` (``cpu`` or ``gpu``)
    has bf16 hardware, else ``32-true`` (the run's ``config.yaml``, ``metrics.json`` and
    ``dscl-train --print-config`` show the result). Any other value is returned
    unchanged."""
    if precision != AUTO:
        return precision
    supported = cpu_supports_bf16() if accelerator == "cpu" else cuda_supports_bf16()
    return BF16 if supported else FP32
