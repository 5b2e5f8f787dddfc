"""Benchmark: the post-hoc combine kernels (Triton) against the torch path, on a GPU.

What is timed, per shape (ResNet-50 layer4: C = 2048, h×w = 7×7 (224² input) and 16×16 (512² input);
batches 1, 8, 64 and 256 (below 2 × the SM count the kernels split the channel reduction across
programs); activations/gradients in `--dtype`):

- combine (Grad-CAM, Grad-CAM++, Score-CAM): activations (B, C, h, w) + weights (B, C) ->
  lowres (B, h, w) + maps (B, H, W).
  triton: `fastcam.kernels.cam_combine.combine` (weighted sum + ReLU kernel, upsample-normalise kernel);
  torch:  `fastcam.ops.combine(...)` (einsum, ReLU, F.interpolate, amax, divide).
- cfcam (CF-CAM after clustering), variants "paper" and "reference": activations, gradients and
  channel labels -> weights (B, C), lowres, maps.
  triton: `fastcam.kernels.cfcam_filter.cfcam_combine` (weights kernel [+ a label argsort for "reference"],
          then the two combine kernels);
  torch:  `fastcam.methods.cfcam.cluster_filter_weights` then the torch combine.
  Labels are synthetic but shaped like CF-CAM's: 25 % important, 5 % noise, the rest in `--clusters`
  clusters, assigned at random per image.

CUDA events around each call, L2 flushed before every call, median over `--repeats` (the one timer,
`fastcam.benchmark.timing.time_callable`, and its copy-bandwidth probe `copy_bandwidth`). Achieved bandwidth = the bytes each path must
move at the least (inputs read once, lowres written and read once, maps written once) / time; the same
byte count is used for both paths, so their GB/s compare directly. The device's peak is measured in the
same run as a large device-to-device copy. The largest |difference| between the two paths' outputs is
recorded for every shape, with the launch geometry (`plan`: grid, channel slices) and the configuration
the autotuner chose for the channel-reduction kernel (tuned on the first call per shape, which the
warm-up absorbs; `tuning` says whether tuning was on). Where the channels are split, `triton_unsplit_ms`
times the same call on the plain grid (`fastcam.kernels._launch.unsplit`); where tuning is on,
`triton_heuristic_ms` times it with the heuristic configuration: one run shows what each change buys.

Results go to bench/results/kernels_combine-<gpu>-<date>.json with GPU name, versions, git commit, date.

    python bench/bench_kernels_combine.py            # full run on a GPU
    python bench/bench_kernels_combine.py --smoke    # trivial sizes on CPU (Triton interpreter); not a measurement
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from fastcam.benchmark.scripts import kernel_device, write_kernel_record
from fastcam.benchmark.timing import copy_bandwidth, time_callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 16], help="feature map sides h = w")
    parser.add_argument("--stride", type=int, default=32, help="input size = stride × h (ResNet-50: 32)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="activations' and gradients' dtype (bf16/fp16: as under autocast)")
    parser.add_argument("--clusters", type=int, default=4, help="CF-CAM clusters per image")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--copy-mib", type=int, default=2048, help="size of the bandwidth-probe copy")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/...)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke run of the code path at trivial sizes (Triton interpreter); not a measurement")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.channels, args.sizes, args.stride = [1, 3], 67, [5], 4  # 67 channels: 2 slices
        args.clusters, args.repeats, args.warmup, args.copy_mib = 3, 2, 1, 4
    return args


def synthetic_labels(batch: int, channels: int, clusters: int, generator, device):  # noqa: ANN001
    """(B, C) int64 CF-CAM-like labels: 25 % IMPORTANT, 5 % NOISE, the rest in `clusters` clusters."""
    import torch

    from fastcam.ops import IMPORTANT, NOISE

    u = torch.rand(batch, channels, generator=generator, device=device)
    ids = torch.randint(0, clusters, (batch, channels), generator=generator, device=device)
    return torch.where(u < 0.25, IMPORTANT, torch.where(u < 0.30, NOISE, ids))


def max_diff(a, b) -> float:  # noqa: ANN001
    return float((a.float() - b.float()).abs().max())


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = kernel_device(args.smoke)
    import torch

    from fastcam.kernels import _launch, cam_combine, cfcam_filter
    from fastcam.kernels.cam_combine import combine
    from fastcam.kernels.cfcam_filter import cfcam_combine
    from fastcam.ops import combine as torch_path_combine
    from fastcam.ops import cluster_filter_weights

    dtype = getattr(torch, args.dtype)
    def timer(fn: Callable[[], object]) -> float:
        """Median milliseconds of `fn`: CUDA events, L2 flushed before every call (perf_counter on the CPU)."""
        return time_callable(fn, device, warmup=args.warmup, repeats=args.repeats, flush_l2=True).median_s * 1e3

    peak = copy_bandwidth(device, args.copy_mib, warmup=args.warmup, repeats=args.repeats)
    print(f"device-to-device copy: {peak['peak_gbps']:.0f} GB/s")

    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for side, B in [(side, batch) for side in args.sizes for batch in args.batch]:
        C, h, w = args.channels, side, side
        size = (args.stride * h, args.stride * w)
        H, W = size
        activations = torch.randn(B, C, h, w, device=device, generator=gen).relu_().to(dtype)  # post-ReLU
        gradients = (torch.randn(B, C, h, w, device=device, generator=gen) * 1e-3).to(dtype)
        weights = torch.randn(B, C, device=device, generator=gen) / C
        labels = synthetic_labels(B, C, args.clusters, gen, device)
        elt = activations.element_size()
        maps_bytes = B * h * w * 4 * 2 + B * H * W * 4  # lowres written and read back, maps written
        combine_bytes = B * C * h * w * elt + B * C * 4 + maps_bytes
        cfcam_bytes = 2 * B * C * h * w * elt + B * C * 8 + B * C * 4 * 2 + maps_bytes  # + labels, weights w+r

        def record(name: str, nbytes: int, triton_fn, torch_fn, agreement: dict, launch: dict) -> None:  # noqa: ANN001
            with torch.no_grad():
                times = {"triton_ms": timer(triton_fn), "torch_ms": timer(torch_fn)}
                if launch["plan"]["parts"] > 1:  # what the split buys: the same call on the plain grid
                    with _launch.unsplit():
                        times["triton_unsplit_ms"] = timer(triton_fn)
                if launch["tuning"]:  # what tuning buys: the heuristic configuration
                    with _launch.untuned():
                        times["triton_heuristic_ms"] = timer(triton_fn)
            row = {
                "case": name, "batch": B, "channels": C, "h": h, "w": w, "input_size": [H, W], "dtype": args.dtype,
                "bytes": nbytes, **times, "launch": launch,
                "speedup": times["torch_ms"] / times["triton_ms"],
                "triton_gbps": nbytes / times["triton_ms"] / 1e6,
                "torch_gbps": nbytes / times["torch_ms"] / 1e6,
                "agreement": agreement,
            }
            row["triton_fraction_of_peak"] = row["triton_gbps"] / peak["peak_gbps"]
            rows.append(row)
            print(
                f"{name:16s} B={B:<4d} {h}x{w}: triton {times['triton_ms']:.3f} ms ({row['triton_gbps']:.0f} GB/s, "
                f"{100 * row['triton_fraction_of_peak']:.0f}% of peak), torch {times['torch_ms']:.3f} ms "
                f"({row['torch_gbps']:.0f} GB/s), speedup {row['speedup']:.2f}x | {agreement} | "
                f"grid {launch['plan']['grid']} config {launch['config']}"
            )

        with torch.no_grad():
            lowres_t, maps_t = combine(activations, weights, size)
            lowres_r, maps_r = torch_path_combine(activations, weights, size)
            agreement = {"lowres_max_abs_diff": max_diff(lowres_t, lowres_r), "lowres_scale": float(lowres_r.abs().max()),
                         "maps_max_abs_diff": max_diff(maps_t, maps_r)}
        launch = {"plan": cam_combine.plan(activations).as_dict(), "tuning": _launch.tuning_enabled(),
                  "config": _launch.config_dict(cam_combine._weighted_sum_kernel.best_config)}
        record("combine", combine_bytes, lambda: combine(activations, weights, size),
               lambda: torch_path_combine(activations, weights, size), agreement, launch)

        for variant in ("paper", "reference"):
            def fused(variant=variant):  # noqa: ANN202
                return cfcam_combine(activations, gradients, labels, size, variant=variant)

            def eager(variant=variant):  # noqa: ANN202
                cf_weights = cluster_filter_weights(gradients, labels, variant=variant)
                return (cf_weights, *torch_path_combine(activations, cf_weights, size))

            with torch.no_grad():
                got, expected = fused(), eager()
                agreement = {"weights_max_abs_diff": max_diff(got[0], expected[0]), "weights_max": float(expected[0].max()),
                             "maps_max_abs_diff": max_diff(got[2], expected[2])}
                del got, expected
            geometry = cfcam_filter.plan(gradients)
            tuner = cfcam_filter._cfcam_scores_kernel if geometry.split.split else cfcam_filter._cfcam_weights_kernel
            launch = {"plan": geometry.as_dict(), "tuning": _launch.tuning_enabled(),
                      "config": _launch.config_dict(getattr(tuner, "best_config", None))}
            record(f"cfcam_{variant}", cfcam_bytes, fused, eager, agreement, launch)
        del activations, gradients

    return write_kernel_record("kernels_combine", device, smoke=args.smoke, repeats=args.repeats, warmup=args.warmup,
                               peak=peak, rows=rows, out=args.out)


if __name__ == "__main__":
    main()
