"""One summary table of a campaign's output folder (every JSON the sections wrote).

    python bench/campaign/summary.py OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main() -> None:
    out = Path(sys.argv[1])
    lines = [f"# fastcam GPU campaign: {out}", ""]
    env = _load(out / "environment.json")
    if env:
        c = env.get("ceilings", {})
        lines += [f"device {env.get('device_name')} (driver {env.get('driver')}), torch {env.get('versions', {}).get('torch')}, "
                  f"triton {env.get('versions', {}).get('triton')}, commit {str(env.get('commit'))[:12]}, {env.get('date')}",
                  f"ceilings: copy {c.get('copy_gbps', 0):.0f} GB/s, matmul {c.get('matmul_tflops', 0):.1f} TFLOP/s "
                  f"({c.get('matmul_dtype')})", ""]
    tests = _load(out / "tests.json")
    if tests:
        lines += ["## tests", f"{tests.get('passed')} passed, {tests.get('failed')} failed, {tests.get('skipped')} skipped, "
                  f"{tests.get('errors')} errors ({tests.get('wall_s')} s)"]
        lines += [f"- FAILED {f['test']}" for f in tests.get("failures", [])[:30]] + [""]
    benches = sorted(out.glob("bench_*.json"))
    if benches:
        lines += ["## speed (fastcam bench)", "| file | contender | images/s | ratio vs inference |", "|---|---|---|---|"]
        for path in benches:
            data = _load(path)
            results = data.get("results", [])
            base = next((r.get("images_per_s") for r in results if r.get("key") == "inference"), None)
            for r in results:
                rate = r.get("images_per_s")
                ratio = f"{rate / base:.3f}" if rate and base else ""
                lines.append(f"| {path.stem} | {r.get('name', r.get('key'))} | {rate if rate is not None else r.get('skipped', '')} | {ratio} |")
        lines.append("")
    scale = _load(out / "scale.json")
    if scale:
        lines += ["## scale (explain_dataset, store writes included)",
                  "| method | mode | batch | images/s | store % | GPU busy % | peak GiB | 50k images (s) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in scale.get("runs", []):
            lines.append(f"| {r['method']} | {r['mode']} | {r['batch']} | {r['images_per_s']} | "
                         f"{100 * r['store_fraction']:.1f} | {r['gpu_util_mean']} | {r['peak_gib']} | {r['extrapolated_50k_s']} |")
        for r in scale.get("inference", []):
            lines.append(f"| inference | {r['mode']} | {r['batch']} | {r['images_per_s']} | | | | |")
        lines.append(f"largest batch: {scale.get('largest_batch')}")
        lines.append("")
    others = sorted(p.name for p in out.glob("*.json") if not p.name.startswith(("bench_", "environment", "tests", "scale")))
    if others:
        lines += ["## kernel, clustering and deploy benchmarks", *[f"- {name}" for name in others], ""]
    text = "\n".join(lines)
    (out / "SUMMARY.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
