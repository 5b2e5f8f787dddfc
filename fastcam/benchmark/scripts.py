"""What the scripts under bench/ share, so that none imports another: the device of a kernel benchmark and
the JSON record it writes (their timer is `fastcam.benchmark.timing`, as for `fastcam bench`)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from fastcam.benchmark.provenance import environment

#: the checkout's folder of measured results (scripts run from a clone)
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def kernel_device(smoke: bool) -> torch.device:
    """The GPU to measure; with `smoke` and no GPU, the CPU through Triton's interpreter (set before triton
    is imported). Without a GPU and without `smoke` there is nothing to measure: exit."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not smoke:
        sys.exit("no CUDA device: this benchmark measures a GPU (use --smoke for a CPU code-path check)")
    os.environ.setdefault("TRITON_INTERPRET", "1")
    return torch.device("cpu")


def write_kernel_record(name: str, device: torch.device, *, smoke: bool, repeats: int, warmup: int,
                        peak: dict[str, float], rows: list[dict[str, Any]], out: Path | None = None,
                        **extra: object) -> dict[str, Any]:
    """The JSON record every kernel benchmark writes: environment, timing method, measured peak, rows;
    to `out`, else `bench/results/<name>-<device>-<date>.json` (smoke runs: /tmp, they are no measurement)."""
    env = environment(device)
    result = {
        "benchmark": name,
        "smoke": bool(smoke),
        "device": env["device_name"] + ("" if device.type == "cuda" else ", Triton interpreter"),
        "date": env["date"],
        "environment": env,
        **extra,
        "timing": {"method": "CUDA events, L2 flushed, median" if device.type == "cuda" else "perf_counter, median",
                   "repeats": repeats, "warmup": warmup},
        "peak": peak,
        "results": rows,
    }
    if out is None:
        tag = "smoke" if smoke else result["device"].replace(" ", "_").replace("/", "_")
        out = (Path("/tmp") if smoke else RESULTS) / f"{name}-{tag}-{result['date'][:10]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result
