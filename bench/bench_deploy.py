"""Benchmark: the exported SoftCAM graph in ONNX Runtime against the PyTorch SoftCAM explainer and against
plain PyTorch inference of the same network.

Contenders, on the same SoftCAM network (`fastcam.softcam.convert` of a `fastcam.models` builder, random
weights) and the same images:

- onnxruntime:        `InferenceSession.run` on the file `fastcam.deploy.export` wrote (logits, maps,
                      lowres, evidence), numpy in and out;
- pytorch-softcam:    `fastcam.SoftCAM(net).explain(images)` (the same outputs, with its input and NaN checks);
- pytorch-inference:  `net(images)` under `torch.inference_mode()` (logits and evidence, no maps): the floor.

Timing: interleaved rounds (each round times one call of every contender in turn, so drifting machine load
hits all of them alike), after untimed warm-up calls; images/s = batch / median seconds per call.
Results go to bench/results/deploy_<model>_<size>_<device>.json with the environment record and the
1-minute load average before and after (our CPU machines are shared).

    python bench/bench_deploy.py                                # resnet18, 224², batches 1 and 16, CPU
    python bench/bench_deploy.py --device cuda                  # ONNX Runtime's CUDA provider (onnxruntime-gpu)
    python bench/bench_deploy.py --model tiny_resnet --size 64 --rounds 3   # smoke run

The `--device cuda` path uses ONNX Runtime's CUDAExecutionProvider with numpy inputs (host-device copies
included in its time, as a server receiving images would pay) and CUDA-synchronised PyTorch timings.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18", help="a fastcam.models builder, converted to SoftCAM")
    parser.add_argument("--classes", type=int, default=2, help="K of the SoftCAM head")
    parser.add_argument("--size", type=int, default=224, help="square input side")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--rounds", type=int, default=10, help="timed calls per contender and batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per contender and batch size")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of both runtimes (torch.set_num_threads and ONNX Runtime's intra-op pool); "
                        "default 1 on CPU (on our shared 2-core machines two OpenMP threads collapse under load), "
                        "each runtime's own default on CUDA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/deploy_...)")
    args = parser.parse_args(argv)
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    return args


def contenders(net: Any, onnx_path: Path, device: str, threads: int | None) -> dict[str, Callable[[Any, Any], Any]]:
    """name -> call(images tensor, images numpy) for each contender (each returns when its results exist)."""
    import onnxruntime
    import torch

    import fastcam

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    options = onnxruntime.SessionOptions()
    # ONNX Runtime's idle worker threads spin for a while after each run: interleaved with PyTorch calls they
    # would steal its cores (measured: PyTorch 5-80x slower). Spinning off, every contender gets the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=providers)
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError(f"onnxruntime has no CUDA provider here (providers: {session.get_providers()})")
    explainer = fastcam.SoftCAM(net)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def ort(images: Any, array: Any) -> Any:
        return session.run(None, {"images": array})

    def softcam(images: Any, array: Any) -> Any:
        out = explainer.explain(images)
        sync()
        return out

    def inference(images: Any, array: Any) -> Any:
        with torch.inference_mode():
            out = net(images)
        sync()
        return out

    return {"onnxruntime": ort, "pytorch-softcam": softcam, "pytorch-inference": inference}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    import fastcam
    from fastcam.benchmark.provenance import environment, load_average, write_record  # one record of device, versions, commit, date for every benchmark
    from fastcam.benchmark.timing import time_interleaved  # the one timer of every benchmark
    from fastcam.models import BUILDERS

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_deploy: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = fastcam.softcam.convert(BUILDERS[args.model](num_classes=args.classes), args.classes).eval().to(device)
    generator = torch.Generator().manual_seed(args.seed)
    example = torch.randn(2, 3, args.size, args.size, generator=generator).to(device)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "softcam.onnx"
        start = time.perf_counter()
        info = fastcam.deploy.export(fastcam.SoftCAM(net), path, example)
        export_s = time.perf_counter() - start
        calls = contenders(net, path, args.device, args.threads)
        results = []
        for batch in args.batches:
            images = torch.randn(batch, 3, args.size, args.size, generator=generator).to(device)
            array = images.cpu().numpy()
            timed = time_interleaved({name: (lambda call=call: call(images, array)) for name, call in calls.items()},
                                     device, warmup=args.warmup, repeats=args.rounds)
            for name, timing in timed.items():
                median = timing.median_s
                results.append({"contender": name, "batch": batch, "median_s": median, "images_per_s": batch / median,
                                "min_s": timing.min_s, "rounds": len(timing.times_s)})
                print(f"batch {batch:3d}  {name:18s} {batch / median:9.1f} images/s  (median {median * 1e3:.1f} ms)")
    record = {
        "benchmark": "deploy", "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {**environment(device), "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"),
                        "onnxscript": _version("onnxscript"), "load_average_1min": [load_before, load_average()]},
        "export": {**info.record(), "seconds": export_s},
        "results": results,
    }
    out = write_record(record, args.out or ROOT / "bench" / "results" /
                       f"deploy_{args.model}_{args.size}_{args.device}.json")
    print(f"bench_deploy: results -> {out}")
    return 0


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(main())
