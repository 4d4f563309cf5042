"""A one-line description of the machine, for reports and recipe headers."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_hardware() -> str:
    """CPU model and core count, plus the GPU when torch sees one."""
    parts = [f"{_cpu_model()}, {os.cpu_count()} cores"]
    try:
        import torch

        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    except ImportError:
        pass
    return "; ".join(parts)


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
