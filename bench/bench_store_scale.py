"""A run of a million samples: write, open, read a sample, stream, verify and report, measured.

Writes a synthetic run through the real writer (`ShardWriter.write_batch` + `commit`, fsync on: the commit
protocol as in production), by default 1,000,000 samples of 7x7 float16 maps and 100 classes in batches
of 256, once as 1 shard and once as 4 (ranks written one after another in this process), one sample in
1,000 marked skipped. Wall and CPU seconds are both recorded (with the load average): on a shared machine
the wall time overstates. Then, each in a fresh interpreter (so peak RSS is that step's): `open_run` wall time
and peak RSS growth; one random sample by row and by id (`Run.sample`, mean over 200 draws; the first
lookup by id, which builds the id index, apart); a full `iter_batches(256)` pass; `verify_run` time and
peak RSS; `write_report` time (200 rows). Files and bytes on disk are counted after the write.

    python bench/bench_store_scale.py --json bench/results/store_scale_1m_cpu.json
    python bench/bench_store_scale.py --n 20000 --shards 1   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastcam.benchmark.provenance import environment
from fastcam.io.run import RunDirectory, ShardWriter

TARGETS = {"open_s": 1.0, "open_rss_mib": 300, "sample_ms": 10.0, "stream_samples_per_s": 500_000,
           "verify_rss_mib": 300, "verify_samples_per_s": 200_000, "report_s": 10.0}


def write_run(root: Path, n: int, world: int, batch: int, classes: int, side: int, skip_every: int) -> dict[str, Any]:
    """The synthetic run, through the real writer; its write time and throughput."""
    shutil.rmtree(root, ignore_errors=True)
    ids = [f"n{i % 1000:05d}/img_{i:08d}.JPEG" for i in range(n)]
    g = torch.Generator().manual_seed(0)
    pool = [(torch.rand(batch, side, side, generator=g) * 3, torch.randn(batch, classes, generator=g),
             torch.randint(0, classes, (batch,), generator=g)) for _ in range(8)]  # cycled: RNG is not timed
    pool = [tuple(t.numpy() for t in p) for p in pool]
    started, cpu = time.perf_counter(), time.process_time()
    directory = RunDirectory(root)
    directory.create(ids, {"method": "gradcam", "batch_size": batch, "world_size": world}, input_size=(224, 224),
                     versions={})
    for rank in range(world):
        writer = ShardWriter(root, rank, world, n_items=n, batch_size=batch, dtype="float16")
        for b in range(writer.num_batches):
            rows = writer.batch_rows(b)
            index = np.arange(rows.start, rows.stop) * world + rank
            ok = torch.from_numpy(index % skip_every != skip_every - 1)
            keep = ok.numpy()
            lowres, logits, targets = (t[: len(rows)] if keep.all() else t[: len(rows)][keep] for t in pool[b % len(pool)])
            writer.write_batch(b, ok, *map(torch.from_numpy, (lowres, logits, targets)))
            skipped = [{"index": int(i), "id": ids[i], "error": "synthetic skip"} for i in index[~ok.numpy()]]
            writer.commit(b, skipped, 0.0, int(ok.sum()), "cpu")
    directory.finalize("cpu")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    files, disk, apparent = 0, 0, 0
    for folder, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            files, disk, apparent = files + 1, disk + st.st_blocks * 512, apparent + st.st_size
    return {"write_s": round(seconds, 2), "write_cpu_s": round(cpu, 2), "write_samples_per_s": round(n / seconds),
            "files": files,
            "bytes_on_disk": disk, "bytes_apparent": apparent}


#: each step in a fresh interpreter: prints one JSON line (wall seconds, peak RSS growth in MiB, extras)
STEP = textwrap.dedent("""
    import json, random, sys, time
    import torch
    from fastcam.io.run import open_run, verify_run
    from fastcam.io.report import write_report
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))
    def reset_peak():  # VmHWM := VmRSS (Linux >= 4.0), so that the peak is this step's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    peak = lambda: status("VmHWM")
    root, step = sys.argv[1], sys.argv[2]
    out = {}
    reset_peak()
    base = status("VmRSS")
    cpu = time.process_time()  # CPU seconds: the machine may be shared, wall time then overstates
    t = time.perf_counter()
    if step == "verify":
        result = verify_run(root, inputs=False)
        assert result.ok and result.complete, result.damages[:3]
        out["seconds"] = time.perf_counter() - t
        out["samples"] = result.explained + result.skipped
    else:
        run = open_run(root)
        out["open_s"] = time.perf_counter() - t
        out["open_rss_mib"] = peak() - base
        out["samples"] = len(run)
        if step == "read":
            rng = random.Random(0)
            rows = [rng.randrange(len(run)) for _ in range(200)]
            t = time.perf_counter()
            for r in rows:
                run.sample(r)
            out["sample_by_row_ms"] = (time.perf_counter() - t) / len(rows) * 1e3
            t = time.perf_counter()
            run.sample(run.ids[rows[0]])
            out["first_sample_by_id_ms"] = (time.perf_counter() - t) * 1e3
            t = time.perf_counter()
            for r in rows[1:]:
                run.sample(run.ids[r])
            out["sample_by_id_ms"] = (time.perf_counter() - t) / (len(rows) - 1) * 1e3
            t, c = time.perf_counter(), time.process_time()
            seen = sum(len(b.rows) for b in run.iter_batches(int(sys.argv[3])))
            out["stream_s"] = time.perf_counter() - t
            out["stream_cpu_s"] = time.process_time() - c
            out["stream_samples_per_s"] = seen / out["stream_s"]
            out["stream_samples_per_cpu_s"] = seen / out["stream_cpu_s"]
        elif step == "report":
            t = time.perf_counter()
            write_report([run], sys.argv[3], max_images=200)
            out["report_s"] = time.perf_counter() - t
    out["peak_rss_growth_mib"] = peak() - base
    out["cpu_s"] = time.process_time() - cpu
    print(json.dumps(out))
