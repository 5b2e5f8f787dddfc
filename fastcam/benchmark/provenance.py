"""Where a benchmark's numbers come from: device, library versions, commit and date (`environment`).

Every benchmark records it (`fastcam bench`, and the scripts under bench/), before it times anything:
the commit and tree state recorded are those that were timed.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _version(module: str) -> str | None:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except Exception:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]  # the checkout: fastcam/benchmark/provenance.py -> repo
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def environment(device: torch.device) -> dict[str, Any]:
    """Device name, driver, library versions, commit and date of a benchmark run.

    Where the checkout has no git metadata (a copy of the working tree on a lent GPU machine), the commit
    comes from FASTCAM_COMMIT (bench/gpu_campaign.sh sets it from bench/.campaign-commit).
    """
    import fastcam

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "commit": _git("rev-parse", "HEAD") or os.environ.get("FASTCAM_COMMIT"),
        "driver": _driver() if device.type == "cuda" else None,
        "tree_modified": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "fastcam": fastcam.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
            "numpy": np.__version__, "scikit-learn": _version("sklearn"), "triton": _version("triton"),
            "torchcam": _version("torchcam"), "captum": _version("captum"),
            "pytorch-grad-cam": _version("pytorch_grad_cam"), "torchvision": _version("torchvision"),
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        },
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the platform has none): benchmarks record it before and
    after, since a shared machine's load moves their figures."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def write_record(record: dict[str, Any], path: Path) -> Path:
    """A benchmark's JSON record written to `path` (its folder made), UTF-8, indented."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
