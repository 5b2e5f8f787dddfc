"""Every Triton kernel of fastcam.kernels compiles for an H100 (sm_90) without spilling, and its channel
loops are software-pipelined: bench/compile_sm90.py --quick, run in a process without the interpreter.

The interpreter accepts what a GPU rejects (tl.dot blocks < 16, too much shared memory, register
pressure): this compiles each launch exactly as a GPU launch would (Triton's own argument specialisation)
for GPUTarget("cuda", 90, 32) and reads Triton's bundled ptxas report. No GPU needed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "compile_sm90.py"

#: kernels whose channel (or member) loop is a tl.range with num_stages: the PTX must show cp.async
PIPELINED = {"_weighted_sum_kernel", "_cfcam_scores_kernel", "_cfcam_weights_kernel", "_evidence_head_fwd_kernel",
             "_evidence_partial_kernel"}
EVERY_KERNEL = PIPELINED | {"_upsample_normalize_kernel", "_fold_partials_kernel", "_cfcam_finish_kernel",
                            "_evidence_reduce_kernel", "_evidence_grad_kernel", "_gather_relu_kernel"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU runs the kernels for real")
def test_every_kernel_compiles_for_sm90_without_spills() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    if run.returncode != 0 and "ptxas" in run.stderr and "not found" in run.stderr.lower():
        pytest.skip("Triton's bundled ptxas is not available")
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    assert {r["kernel"] for r in rows} == EVERY_KERNEL
    for r in rows:
        where = f"{r['case']}: {r['kernel']} {r['config']}"
        assert r["arch"] == "sm_90a", where
        assert (r["spill_stores"], r["spill_loads"], r["stack"]) == (0, 0, 0), where
        assert 0 < r["registers"] <= 255 and 0 <= r["shared"] <= 227 * 1024, where
        if r["kernel"] in PIPELINED:
            assert r["cp_async"] > 0, where
    grids = {(r["case"], r["kernel"]): tuple(r["grid"]) for r in rows}
    # batch 1 at ResNet-50 layer4 splits the channels (64 slices of 32), batch 512 does not
    assert grids["combine r50-7x7 B=1", "_weighted_sum_kernel"] == (1, 1, 64)
    assert grids["combine r50-7x7 B=512", "_weighted_sum_kernel"] == (512, 1, 1)
    assert grids["cfcam-paper r50-7x7 B=1", "_cfcam_scores_kernel"] == (1, 64)
    assert grids["softcam K=2 r50-7x7 B=1", "_evidence_partial_kernel"] == (1, 64)
    assert grids["softcam K=1000 r50-7x7 B=1", "_evidence_partial_kernel"] == (8, 8)