""")


def step(root: Path, name: str, *extra: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", STEP, str(root), name, *extra], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"step {name} failed:\n{proc.stderr[-3000:]}")
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in json.loads(proc.stdout.splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--side", type=int, default=7)
    parser.add_argument("--skip-every", type=int, default=1000, help="one sample in this many is marked skipped")
    parser.add_argument("--dir", default="/tmp/fastcam_store_scale", help="where the runs are written (removed after)")
    parser.add_argument("--no-fsync", action="store_true", help="write without fsync (a quick look; the default "
                        "measures the commit protocol as in production)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: threads only add contention
    if args.no_fsync:
        from fastcam.io.run import durable

        durable.DURABLE = False
    record: dict[str, Any] = {"environment": environment(torch.device("cpu")), "config": vars(args), "targets": TARGETS,
                              "runs": []}
    base = Path(args.dir)
    for world in args.shards:
        root = base / f"run-{world}"
        row: dict[str, Any] = {"shards": world, "load_average_before": os.getloadavg(), **write_run(root, args.n, world, args.batch_size, args.classes,
                                                              args.side, args.skip_every)}
        print(f"{world} shard(s): wrote {args.n} samples in {row['write_s']} s ({row['write_samples_per_s']}/s), "
              f"{row['files']} files, {row['bytes_on_disk'] / 2**20:.0f} MiB", flush=True)
        row["open"] = step(root, "open")
        row["read"] = step(root, "read", str(args.batch_size))
        verify = step(root, "verify")
        verify["samples_per_s"] = round(verify["samples"] / verify["seconds"])
        verify["samples_per_cpu_s"] = round(verify["samples"] / verify["cpu_s"])
        row["verify"] = verify
        row["report"] = step(root, "report", str(base / f"report-{world}.html"))
        row["load_average_after"] = os.getloadavg()
        print(json.dumps(row, indent=1), flush=True)
        record["runs"].append(row)
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
        print(f"-> {args.json}")


if __name__ == "__main__":
    main()
