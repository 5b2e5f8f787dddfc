"""Compile every Triton launch of fastcam.kernels for an H100 (sm_90) on a machine without a GPU, and report
what the compiler says: registers per thread, spills, stack, shared memory, and whether the channel loops
were software-pipelined (cp.async in the PTX).

How: the public kernel functions run on CPU tensors under `fastcam.kernels._launch.plan_as_gpu()` (GPU
block shapes, 132 SMs, tuning on), with Triton's launch methods replaced by a recorder, so each launch is
captured with its exact arguments; an autotuned launch is recorded once per candidate configuration the
pruner offers for that shape (the heuristic one first). Each record is then compiled the way a launch on a
GPU would compile it (Triton's own argument specialisation: unit strides, 16-byte alignment, divisibility
by 16) for GPUTarget("cuda", 90, 32), and Triton's bundled ptxas reports the resources (`-v`).

Shapes: ResNet-50 layer4 (C = 2,048, 7x7 and 16x16) and ResNet-18 layer4 (C = 512, 7x7), float32 NCHW,
batch 1 (split channel reduction) and 512 (no split); SoftCAM K = 2 and K = 1,000 (K = 19 with max pooling
for its maps and backward). Launches that Triton would compile to the same binary (same specialization)
are compiled once. --quick: ResNet-50 7x7 only, heuristic configurations only.

    python bench/compile_sm90.py                 # every candidate configuration, a table
    python bench/compile_sm90.py --quick --json  # heuristic configurations only (the CI test)

It must run without TRITON_INTERPRET (it unsets it before importing Triton).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


@dataclass
class Launch:
    """One recorded launch: the kernel, its arguments and options, the grid, the configuration's origin."""

    case: str
    kernel: JITFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    grid: tuple[int, ...]
    heuristic: bool = True
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> str:
        names = ("BLOCK_C", "BLOCK_K", "BLOCK_P", "BLOCK_L", "BLOCK_H", "BLOCK_W", "STAGES", "num_warps", "num_stages")
        return " ".join(f"{n}={self.kwargs[n]}" for n in names if n in self.kwargs)


class Recorder:
    """Replaces JITFunction.run and Autotuner.run with recorders while active."""

    def __init__(self) -> None:
        self.launches: list[Launch] = []
        self.case = ""

    def __enter__(self) -> Recorder:
        recorder = self
        self._saved = (JITFunction.run, Autotuner.run)

        def jit_run(kernel: JITFunction, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
            recorder.launches.append(Launch(recorder.case, kernel, args, dict(kwargs), tuple(grid)))

        def tuner_run(tuner: Autotuner, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> None:
            tuner.nargs = dict(zip(tuner.arg_names, args))
            for index, config in enumerate(tuner.prune_configs(kwargs)):
                recorder.launches.append(Launch(recorder.case, tuner.fn, args, {**kwargs, **config.all_kwargs()},
                                                tuple(grid), heuristic=index == 0))
            tuner.nargs = None

        JITFunction.run, Autotuner.run = jit_run, tuner_run
        return self

    def __exit__(self, *exc: object) -> None:
        JITFunction.run, Autotuner.run = self._saved


def _bind(launch: Launch) -> tuple[Any, ...]:
    """Triton's binding of a launch for the sm_90 backend: (backend, kwargs, bound args, specialization,
    options), the specialization being what a GPU launch keys its compiled kernel on."""
    kernel = launch.kernel
    backend = make_backend(TARGET)
    kwargs = {**launch.kwargs, "debug": False}
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    return (backend, kwargs, *binder(*launch.args, **kwargs))


def specialization_key(launch: Launch) -> str:
    """Launches with equal keys compile to the same binary (Triton's own cache key, plus the kernel)."""
    _, _, _, specialization, options = _bind(launch)
    return f"{launch.kernel.fn.__qualname__}|{specialization}|{options}"


def compile_launch(launch: Launch) -> dict[str, Any]:
    """Compile one launch as Triton would on an sm_90 device, then ask ptxas for its resources."""
    kernel = launch.kernel
    backend, kwargs, bound_args, specialization, options = _bind(launch)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound_args, specialization, options)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=TARGET, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernel.ptx")
        with open(path, "w") as handle:
            handle.write(ptx)
        arch = re.search(r"\.target\s+(sm_\w+)", ptx).group(1)
        run = subprocess.run([PTXAS, f"-arch={arch}", "-v", path, "-o", os.path.join(folder, "kernel.cubin")],
                             capture_output=True, text=True, check=True)
    info = run.stderr
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, info)) else 0  # noqa: E731
    return {
        "arch": arch,
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack": number(r"(\d+) bytes stack frame"),
        "shared": compiled.metadata.shared,
        "cp_async": ptx.count("cp.async.cg") + ptx.count("cp.async.ca") + ptx.count("cp.async.bulk"),
    }


