"""The campaign's environment record: fastcam.benchmark.environment() plus the two ceilings every GPU
number is read against, measured in the same run: device-to-device copy bandwidth (GB/s, read + write
bytes) and the dense bf16 matmul rate (TFLOP/s).

    python bench/campaign/env.py --out OUT/environment.json [--dry-run]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastcam.benchmark.timing import copy_bandwidth, time_callable  # the one timer of every benchmark


def ceilings(device: torch.device, dry_run: bool) -> dict[str, float]:
    mib, repeats = (4, 3) if dry_run else (2048, 20)
    copy = copy_bandwidth(device, mib, warmup=1, repeats=repeats)
    n = 256 if dry_run else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    matmul_s = time_callable(lambda: a @ b, device, warmup=1, repeats=repeats).median_s
    return {"copy_gbps": copy["peak_gbps"], "copy_mib": mib,
            "matmul_tflops": 2 * n**3 / matmul_s / 1e12, "matmul_n": n, "matmul_dtype": str(dtype).split(".")[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    from fastcam.benchmark import environment

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    record = {**environment(device), "ceilings": ceilings(device, args.dry_run), "dry_run": args.dry_run}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    c = record["ceilings"]
    print(f"environment: {record['device_name']}, driver {record.get('driver')}, torch {record['versions']['torch']}, "
          f"copy {c['copy_gbps']:.0f} GB/s, matmul {c['matmul_tflops']:.1f} TFLOP/s ({c['matmul_dtype']})")


if __name__ == "__main__":
    main()
