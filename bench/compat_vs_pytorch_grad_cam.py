"""`fastcam bench` of the same pytorch-grad-cam calls run by pytorch-grad-cam 1.5.7 and by
`fastcam.compat.pytorch_grad_cam` (issue 27), on a machine where torchvision does not import:

    python bench/compat_vs_pytorch_grad_cam.py --out bench/results/compat_vs_pgc_resnet18_224_b8_cpu_t1.json

pytorch-grad-cam imports torchvision at import time (for `preprocess_image`, SESS and the Faster R-CNN
target, none on the path of a CAM), so it is imported here with the test suite's torchvision stand-in
(`tests/fastcam_testkit/pgc.py`); where the real torchvision imports (the GPU machine), that one is used
and plain `fastcam bench --contenders pgc-...,compat-...` does the same. One intra-op thread by default
(the CPU machines are shared: fewer threads, less noise); the contenders' calls are interleaved round by
round. Extra arguments go to `fastcam bench` after the defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", default="bench/results/compat_vs_pgc_resnet18_224_b8_cpu_t1.json")
    args, rest = p.parse_known_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "tests"))
    from fastcam_testkit.pgc import import_pytorch_grad_cam

    import_pytorch_grad_cam()  # cached in sys.modules: `fastcam bench`'s import finds it
    from fastcam.benchmark.contenders import PYTORCH_GRAD_CAM_METHODS
    from fastcam.cli import main as fastcam_main

    contenders = ["inference", *(f"{lib}-{m}" for m in PYTORCH_GRAD_CAM_METHODS for lib in ("compat", "pgc"))]
    return fastcam_main(["bench", "--model", "resnet18", "--size", "224", "--batch", "8", "--device", "cpu",
                         "--warmup", "1", "--repeats", "3", "--max-time", "60", "--contenders", ",".join(contenders),
                         "--out", args.out, *rest])


if __name__ == "__main__":
    raise SystemExit(main())
