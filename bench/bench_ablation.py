"""Ablation-CAM: the torch.fx split (only the layers after the target run for the ablated copies) against
full forwards with a replacing hook (pytorch-grad-cam's approach, fastcam's fallback), and Score-CAM.

    python bench/bench_ablation.py --batch 2 --out bench/results/ablation_split_cpu.json

Each row is one explainer on the same batch and targets; calls are interleaved round by round, so a drift
in the machine's load hits every row alike. The JSON records the environment (`fastcam.benchmark`'s).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

import fastcam
from fastcam.benchmark.provenance import environment
from fastcam.benchmark.timing import time_interleaved
from fastcam.models import resnet18

#: (row name, explainer factory): layer4 is on the main path (tail = avgpool + fc); layer4.1.bn1 sits inside
#: a residual block, so the block's input crosses the cut and the head runs once per call
ROWS = {
    "plain inference": None,
    "Ablation-CAM layer4, fx split": lambda m, bs: fastcam.AblationCAM(m, "layer4", batch_size=bs),
    "Ablation-CAM layer4, full forwards": lambda m, bs: fastcam.AblationCAM(m, "layer4", batch_size=bs, partial_forward=False),
    "Ablation-CAM layer4.1.bn1, fx split + head": lambda m, bs: fastcam.AblationCAM(m, "layer4.1.bn1", batch_size=bs),
    "Ablation-CAM layer4.1.bn1, full forwards": lambda m, bs: fastcam.AblationCAM(m, "layer4.1.bn1", batch_size=bs, partial_forward=False),
    "Score-CAM layer4": lambda m, bs: fastcam.ScoreCAM(m, "layer4", batch_size=bs),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64, help="perturbed inputs per forward")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/ablation_split_cpu.json")
    args = p.parse_args()
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = resnet18().eval()
    images = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        targets = model(images).argmax(1)
    calls = {}
    for name, make in ROWS.items():
        if make is None:
            def infer() -> None:
                with torch.inference_mode():
                    model(images)
            calls[name] = infer
        else:
            cam = make(model, args.batch_size)
            calls[name] = lambda cam=cam: cam(images, targets)
    # one warm-up call each (Ablation-CAM's first call traces the model), then interleaved rounds
    timed = time_interleaved(calls, device, warmup=1, repeats=args.repeats)
    rows = []
    base = timed["plain inference"].median_s
    for name, t in timed.items():
        rows.append({"name": name, "timing": t.__dict__, "images_per_s": args.batch / t.median_s,
                     "x_plain_inference": base / t.median_s})
        print(f"| {name} | {t.median_s * 1e3:.1f} | {(t.q3_s - t.q1_s) * 1e3:.1f} | {args.batch / t.median_s:.3f} | "
              f"{base / t.median_s:.3f} |")
    record = {"config": vars(args), "load_average": os.getloadavg(), "rows": rows, "environment": environment(device)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