def _cases(quick: bool) -> Iterator[tuple[str, Callable[[], object]]]:
    """(name, thunk) pairs whose launches get recorded: every kernel at ResNet layer4 shapes."""
    from fastcam.kernels import cam_combine, cfcam_filter, softcam_head
    from fastcam.ops import IMPORTANT, NOISE

    g = torch.Generator().manual_seed(0)
    shapes = [("r50-7x7", 2048, 7)] + ([] if quick else [("r18-7x7", 512, 7), ("r50-16x16", 2048, 16)])
    for name, channels, side in shapes:
        for batch in (1, 512):
            act = torch.randn(batch, channels, side, side, generator=g)
            weights = torch.randn(batch, channels, generator=g)
            yield f"combine {name} B={batch}", lambda a=act, w=weights: cam_combine.combine(a, w, (224, 224))
            if batch == 1:  # the standalone weighted sum folds its slices with its own kernel
                yield f"weighted_sum_relu {name} B={batch}", lambda a=act, w=weights: cam_combine.weighted_sum_relu(a, w)
            labels = torch.where(torch.rand(batch, channels, generator=g) < 0.3, IMPORTANT,
                                 torch.randint(0, 4, (batch, channels), generator=g))
            labels[:, :3] = NOISE
            for variant in ("paper", "reference"):
                yield (f"cfcam-{variant} {name} B={batch}",
                       lambda a=act, lab=labels, v=variant: cfcam_filter.cluster_filter_weights(a, lab, variant=v))
            for classes in (2, 1000):
                if quick and classes == 1000 and batch == 512:
                    continue
                weight = torch.randn(classes, channels, generator=g)
                bias = torch.randn(classes, generator=g)
                yield (f"softcam K={classes} {name} B={batch}",
                       lambda a=act, w=weight, b=bias: softcam_head.evidence_head(a, w, b, "lse"))
            if batch == 1:
                yield f"softcam-maps+backward {name} B={batch}", lambda a=act: _softcam_rest(a)
        if batch == 512:
            del act


def _softcam_rest(features: torch.Tensor) -> None:
    """The SoftCAM launches besides the forward: gather + ReLU and upsample (maps), and the backward's
    evidence-gradient kernel (K = 19, max pooling: its tie-counting loop)."""
    from fastcam.kernels import softcam_head

    weight = torch.randn(19, features.shape[1], requires_grad=True)
    with torch.enable_grad():
        logits, evidence = softcam_head.evidence_head(features, weight, None, "max")
        torch.autograd.grad((logits.sum(), evidence.sum()), (weight,))
    softcam_head.softcam_maps(evidence.detach(), torch.zeros(features.shape[0], dtype=torch.long), (224, 224),
                              check_targets=False)


def record(quick: bool, only: str = "") -> list[Launch]:
    from fastcam.kernels import _launch

    recorder = Recorder()
    with recorder, _launch.plan_as_gpu(), torch.no_grad():
        for name, thunk in _cases(quick):
            if only not in name:
                continue
            recorder.case = name
            thunk()
    if quick:
        recorder.launches = [launch for launch in recorder.launches if launch.heuristic]
    return recorder.launches


_PENDING: list[Launch] = []  # the launches to compile, inherited by forked workers


def _compile_pending(index: int) -> dict[str, Any]:
    return compile_launch(_PENDING[index])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="heuristic configurations only, fewer shapes")
    parser.add_argument("--json", action="store_true", help="print one JSON list (last line) instead of a table")
    parser.add_argument("--only", default="", help="cases whose name contains this text")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes (forked)")
    args = parser.parse_args(argv)
    launches = record(args.quick, args.only)
    keys = [specialization_key(launch) for launch in launches]
    unique = list(dict.fromkeys(keys))
    first = {key: launches[keys.index(key)] for key in unique}
    _PENDING[:] = [first[key] for key in unique]
    if args.jobs > 1 and len(unique) > 1:
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(unique))) as pool:
            reports = pool.map(_compile_pending, range(len(unique)))
    else:
        reports = [_compile_pending(index) for index in range(len(unique))]
    seen = dict(zip(unique, reports))
    rows = []
    for launch, key in zip(launches, keys):
        name = launch.kernel.fn.__name__
        rows.append({"case": launch.case, "kernel": name, "grid": list(launch.grid), "config": launch.config,
                     "heuristic": launch.heuristic, **seen[key]})
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'case':28s} {'kernel':30s} {'grid':>16s}  {'config':58s} regs spill shared cp.async")
        for r in rows:
            mark = "*" if r["heuristic"] else " "
            print(f"{r['case']:28s} {r['kernel']:30s} {str(tuple(r['grid'])):>16s} {mark}{r['config']:58s} "
                  f"{r['registers']:4d} {r['spill_stores'] + r['spill_loads']:5d} {r['shared']:6d} {r['cp_async']:4d}")
        print("* heuristic (default) configuration; spill = spill store + load bytes; shared in bytes")
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
