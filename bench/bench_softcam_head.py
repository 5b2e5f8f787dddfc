"""Benchmark: the fused SoftCAM head + maps (Triton) against eager PyTorch, on a GPU.

What is timed, per shape (ResNet-50 layer4: C = 2048, h×w = 7×7 (224² input) and 16×16 (512² input);
K in {2, 5, 1000}; batches 1, 8 and 256: below 2 × the SM count the head splits its channel reduction):

- fused:  `evidence_head` (1×1 conv + pooled logits in one kernel) -> argmax targets ->
          `softcam_maps` (gather + ReLU kernel, then the shared bilinear upsample + max-normalise kernel)
- eager:  F.conv2d 1×1 -> `pool_evidence` -> argmax -> `fastcam.methods.softcam.evidence_maps`
          (gather, ReLU, F.interpolate bilinear, amax, divide): what PyTorch does without the kernels.

The whole pipeline, the head alone, and (unless --no-backward) one fine-tuning step of the head
(forward + backward of cross-entropy + ElasticNet, gradients for features, weight and bias) are timed, with CUDA events around each call, the L2 cache
flushed (a 256 MiB write) before every timed call, and the median over `--repeats` calls reported.
Achieved bandwidth = the bytes the pipeline must move at the least (features read once, weights,
evidence + logits written, the target's evidence read, lowres written and read, maps written) divided by
the time; the same byte count is used for eager, so the two GB/s figures compare directly. The device's
peak is measured in the same run as a large device-to-device copy (read + write bytes / time).
Every row records the launch geometry (`plan`: grid, channel slices) and the configuration the autotuner
chose for the forward's channel loop (tuned on the first call per shape, absorbed by the agreement run);
`fused_head_unsplit_ms` (split shapes) and `fused_head_heuristic_ms` (tuning on) time the head on the
plain grid and with the heuristic configuration, so one run shows what each change buys.
Float32 matrix products follow PyTorch's convolution policy on both sides (TF32 while
`torch.backends.cudnn.allow_tf32` is True, PyTorch's default; `--no-tf32` turns it off for both).

Results go to bench/results/softcam_head-<gpu>-<date>.json with GPU name, versions, git commit and date.

    python bench/bench_softcam_head.py                       # full run on a GPU
    python bench/bench_softcam_head.py --smoke               # trivial sizes on CPU (Triton interpreter)
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from fastcam.benchmark.scripts import kernel_device, write_kernel_record
from fastcam.benchmark.timing import copy_bandwidth, time_callable


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 256])
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--sizes", type=int, nargs="+", default=[7, 16], help="feature map sides h = w")
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 5, 1000])
    parser.add_argument("--stride", type=int, default=32, help="input size = stride × h (ResNet-50: 32)")
    parser.add_argument("--pool", choices=("avg", "max", "lse"), default="avg")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="the features' dtype (eager runs the conv in that dtype, as under autocast)")
    parser.add_argument("--no-tf32", action="store_true", help="exact float32 products on both sides")
    parser.add_argument("--no-backward", action="store_true",
                        help="skip the training-step timing (head forward + backward with the ElasticNet penalty)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--copy-mib", type=int, default=2048, help="size of the bandwidth-probe copy")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: bench/results/...)")
    parser.add_argument("--smoke", action="store_true",
                        help="CPU smoke run of the code path at trivial sizes (Triton interpreter); not a measurement")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.channels, args.sizes, args.classes = [1, 3], 67, [5], [3, 19]  # 67: 2 slices
        args.stride, args.repeats, args.warmup, args.copy_mib = 4, 2, 1, 4
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = kernel_device(args.smoke)
    import torch
    import torch.nn.functional as F

    from fastcam.kernels import _launch, softcam_head
    from fastcam.kernels.softcam_head import evidence_head, softcam_maps
    from fastcam.ops import softcam_maps as evidence_maps
    from fastcam.ops import pool_evidence
    from fastcam.softcam import elastic_net

    torch.backends.cudnn.allow_tf32 = not args.no_tf32
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    dtype = getattr(torch, args.dtype)
    def timer(fn: Callable[[], object]) -> float:
        """Median milliseconds of `fn`: CUDA events, L2 flushed before every call (perf_counter on the CPU)."""
        return time_callable(fn, device, warmup=args.warmup, repeats=args.repeats, flush_l2=True).median_s * 1e3

    peak = copy_bandwidth(device, args.copy_mib, warmup=args.warmup, repeats=args.repeats)
    print(f"device-to-device copy: {peak['peak_gbps']:.0f} GB/s")

    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    for side, K, B in [(side, K, batch) for side in args.sizes for K in args.classes for batch in args.batch]:
        C, h, w = args.channels, side, side
        size = (args.stride * h, args.stride * w)
        features = torch.randn(B, C, h, w, device=device, generator=gen).relu_().to(dtype)  # post-ReLU, like layer4
        weight = torch.randn(K, C, device=device, generator=gen) / C**0.5
        bias = torch.randn(K, device=device, generator=gen)
        conv_weight, conv_bias = weight.to(dtype)[:, :, None, None], bias.to(dtype)

        def fused_head():
            return evidence_head(features, weight, bias, args.pool)

        def eager_head():
            evidence = F.conv2d(features, conv_weight, conv_bias)
            return pool_evidence(evidence, args.pool), evidence

        def fused_all():
            logits, evidence = fused_head()
            return logits, softcam_maps(evidence, logits.argmax(dim=1), size, check_targets=False)

        def eager_all():
            logits, evidence = eager_head()
            return logits, evidence_maps(evidence, logits.argmax(dim=1), size)

        with torch.no_grad():
            # agreement of the two paths on this shape (same targets, so the maps compare directly)
            logits_f, evidence_f = fused_head()
            logits_e, evidence_e = eager_head()
            targets = logits_e.float().argmax(dim=1)
            maps_f = softcam_maps(evidence_f, targets, size, check_targets=False)[1]
            maps_e = evidence_maps(evidence_e, targets, size)[1]
            scale = float(logits_e.float().abs().max().clamp_min(1.0))
            agreement = {
                "logits_max_abs_diff": float((logits_f - logits_e.float()).abs().max()),
                "logits_scale": scale,
                "evidence_max_abs_diff": float((evidence_f - evidence_e.float()).abs().max()),
                "maps_max_abs_diff": float((maps_f - maps_e).abs().max()),
            }
            del logits_f, evidence_f, logits_e, evidence_e, maps_f, maps_e
            geometry = softcam_head.plan(features, K)
            tuner = softcam_head._evidence_partial_kernel if geometry.split.split else softcam_head._evidence_head_fwd_kernel
            launch = {"plan": geometry.as_dict(), "tuning": _launch.tuning_enabled(),
                      "config": _launch.config_dict(getattr(tuner, "best_config", None))}

            times = {
                "fused_head_ms": timer(fused_head),
                "eager_head_ms": timer(eager_head),
                "fused_ms": timer(fused_all),
                "eager_ms": timer(eager_all),
            }
            if geometry.split.split:  # what the split buys: the head on the plain grid
                with _launch.unsplit():
                    times["fused_head_unsplit_ms"] = timer(fused_head)
            if launch["tuning"]:  # what tuning buys: the heuristic configuration
                with _launch.untuned():
                    times["fused_head_heuristic_ms"] = timer(fused_head)
        if not args.no_backward:
            # one fine-tuning step of the head: CE + ElasticNet, gradients for features, weight, bias
            labels = torch.randint(0, K, (B,), device=device, generator=gen)
            leaf_features = features.detach().requires_grad_(True)
            leaf_weight, leaf_bias = weight.detach().requires_grad_(True), bias.detach().requires_grad_(True)

            def train_step(head):
                logits, evidence = head(leaf_features, leaf_weight, leaf_bias)
                loss = F.cross_entropy(logits.float(), labels) + elastic_net(evidence, 0.0, 4e-5)
                return torch.autograd.grad(loss, (leaf_features, leaf_weight, leaf_bias))

            def fused_train():
                return train_step(lambda a, w_, b_: evidence_head(a, w_, b_, args.pool))

            def eager_train():
                def head(a, w_, b_):
                    evidence = F.conv2d(a, w_.to(a.dtype)[:, :, None, None], b_.to(a.dtype))
                    return pool_evidence(evidence, args.pool), evidence
                return train_step(head)

            times["fused_train_ms"] = timer(fused_train)
            times["eager_train_ms"] = timer(eager_train)
            del leaf_features
        H, W = size
        head_bytes = features.numel() * features.element_size() + weight.numel() * 4 + bias.numel() * 4 + (B * K * h * w + B * K) * 4
        maps_bytes = B * h * w * 4 * 3 + B * H * W * 4  # target evidence read, lowres write + read, maps write
        flops = 2 * B * K * C * h * w
        row = {
            "batch": B, "channels": C, "h": h, "w": w, "classes": K, "input_size": [H, W],
            "pool": args.pool, "dtype": args.dtype,
            "head_bytes": head_bytes, "pipeline_bytes": head_bytes + maps_bytes, "head_flops": flops, "launch": launch,
            **times,
            "speedup": times["eager_ms"] / times["fused_ms"],
            "head_speedup": times["eager_head_ms"] / times["fused_head_ms"],
            **({"train_speedup": times["eager_train_ms"] / times["fused_train_ms"]} if "fused_train_ms" in times else {}),
            "fused_gbps": (head_bytes + maps_bytes) / times["fused_ms"] / 1e6,
            "eager_gbps": (head_bytes + maps_bytes) / times["eager_ms"] / 1e6,
            "fused_head_gbps": head_bytes / times["fused_head_ms"] / 1e6,
            "eager_head_gbps": head_bytes / times["eager_head_ms"] / 1e6,
            "fused_head_tflops": flops / times["fused_head_ms"] / 1e9,
            "agreement": agreement,
        }
        row["fused_fraction_of_peak"] = row["fused_gbps"] / peak["peak_gbps"]
        row["fused_head_fraction_of_peak"] = row["fused_head_gbps"] / peak["peak_gbps"]
        rows.append(row)
        print(
            f"{h}x{w} K={K:5d} B={B:<4d}: fused {times['fused_ms']:.3f} ms ({row['fused_gbps']:.0f} GB/s, "
            f"{100 * row['fused_fraction_of_peak']:.0f}% of peak), eager {times['eager_ms']:.3f} ms, "
            f"speedup {row['speedup']:.2f}x | head: fused {times['fused_head_ms']:.3f} ms "
            f"({row['fused_head_gbps']:.0f} GB/s, {row['fused_head_tflops']:.1f} TFLOP/s), "
            f"eager {times['eager_head_ms']:.3f} ms | max |dlogits| {agreement['logits_max_abs_diff']:.2e}"
            + (f" | train step: fused {times['fused_train_ms']:.3f} ms, eager {times['eager_train_ms']:.3f} ms"
               if "fused_train_ms" in times else "")
            + f" | grid {launch['plan']['grid']} config {launch['config']}"
        )
        del features

    return write_kernel_record("softcam_head", device, smoke=args.smoke, repeats=args.repeats, warmup=args.warmup,
                               peak=peak, rows=rows, out=args.out, tf32=not args.no_tf32)


if __name__ == "__main__":
    main()
