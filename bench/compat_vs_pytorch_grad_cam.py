"""`fastcam bench` of the same pytorch-grad-cam calls run by pytorch-grad-cam 1.5.7 and by
`fastcam.compat.pytorch_grad_cam` (issue 27), on a machine where torchvision does not import:

    python bench/compat_vs_pytorch_grad_cam.py        # both runs below, into bench/results/
    python bench/compat_vs_pytorch_grad_cam.py --run gradient --batch 2   # one run; extra flags go to `fastcam bench`

Two runs, ResNet-18 at 224 px on the CPU, one intra-op thread (the CPU machines are shared: fewer threads,
less noise), each contender's calls interleaved round by round with the others':

- "gradient": Grad-CAM, Grad-CAM++ and Eigen-CAM, batch 8 (`compat_vs_pgc_resnet18_224_b8_cpu_t1.json`);
- "perturbation": Score-CAM and Ablation-CAM, batch 1 (`compat_vs_pgc_perturbation_resnet18_224_b1_cpu_t1.json`):
  each makes 512 masked or ablated inputs per image at layer4, and pytorch-grad-cam runs each through the
  whole network, one image after another (about 4 minutes per image on one thread here), so a batch of 8
  would take half an hour per call; fastcam packs the inputs of all images into the same forwards, so
  the ratio does not depend on the batch.

pytorch-grad-cam imports torchvision at import time (for `preprocess_image`, SESS and the Faster R-CNN
target, none on the path of a CAM), so it is imported here with the test suite's torchvision stand-in
(`tests/fastcam_testkit/pgc.py`); where the real torchvision imports (the GPU machine), that one is used
and plain `fastcam bench --contenders pgc-...,compat-...` does the same.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: run name -> (methods, batch, `fastcam bench` timing flags, JSON file)
RUNS = {
    "gradient": (("gradcam", "gradcampp", "eigencam"), 8, ["--warmup", "1", "--repeats", "7", "--max-time", "120"],
                 "compat_vs_pgc_resnet18_224_b8_cpu_t1.json"),
    "perturbation": (("scorecam", "ablationcam"), 1, ["--warmup", "0", "--repeats", "3", "--max-time", "5"],
                     "compat_vs_pgc_perturbation_resnet18_224_b1_cpu_t1.json"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", choices=(*RUNS, "both"), default="both")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args, rest = p.parse_known_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from fastcam_testkit.pgc import import_pytorch_grad_cam

    import_pytorch_grad_cam()  # cached in sys.modules: `fastcam bench`'s import finds it
    from fastcam.cli import main as fastcam_main

    rc = 0
    for name in RUNS if args.run == "both" else (args.run,):
        methods, batch, timing, filename = RUNS[name]
        contenders = ["inference", *(f"{lib}-{m}" for m in methods for lib in ("compat", "pgc"))]
        rc |= fastcam_main(["bench", "--model", "fastcam:resnet18", "--size", "224", "--batch", str(batch), "--device", "cpu",
                            *timing, "--contenders", ",".join(contenders), "--out", str(Path(args.out_dir) / filename),
                            "--quiet", *rest])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
