"""What machine this is, and which precision its arithmetic should use.

Machines differ in exactly the way that matters here: an Intel Xeon with AMX computes bf16 matrix
products natively (faster than fp32), while an AVX2-only CPU (many AMD EPYC) emulates bf16 and runs a
SmolLM2 training step many times slower under bf16 autocast than in fp32 (docs/lcrec.md). So `auto`
picks bf16 only where it is native: a CUDA GPU, or a CPU with AMX-BF16 or AVX512-BF16; fp32 elsewhere.
An explicit `bf16` on a CPU without native bf16 is refused rather than left to crawl.

`machine()` is what every stage log and benchmark records.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name ("Intel(R) Xeon(R) Processor"), or what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether bf16 matrix products run natively here: a CUDA GPU, or a CPU with AMX-BF16 / AVX512-BF16."""
    if torch.cuda.is_available():
        return True
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def capability() -> str:
    """The CPU's best vector extension for our purpose: `amx_bf16`, `avx512_bf16`, `avx512f`, `avx2` or `basic`."""
    flags = cpu_flags()
    for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if flag in flags:
            return flag
    return "basic"


def choose_precision(requested: str) -> str:
    """`fp32` or `bf16` for a requested `auto` / `fp32` / `bf16`.

    Raises ValueError for an unknown name, and for `bf16` where it is not native (see module docstring).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {requested!r}")
    if requested == "auto":
        return "bf16" if native_bf16() else "fp32"
    if requested == "bf16" and not native_bf16():
        raise ValueError(
            f"precision bf16 asked for on a CPU without native bf16 ({cpu_model()}, best: {capability()}): "
            "bf16 autocast is emulated there and many times slower than fp32; use precision: auto or fp32"
        )
    return requested


def machine() -> dict[str, object]:
    """What a stage log or benchmark records about where it ran."""
    return {
        "cpu": cpu_model(),
        "capability": capability(),
        "native_bf16": native_bf16(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
