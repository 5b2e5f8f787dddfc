"""GPU check of fastcam.ray: the Ray engine on a GPU gives the local engine's results, for a folder and for a
`ray.data.Dataset`, and `BatchExplainer` runs on the actor's GPU (run on a GPU machine with `fastcam[ray]`; the
figures of the H200 run are in bench/results/ray_cuda_equality_h200.json).

    python bench/ray_gpu_check.py correctness --out DIR   # (a) -> DIR/correctness.json
    python bench/ray_gpu_check.py summary --out DIR       # (a) + (b) -> DIR/summary.json

(a) correctness: random 64x64 PNGs plus a few broken files, a seeded fastcam:resnet18 saved with safetensors;
    the local engine (explain_folder, device="cuda") and fastcam.ray.explain_dataset (default gpus_per_actor) on a
    local Ray (ray.init(num_cpus=8, num_gpus=1, include_dashboard=False)) write two run directories, compared
    (lowres, logits, targets, predicted, skipped: bit-identical or not, max abs diff). Hard checks: same ids and
    skipped lists, run.json engine.gpus_per_actor == 1, the devices recorded are cuda. The same folder as a
    ray.data.Dataset of rows (id, path, bytes; 3 blocks) to explain_dataset: compared with the local run the same
    way (hard: ids, skipped ids, data kind, gpus_per_actor, devices; values soft). Then BatchExplainer in a
    user pipeline (read_binary_files -> rename path to id -> map_batches(..., concurrency=1, num_gpus=1,
    batch_size=32)): its statuses and its results against the local run's.
(b) throughput is bench/bench_ray.py --device cuda (DIR/bench_ray_cuda.json); `summary` folds its JSON in.

GPU_CHECK_DRY=1: the same code paths on the CPU with small counts (num_gpus=0, expects gpus_per_actor 0, cpu).
The exit status is 0 when every hard check passes; differences in values are reported, never fatal (GPU kernels
need not be deterministic, and Ray's batches in the user pipeline are not the local engine's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

DRY = os.environ.get("GPU_CHECK_DRY", "") not in ("", "0")
SPEC, LAYER, SIZE, BATCH = "fastcam:resnet18", "layer4", 64, 32
GOOD = 20 if DRY else 96
BROKEN = {  # name -> content: files with image suffixes that cannot be read
    "broken.png": b"not a png at all",
    "empty.jpg": b"",
    "garbage.tif": bytes(range(256)) * 4,
}
ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"[ray_gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_inputs(root: Path) -> tuple[Path, Path]:
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from fastcam import models

    data = root / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(GOOD):
        Image.fromarray((rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8)).save(data / f"im{i:03d}.png")
    good = (data / "im000.png").read_bytes()
    (data / "truncated.png").write_bytes(good[: len(good) // 3])
    for name, content in BROKEN.items():
        (data / name).write_bytes(content)
    torch.manual_seed(0)
    weights = root / "w.safetensors"
    save_file(models.resnet18().state_dict(), str(weights))
    return data, weights


def values(array: Any) -> Any:
    import torch

    return torch.as_tensor(array[:]) if len(array) else torch.zeros(0)


def compare(a: Any, b: Any) -> dict[str, Any]:
    """Bit-identity and max abs difference of two tensors (NaN-aware)."""
    import torch

    if tuple(a.shape) != tuple(b.shape):
        return {"same_shape": False, "shape_a": list(a.shape), "shape_b": list(b.shape)}
    if a.numel() == 0:
        return {"same_shape": True, "bit_identical": True, "max_abs_diff": 0.0, "n_differing": 0}
    af, bf = a.double(), b.double()
    diff = (af - bf).abs()
    both_nan = torch.isnan(af) & torch.isnan(bf)
    diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    return {"same_shape": True, "bit_identical": bool(torch.equal(a, b) or bool((diff == 0).all())),
            "max_abs_diff": float(diff.max()), "n_differing": int((diff != 0).sum()),
            "max_abs_value": float(af.abs().nan_to_num().max())}


def correctness(out: Path) -> int:
    import numpy as np
    import torch

    checks: dict[str, bool] = {}
    report: dict[str, Any] = {"dry": DRY, "spec": SPEC, "size": SIZE, "batch_size": BATCH, "good_images": GOOD,
                              "broken_files": sorted([*BROKEN, "truncated.png"]), "checks": checks, "timings_s": {}}
    t = report["timings_s"]

    def check(name: str, ok: bool, detail: Any = None) -> None:
        checks[name] = bool(ok)
        log(f"check {name}: {'ok' if ok else 'FAILED'}" + (f" ({detail})" if detail is not None else ""))

    device = "cpu" if DRY else "cuda"
    if not DRY and not torch.cuda.is_available():
        log("torch sees no CUDA GPU: nothing to check (set GPU_CHECK_DRY=1 for the CPU dry run)")
        report["error"] = "no CUDA GPU"
        (out / "correctness.json").write_text(json.dumps(report, indent=2) + "\n")
        return 2
    from fastcam.benchmark.provenance import environment

    report["environment"] = environment(torch.device(device))
    report["environment"]["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    import ray

    import fastcam
    import fastcam.kernels
    from fastcam.pipeline import explain_folder
    from fastcam.ray import BatchExplainer, explain_dataset

    report["imports"] = {"fastcam": fastcam.__file__, "fastcam.kernels": fastcam.kernels.__file__,
                         "ray": ray.__file__, "ray_version": ray.__version__}
    log(f"imports: {report['imports']}")
    src = os.environ.get("FASTCAM_SRC")
    if src:
        check("driver_imports_fastcam_from_links", fastcam.__file__.startswith(src)
              and fastcam.kernels.__file__.startswith(src), report["imports"])
    work = Path(tempfile.mkdtemp(prefix="ray_gpu_check_"))
    started_ray = False
    try:
        t0 = time.perf_counter()
        data, weights = make_inputs(work)
        t["inputs"] = round(time.perf_counter() - t0, 3)
        common = dict(weights=weights, layer=LAYER, method="gradcam", size=SIZE, batch_size=BATCH, progress=False,
                      max_skip_fraction=1.0)  # 4 unreadable files of GOOD + 4: over the default share when dry

        t0 = time.perf_counter()
        local = explain_folder(SPEC, data, work / "run-local", device=device, **common)
        t["local_engine"] = round(time.perf_counter() - t0, 3)
        log(f"local engine: {len(local)} explained, {len(local.skipped)} skipped, device {local.meta.get('device')}, "
            f"{t['local_engine']} s")

        t0 = time.perf_counter()
        ray.init(num_cpus=2 if DRY else 8, num_gpus=0 if DRY else 1, include_dashboard=False)
        started_ray = True
        t["ray_init"] = round(time.perf_counter() - t0, 3)
        resources = {k: v for k, v in ray.cluster_resources().items() if not k.startswith("node:")}
        report["ray_cluster_resources"] = resources
        log(f"ray.init: {resources} ({t['ray_init']} s)")

        t0 = time.perf_counter()
        remote = explain_dataset(SPEC, data, work / "run-ray", **common)  # default actors and gpus_per_actor
        t["ray_engine"] = round(time.perf_counter() - t0, 3)
        engine = remote.meta.get("engine", {})
        report["ray_engine"] = {k: engine.get(k) for k in ("ray", "where", "actors", "gpus_per_actor",
                                                           "cpus_per_actor", "threads_per_actor", "seconds",
                                                           "time_split")}
        report["run_devices"] = {"local": local.meta.get("device"), "ray": remote.meta.get("device"),
                                 "ray_shards": [s.get("devices") for s in
                                                remote.meta.get("timings", {}).get("shards", [])]}
        log(f"ray engine: {len(remote)} explained, {len(remote.skipped)} skipped, engine {report['ray_engine']}, "
            f"devices {report['run_devices']}")

        # --- the two runs: the same job, the same batches
        cmp = {name: compare(values(getattr(local, name)), values(getattr(remote, name)))
               for name in ("lowres", "logits", "targets", "predicted", "scale")}
        report["local_vs_ray"] = cmp
        report["local_vs_ray_all_bit_identical"] = all(c.get("bit_identical", False) for c in cmp.values())
        log(f"local vs ray: {json.dumps(cmp)}")
        check("ids_equal", local.ids == remote.ids, f"{len(local.ids)} ids")
        skipped_local = [(s["index"], s["id"], s["error"]) for s in local.skipped]
        skipped_ray = [(s["index"], s["id"], s["error"]) for s in remote.skipped]
        check("skipped_equal", skipped_local == skipped_ray, f"{len(skipped_local)} skipped")
        check("skipped_are_the_broken_files", sorted(s[1] for s in skipped_local) == report["broken_files"],
              sorted(s[1] for s in skipped_local))
        check("explained_count", len(local) == GOOD and len(remote) == GOOD, f"{len(local)} / {len(remote)}")
        check("shapes_equal", all(c.get("same_shape") for c in cmp.values()))
        check("ray_complete", bool(remote.meta.get("complete")))
        expected_gpus = 0.0 if DRY else 1.0
        check("gpus_per_actor_default", engine.get("gpus_per_actor") == expected_gpus,
              f"{engine.get('gpus_per_actor')} (expected {expected_gpus:g})")
        devices = list(remote.meta.get("device") or [])
        check("ray_devices_" + device, bool(devices) and all(str(d).startswith(device) for d in devices), devices)
        local_devices = list(local.meta.get("device") or [])
        check("local_devices_" + device, bool(local_devices) and all(str(d).startswith(device) for d in local_devices),
              local_devices)
        agree = float((values(local.predicted) == values(remote.predicted)).float().mean()) if len(local) else 0.0
        report["predicted_agreement_local_vs_ray"] = agree

        # --- the same folder as a ray.data.Dataset of rows (id, path, bytes): the RowsInput path (a hash shuffle)
        t0 = time.perf_counter()
        names = sorted(p.name for p in data.iterdir())
        rows_ds = ray.data.from_items([{"id": name, "path": str(data / name), "bytes": (data / name).read_bytes()}
                                       for name in names], override_num_blocks=3)
        from_rows = explain_dataset(SPEC, rows_ds, work / "run-ray-rows", **common)  # default gpus_per_actor
        t["ray_engine_rows_dataset"] = round(time.perf_counter() - t0, 3)
        engine_rows = from_rows.meta.get("engine", {})
        cmp_rows = {name: compare(values(getattr(local, name)), values(getattr(from_rows, name)))
                    for name in ("lowres", "logits", "targets", "predicted", "scale")}
        skipped_rows = [(s["index"], s["id"]) for s in from_rows.skipped]
        rows_devices = list(from_rows.meta.get("device") or [])
        report["ray_rows_dataset"] = {
            "engine": {k: engine_rows.get(k) for k in ("ray", "where", "actors", "gpus_per_actor", "cpus_per_actor",
                                                       "threads_per_actor", "seconds", "time_split")},
            "data_kind": (from_rows.meta.get("settings", {}).get("data") or {}).get("kind"),
            "fingerprint": from_rows.meta.get("settings", {}).get("fingerprint"),
            "devices": rows_devices,
            "explained": len(from_rows), "skipped": [list(s) for s in skipped_rows],
            "skipped_errors": {str(s["id"]): str(s["error"])[:200] for s in from_rows.skipped},
            "seconds": t["ray_engine_rows_dataset"]}
        report["local_vs_ray_rows"] = cmp_rows
        report["local_vs_ray_rows_all_bit_identical"] = all(c.get("bit_identical", False) for c in cmp_rows.values())
        report["predicted_agreement_local_vs_ray_rows"] = (
            float((values(local.predicted) == values(from_rows.predicted)).float().mean())
            if len(local) and len(local) == len(from_rows) else None)
        log(f"ray engine on a Dataset of rows: {json.dumps(report['ray_rows_dataset'], default=str)}")
        log(f"local vs ray (Dataset of rows): {json.dumps(cmp_rows)}")
        check("rows_ids_equal", from_rows.ids == local.ids, f"{len(from_rows.ids)} ids")
        check("rows_skipped_ids_equal", skipped_rows == [(s["index"], s["id"]) for s in local.skipped],
              f"{len(skipped_rows)} skipped")
        check("rows_shapes_equal", all(c.get("same_shape") for c in cmp_rows.values()))
        check("rows_complete", bool(from_rows.meta.get("complete")))
        check("rows_data_kind", report["ray_rows_dataset"]["data_kind"] == "ray-dataset",
              report["ray_rows_dataset"]["data_kind"])
        check("rows_gpus_per_actor_default", engine_rows.get("gpus_per_actor") == expected_gpus,
              f"{engine_rows.get('gpus_per_actor')} (expected {expected_gpus:g})")
        check("rows_devices_" + device, bool(rows_devices) and all(str(d).startswith(device) for d in rows_devices),
              rows_devices)

        # --- BatchExplainer in a user's pipeline (its device reported by a column of a subclass)
        class DeviceReportingExplainer(BatchExplainer):
            def __call__(self, batch: Any) -> Any:
                result = super().__call__(batch)
                result["device"] = np.asarray([str(self.device)] * len(result["id"]), dtype=object)
                result["cuda_visible_devices"] = np.asarray(
                    [os.environ.get("CUDA_VISIBLE_DEVICES", "")] * len(result["id"]), dtype=object)
                try:
                    from fastcam import kernels

                    where = str(kernels.__file__)
                except Exception as exc:  # noqa: BLE001 - reported
                    where = f"{type(exc).__name__}: {exc}"
                result["fastcam_kernels"] = np.asarray([where] * len(result["id"]), dtype=object)
                return result

        t0 = time.perf_counter()
        ds = ray.data.read_binary_files(str(data), include_paths=True)
        ds = ds.rename_columns({"path": "id"})
        ds = ds.map_batches(DeviceReportingExplainer,
                            fn_constructor_kwargs={"model": SPEC, "weights": str(weights), "layer": LAYER,
                                                   "method": "gradcam", "size": SIZE},
                            concurrency=1, num_gpus=0 if DRY else 1, batch_size=BATCH)
        rows = ds.take_all()
        t["batch_explainer_pipeline"] = round(time.perf_counter() - t0, 3)
        by_name = {Path(str(r["id"])).name: r for r in rows}
        statuses = {name: r["status"] for name, r in by_name.items()}
        explained = sorted(n for n, s in statuses.items() if s == "explained")
        skipped = sorted(n for n, s in statuses.items() if s == "skipped")
        pipeline: dict[str, Any] = {"rows": len(rows), "explained": len(explained), "skipped": skipped,
                                    "reasons": {n: str(by_name[n]["reason"])[:200] for n in skipped},
                                    "devices": sorted({str(r["device"]) for r in rows}),
                                    "cuda_visible_devices": sorted({str(r["cuda_visible_devices"]) for r in rows}),
                                    "actor_fastcam_kernels": sorted({str(r["fastcam_kernels"]) for r in rows}),
                                    "seconds": t["batch_explainer_pipeline"]}
        check("pipeline_rows", len(rows) == GOOD + len(report["broken_files"]), len(rows))
        check("pipeline_statuses", len(explained) == GOOD and skipped == report["broken_files"],
              f"{len(explained)} explained, skipped {skipped}")
        check("pipeline_reasons", all(pipeline["reasons"][n] for n in skipped)
              and all(not str(by_name[n]["reason"]) for n in explained))
        src = os.environ.get("FASTCAM_SRC")
        check("actor_imports_fastcam_kernels", all(k.endswith("kernels/__init__.py") and (not src or k.startswith(src))
                                                   for k in pipeline["actor_fastcam_kernels"]),
              pipeline["actor_fastcam_kernels"])
        check("pipeline_device_" + device, bool(pipeline["devices"])
              and all(d.startswith(device) for d in pipeline["devices"]), pipeline["devices"])
        # its results against the local run's (Ray's batches differ from the run's: close, not identical)
        index = {Path(str(i)).name: k for k, i in enumerate(local.ids)}
        common_names = [n for n in explained if n in index]
        if common_names:
            rows_k = [index[n] for n in common_names]
            local_lowres = values(local.lowres)[rows_k].double()
            mine = np.stack([np.asarray(by_name[n]["lowres"], dtype=np.float64) * float(by_name[n]["scale"])
                             for n in common_names])
            mine_logits = np.stack([np.asarray(by_name[n]["logits"], dtype=np.float64) for n in common_names])
            lowres_diff = (local_lowres - torch.from_numpy(mine)).abs()
            logits_diff = (values(local.logits)[rows_k].double() - torch.from_numpy(mine_logits)).abs()
            pred_local = values(local.predicted)[rows_k].numpy()
            pred_mine = np.asarray([int(by_name[n]["predicted"]) for n in common_names])
            pipeline.update({
                "vs_local_lowres_max_abs_diff": float(lowres_diff.max()),
                "vs_local_lowres_max_abs_value": float(local_lowres.abs().max()),
                "vs_local_logits_max_abs_diff": float(logits_diff.max()),
                "vs_local_predicted_agreement": float((pred_local == pred_mine).mean()),
            })
        report["batch_explainer_pipeline"] = pipeline
        log(f"BatchExplainer pipeline: {json.dumps(pipeline)}")
    except BaseException as exc:  # noqa: BLE001 - reported in the JSON, then the exit status
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
        log(f"ERROR {report['error']}\n{report['traceback']}")
        checks["no_exception"] = False
    finally:
        if started_ray or ray.is_initialized():
            ray.shutdown()
            log("ray.shutdown() done")
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report["ok"] = bool(checks) and all(checks.values())
    (out / "correctness.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    log(f"correctness: {'PASS' if report['ok'] else 'FAIL'} -> {out / 'correctness.json'}")
    return 0 if report["ok"] else 1


def summary(out: Path) -> int:
    def load(name: str) -> Any:
        try:
            return json.loads((out / name).read_text())
        except (OSError, ValueError) as exc:
            return {"missing": f"{name}: {exc}"}

    correct = load("correctness.json")
    bench_name = "bench_ray_dry.json" if DRY else "bench_ray_cuda.json"
    bench = load(bench_name)
    env = bench.get("environment") or correct.get("environment") or {}
    result = {
        "dry": DRY,
        "correctness_ok": correct.get("ok"),
        "checks": correct.get("checks"),
        "error": correct.get("error"),
        "local_vs_ray_all_bit_identical": correct.get("local_vs_ray_all_bit_identical"),
        "local_vs_ray_max_abs_diff": {k: v.get("max_abs_diff") for k, v in (correct.get("local_vs_ray") or {}).items()},
        "ray_engine": correct.get("ray_engine"),
        "local_vs_ray_rows_all_bit_identical": correct.get("local_vs_ray_rows_all_bit_identical"),
        "local_vs_ray_rows_max_abs_diff": {k: v.get("max_abs_diff")
                                           for k, v in (correct.get("local_vs_ray_rows") or {}).items()},
        "ray_rows_dataset": correct.get("ray_rows_dataset"),
        "run_devices": correct.get("run_devices"),
        "batch_explainer_pipeline": correct.get("batch_explainer_pipeline"),
        "correctness_timings_s": correct.get("timings_s"),
        "throughput": {r["contender"]: {"images_per_s": r["images_per_s"], "vs_local": r["vs_local"],
                                        "seconds": r["seconds"]} for r in bench.get("results", [])} or bench,
        "throughput_config": bench.get("config"),
        "ray_time_split": {r["contender"]: r["time_split"] for r in bench.get("results", []) if r.get("time_split")},
        "environment": {k: env.get(k) for k in ("date", "device", "device_name", "driver", "cpu_count", "python",
                                                "commit", "versions")},
        "ray_version": bench.get("environment", {}).get("ray") or (correct.get("imports") or {}).get("ray_version"),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))
    return 0 if correct.get("ok") and "results" in bench else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["correctness", "summary"])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/ray_gpu_check_out")))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report usage
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray binds the loopback address
    if args.step == "summary":
        return summary(args.out)
    try:
        return correctness(args.out)
    except BaseException as exc:  # noqa: BLE001 - before the checks started (an import): still a JSON to read
        report = {"dry": DRY, "ok": False, "checks": {"started": False}, "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
        (args.out / "correctness.json").write_text(json.dumps(report, indent=2) + "\n")
        log(f"ERROR before the checks: {report['error']}\n{report['traceback']}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
