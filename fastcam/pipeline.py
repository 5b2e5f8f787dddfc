"""Explain whole datasets into a resumable run directory: `explain_dataset` and `open_run`.

The dataset is streamed: one batch is loaded, explained on the device, written to the Zarr store
(`fastcam.io.store`) and committed before the next, so memory stays flat however many images there
are, and a run killed at any moment resumes where its last commit left it when the same call (or the
same `fastcam explain` command) is made again.

Scale-out: under `torchrun --nproc_per_node=W`, rank r explains the dataset indices r, r+W, r+2W, ...
(strided, no padding duplicates, unlike DistributedSampler) into its own shard of the store; the reader
interleaves the shards back into dataset order. Each shard has its own commit record, so a crashed rank
resumes like a single run.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastcam.io.images import IMAGENET_MEAN, IMAGENET_STD, ImageFolder, Preprocess
from fastcam.io.store import IDS_JSON, RUN_JSON, STORE_FORMAT, Run, ShardWriter, open_run, read_json, write_json_atomic

METHOD_NAMES = ("gradcam", "gradcampp", "scorecam", "cfcam", "softcam")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}

__all__ = ["explain_dataset", "open_run", "load_model", "make_explainer", "Run"]


# ---------------------------------------------------------------------------------------------- methods
def make_explainer(model: nn.Module, method: str, target_layer: nn.Module | str | None,
                   method_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build the explainer `method` ("gradcam", "gradcampp", "scorecam", "cfcam", "softcam") on `model`.

    For "softcam", `model` must be a SoftCAM network (`fastcam.softcam.convert(...)`) and the target
    layer is not used.
    """
    import fastcam

    kwargs = dict(method_kwargs or {})
    classes = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "scorecam": "ScoreCAM", "cfcam": "CFCAM",
               "softcam": "SoftCAM"}
    if method not in classes:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
    cls = getattr(fastcam, classes[method], None)
    if cls is None:
        raise ValueError(f"method {method!r} ({classes[method]}) is not available in this fastcam install")
    if method == "softcam":
        return cls(model, **kwargs)
    if target_layer is None:
        raise ValueError(f"method {method!r} needs a target layer (e.g. 'layer4' for a ResNet)")
    return cls(model, target_layer, **kwargs)


def _explain_splitting_on_oom(explainer: Any, images: Tensor, targets: Any, amp: torch.dtype | None,
                              state: dict[str, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(maps, lowres, logits, targets) of a batch; on CUDA out-of-memory the batch is halved and retried
    (recursively), and later batches start at the size that worked (`state["micro"]`)."""
    micro = state.get("micro", images.shape[0])
    if micro < images.shape[0]:
        parts = [_explain_splitting_on_oom(explainer, images[i : i + micro], _slice_targets(targets, i, i + micro),
                                           amp, state) for i in range(0, images.shape[0], micro)]
        return tuple(torch.cat(p) for p in zip(*parts))  # type: ignore[return-value]
    try:
        autocast = torch.autocast(images.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            exp = explainer.explain(images, targets)
        return exp.maps, exp.lowres, exp.logits, exp.targets
    except torch.OutOfMemoryError:
        if images.shape[0] == 1:
            raise
        if images.is_cuda:
            torch.cuda.empty_cache()
        state["micro"] = max(1, images.shape[0] // 2)
        return _explain_splitting_on_oom(explainer, images, targets, amp, state)


def _slice_targets(targets: Any, start: int, stop: int) -> Any:
    return targets[start:stop] if isinstance(targets, Tensor) else targets


# ---------------------------------------------------------------------------------------------- data
class _SafeItems(Dataset):
    """Wraps any dataset so each item becomes {image, label, ok, error}; an exception while loading an
    item marks it not-ok (reported and skipped) instead of killing the run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            item = self.dataset[index]
            label = None
            if isinstance(item, Mapping):
                if not item.get("ok", True):
                    return {"image": None, "label": None, "ok": False, "error": str(item.get("error", "unreadable"))}
                image, label = item["image"], item.get("label")
            elif isinstance(item, (tuple, list)):
                image = item[0]
                label = item[1] if len(item) > 1 else None
            else:
                image = item
            if not isinstance(image, Tensor) or image.dim() != 3 or not image.is_floating_point():
                raise TypeError(f"dataset items must give a floating (C, H, W) image tensor, got "
                                f"{type(image).__name__}{tuple(image.shape) if isinstance(image, Tensor) else ''}")
            if isinstance(label, Tensor):
                label = int(label.item())
            return {"image": image, "label": label, "ok": True, "error": ""}
        except Exception as exc:
            return {"image": None, "label": None, "ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    ok = torch.tensor([it["ok"] for it in items], dtype=torch.bool)
    good = [it for it in items if it["ok"]]
    shapes = {tuple(it["image"].shape) for it in good}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch have different shapes {sorted(shapes)}; resize them (--size H W)")
    images = torch.stack([it["image"] for it in good]) if good else None
    return {"images": images, "ok": ok, "labels": [it["label"] for it in good],
            "errors": [it["error"] for it in items]}


def _dataset_and_ids(data: Any, preprocess: Preprocess | None) -> tuple[Dataset, list[Any], dict[str, Any], DataLoader | None]:
    """(dataset, sample ids, description, the user's DataLoader if one was given)."""
    loader = None
    if isinstance(data, DataLoader):
        loader, data = data, data.dataset
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolder(data, preprocess or Preprocess())
    if isinstance(data, ImageFolder):
        return data, data.ids, {"kind": "folder", "root": str(Path(data.root).resolve()),
                                "preprocess": data.preprocess.as_dict(), "size": list(data.size)}, loader
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise TypeError(f"data must be a folder path, a map-style torch Dataset or a DataLoader, got {type(data).__name__}")
    n = len(data)  # type: ignore[arg-type]
    return data, list(range(n)), {"kind": "dataset", "class": type(data).__qualname__}, loader


def _targets_resolver(targets: Any, ids: Sequence[Any]) -> tuple[Callable[[Tensor, list[Any]], Any], Any]:
    """A function (dataset indices of the ok rows, their labels) -> targets for `explain`, and a
    JSON description of the choice (part of the run's settings)."""
    if targets is None or targets == "predicted":
        return (lambda idx, labels: None), "predicted"
    if isinstance(targets, bool):
        raise TypeError("targets must be None, 'predicted', 'label', an int, a sequence or a mapping, got bool")
    if isinstance(targets, int):
        return (lambda idx, labels: targets), int(targets)
    if targets == "label":
        def from_labels(idx: Tensor, labels: list[Any]) -> Tensor:
            if any(lab is None for lab in labels):
                raise ValueError("targets='label' but the dataset's items carry no label")
            return torch.tensor([int(lab) for lab in labels], dtype=torch.long)
        return from_labels, "label"
    if isinstance(targets, Mapping):
        table = {str(k): int(v) for k, v in targets.items()}
        missing = [i for i in ids if str(i) not in table]
        if missing:
            raise ValueError(f"targets has no class for {len(missing)} samples, e.g. {missing[:3]}")
        per_index = torch.tensor([table[str(i)] for i in ids], dtype=torch.long)
    elif isinstance(targets, (Sequence, Tensor)) and not isinstance(targets, str):
        per_index = torch.as_tensor(list(targets) if not isinstance(targets, Tensor) else targets).long().flatten()
        if per_index.numel() != len(ids):
            raise ValueError(f"got {per_index.numel()} targets for a dataset of {len(ids)} samples")
    else:
        raise TypeError(f"targets must be None, 'predicted', 'label', an int, a sequence or a mapping, got {targets!r}")
    digest = hashlib.sha256(per_index.numpy().tobytes()).hexdigest()
    return (lambda idx, labels: per_index[idx]), {"per_sample_sha256": digest}


# ---------------------------------------------------------------------------------------------- settings
def _state_hash(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, values): changed weights = other run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr, sort_keys=True))


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as compared for a resume: the weights file's *path* is only a record (moving the file is
    fine); its content is compared through the model's state_sha256."""
    model = {k: v for k, v in settings.get("model", {}).items() if k != "weights"}
    return {**settings, "model": model}


def _check_settings(run_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse a run directory written with other settings, naming every difference."""
    old = read_json(run_dir / RUN_JSON).get("settings", {})
    if _comparable(old) == _comparable(settings):
        return
    keys = sorted(set(old) | set(settings))
    a, b = _comparable(old), _comparable(settings)
    diffs = [f"  {k}: run has {json.dumps(a.get(k))[:200]}, this call has {json.dumps(b.get(k))[:200]}"
             for k in keys if a.get(k) != b.get(k)]
    raise ValueError(f"run directory {str(run_dir)!r} was written with other settings; refusing to mix results. "
                     "Use another --out, or delete the directory to start over. Differences:\n" + "\n".join(diffs))


# ---------------------------------------------------------------------------------------------- distributed
def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (1 process without torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


@contextlib.contextmanager
def _process_group(world: int, device: torch.device) -> Iterator[Callable[[], None]]:
    """Yields a barrier; joins (and afterwards leaves) a process group when world > 1."""
    if world <= 1:
        yield lambda: None
        return
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    try:
        yield (lambda: dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier())
    finally:
        if created:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- main API
def explain_dataset(
    model: nn.Module,
    data: Any,
    method: str = "cfcam",
    target_layer: nn.Module | str | None = None,
    out: str | Path = "run/",
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
    targets: Any = None,
    resume: bool = True,
    *,
    method_kwargs: Mapping[str, Any] | None = None,
    dtype: str = "float16",
    preprocess: Preprocess | None = None,
    num_workers: int | None = None,
    overlays: bool = False,
    colormap: str = "jet",
    alpha: float = 0.5,
    report: bool = False,
    progress: bool = True,
    model_info: Mapping[str, Any] | None = None,
) -> Run:
    """Explain every sample of `data` with `method` into the run directory `out`; returns `open_run(out)`.

    Args:
        model: the classifier (a SoftCAM network for method="softcam"); it is moved to `device` and put in
            eval mode.
        data: a folder path (PNG/JPEG/TIFF/DICOM, see `fastcam.io.images`), a map-style Dataset whose
            items are an image tensor, an (image, label, ...) tuple or a dict with "image" (and "label"),
            or a DataLoader (its dataset, batch size and workers are used; its sampler is replaced by the
            deterministic, resumable order).
        method: "gradcam", "gradcampp", "scorecam", "cfcam" or "softcam"; method_kwargs go to its constructor.
        target_layer: module or dotted name (not used by softcam).
        out: the run directory (created, or resumed when it holds a run with the same settings).
        batch_size: images per batch = per commit (default: the DataLoader's, else 32).
        device: default cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu.
        amp: None, "bf16" or "fp16": autocast for the model's forward passes.
        targets: None/"predicted", "label" (the dataset's labels), an int, a sequence of N classes in
            dataset order, or a mapping sample id -> class.
        resume: continue a run directory with the same settings; False refuses an existing one.
        dtype: storage dtype of the maps, "float16" (default) or "float32".
        preprocess: channels/resize/normalisation for a folder path (default: the model's input channels,
            native size, no normalisation).
        overlays: write PNG overlays under out/overlays (and the model-input images under out/inputs).
        report: write out/report.html (implies overlays).
        progress: tqdm progress bar (rank 0 only).
        model_info: extra JSON description of the model for run.json (the CLI passes its spec).

    Settings that change results (method and its arguments, layer, model weights, data ids,
    preprocessing, batch size, world size, dtype, amp, targets) are recorded; a run directory written
    with other settings is refused with a ValueError listing the differences.
    """
    if method not in METHOD_NAMES:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}")
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    report = bool(report)
    overlays = overlays or report
    rank, world, local_rank = _distributed()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)

    if preprocess is None and isinstance(data, (str, os.PathLike)):
        from fastcam._validation import expected_in_channels

        preprocess = Preprocess(channels=expected_in_channels(model) or 3)  # grayscale/RGB adapted to the model
    dataset, ids, data_info, user_loader = _dataset_and_ids(data, preprocess)
    if batch_size is None:
        batch_size = (user_loader.batch_size if user_loader is not None and user_loader.batch_size else 32)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_workers is None:
        num_workers = user_loader.num_workers if user_loader is not None else 0
    if len(ids) == 0:
        raise ValueError("the dataset is empty")
    resolve_targets, targets_info = _targets_resolver(targets, ids)

    model = model.to(device).eval()
    explainer = make_explainer(model, method, target_layer, method_kwargs)
    layer_name = getattr(explainer, "layer_name", None)
    ids_json = [i if isinstance(i, int) else str(i) for i in ids]
    settings = _jsonable({
        "method": method, "method_kwargs": dict(method_kwargs or {}), "target_layer": layer_name,
        "model": {"class": type(model).__qualname__, "state_sha256": _state_hash(model), **dict(model_info or {})},
        "data": {**data_info, "n": len(ids),
                 "ids_sha256": hashlib.sha256(json.dumps(ids_json).encode()).hexdigest()},
        "targets": targets_info, "batch_size": batch_size, "world_size": world, "dtype": dtype, "amp": amp,
        "format": STORE_FORMAT,
    })
    run_dir = Path(out)

    try:
        with _process_group(world, device) as barrier:
            if rank == 0:
                _create_or_check_run(run_dir, settings, ids_json, resume, data_info)
            barrier()
            _check_settings(run_dir, settings)  # every rank checks: a refusal is the same on all of them
            writer = ShardWriter(run_dir, rank, world, len(ids), batch_size, dtype)
            _run_shard(writer, explainer, dataset, device, amp, resolve_targets, num_workers, run_dir, overlays,
                       colormap, alpha, progress and rank == 0, ids, method + (f"[{rank}]" if world > 1 else ""))
            barrier()
            if rank == 0:
                _finalize(run_dir, world, device)
            barrier()
    finally:  # the user's model gets its hooks back off, whatever happened
        close = getattr(explainer, "close", None)
        if callable(close):
            close()
    result = open_run(run_dir)
    if report and rank == 0:
        from fastcam.io.report import write_report

        write_report([result], run_dir / "report.html", title=f"fastcam {method} — {run_dir.name}")
    return result


def _create_or_check_run(run_dir: Path, settings: dict[str, Any], ids: list[Any], resume: bool,
                         data_info: dict[str, Any]) -> None:
    if (run_dir / RUN_JSON).exists():
        if not resume:
            raise ValueError(f"run directory {str(run_dir)!r} already exists and resume=False (--no-resume)")
        return
    if run_dir.exists() and any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
        raise ValueError(f"{str(run_dir)!r} exists and is not a fastcam run directory; choose an empty or new --out")
    import numpy
    import zarr

    import fastcam

    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / IDS_JSON, ids)
    meta = {
        "fastcam_run": STORE_FORMAT, "method": settings["method"], "settings": settings,
        "batch_size": settings["batch_size"], "world_size": settings["world_size"], "n_samples": len(ids),
        "input_size": data_info.get("size"),
        "versions": {"fastcam": fastcam.__version__, "torch": torch.__version__, "zarr": zarr.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "complete": False,
    }
    write_json_atomic(run_dir / RUN_JSON, meta)  # last: its presence means the directory is set up


def _run_shard(writer: ShardWriter, explainer: Any, dataset: Dataset, device: torch.device, amp: str | None,
               resolve_targets: Callable[[Tensor, list[Any]], Any], num_workers: int, run_dir: Path,
               overlays: bool, colormap: str, alpha: float, show_progress: bool, ids: Sequence[Any],
               desc: str) -> None:
    """Explain the shard's uncommitted batches, committing each."""
    from tqdm.auto import tqdm

    start = writer.committed_batches
    shard_indices = list(range(writer.rank, len(ids), writer.world))
    batches = [shard_indices[r.start : r.stop] for r in map(writer.batch_rows, range(start, writer.num_batches))]
    if not batches:
        return
    loader = DataLoader(_SafeItems(dataset), batch_sampler=batches, collate_fn=_collate, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    display = getattr(getattr(dataset, "preprocess", None), "denormalize", None)
    amp_dtype = AMP_DTYPES[amp]
    oom_state: dict[str, int] = {}
    done_rows = min(start * writer.batch_size, writer.rows)
    bar = tqdm(total=writer.rows, initial=done_rows, unit="img", desc=desc, disable=not show_progress,
               dynamic_ncols=True)
    tick = time.perf_counter()
    try:
        for batch_no, (indices, batch) in enumerate(zip(batches, loader), start=start):
            ok: Tensor = batch["ok"]
            index_t = torch.tensor(indices, dtype=torch.long)
            ok_index = index_t[ok]
            skipped = [{"index": int(i), "id": ids[i], "error": e} for i, e, good in
                       zip(indices, batch["errors"], ok.tolist()) if not good]
            for s in skipped:
                bar.write(f"fastcam: skipping {s['id']!r}: {s['error']}")
            lowres = logits = tgt = None
            if batch["images"] is not None:
                images = batch["images"].to(device, non_blocking=True)
                maps, lowres, logits, tgt = _explain_splitting_on_oom(
                    explainer, images, _to_device(resolve_targets(ok_index, batch["labels"]), device), amp_dtype,
                    oom_state)
                if overlays:
                    from fastcam.io.overlay import save_overlays, save_pngs, to_uint8

                    cpu_images = batch["images"]
                    shown = display(cpu_images) if display is not None else _minmax(cpu_images)
                    ok_ids = [ids[i] for i in ok_index.tolist()]
                    save_pngs(to_uint8(shown), run_dir / "inputs", ok_ids)
                    save_overlays(shown, maps.cpu(), run_dir / "overlays", ok_ids, colormap, alpha)
            writer.write_batch(batch_no, ok, lowres, logits, tgt)
            now = time.perf_counter()
            writer.commit(batch_no, skipped, now - tick, int(ok.sum()), str(device))
            tick = now
            bar.update(len(indices))
    finally:
        bar.close()


def _to_device(targets: Any, device: torch.device) -> Any:
    return targets.to(device) if isinstance(targets, Tensor) else targets


def _minmax(images: Tensor) -> Tensor:
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    span = (images.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    return (images - low) / span


def _finalize(run_dir: Path, world: int, device: torch.device) -> None:
    """Merge the shards' commit records into run.json: complete flag, skipped files, timings."""
    meta = read_json(run_dir / RUN_JSON)
    shards, skipped = [], []
    for rank in range(world):
        name = f"shard-{rank:05d}-of-{world:05d}.progress.json"
        p = read_json(run_dir / name) if (run_dir / name).exists() else {"committed_batches": 0, "skipped": [],
                                                                        "seconds": 0.0, "images": 0, "devices": []}
        skipped.extend(p["skipped"])
        shards.append({"rank": rank, "images": p["images"], "seconds": round(p["seconds"], 4),
                       "images_per_s": round(p["images"] / p["seconds"], 2) if p["seconds"] else None,
                       "sessions": p.get("sessions", 1), "devices": p["devices"]})
    seconds = max((s["seconds"] for s in shards), default=0.0)
    images = sum(s["images"] for s in shards)
    meta.update({
        "complete": True, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "n_explained": images, "n_skipped": len(skipped), "skipped": sorted(skipped, key=lambda s: s["index"]),
        "device": sorted({d for s in shards for d in s["devices"]}) or [str(device)],
        "timings": {"seconds": round(seconds, 4), "images_per_s": round(images / seconds, 2) if seconds else None,
                    "shards": shards},
    })
    write_json_atomic(run_dir / RUN_JSON, meta)


# ---------------------------------------------------------------------------------------------- CLI glue
def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None,
               in_channels: int | None = None, softcam: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model of a CLI spec and load its weights. Returns (model, defaults) where defaults may
    hold the spec's preprocessing ("size", "mean", "std").

    SPEC: a `fastcam.models` builder name (resnet18, tiny_resnet, ...); `module:factory` (a callable
    returning an nn.Module, or an nn.Module object); or a torchvision model name when torchvision is
    importable (ImageNet preprocessing: 224×224, ImageNet mean/std). With `softcam=True` the built
    model is converted with `fastcam.softcam.convert` before the weights (of the SoftCAM network) load.
    """
    from fastcam import models as fc_models

    kwargs = {k: v for k, v in {"num_classes": num_classes, "in_channels": in_channels}.items() if v is not None}
    defaults: dict[str, Any] = {}
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load model spec {spec!r}: {exc}") from exc
        model = obj if isinstance(obj, nn.Module) else obj(**kwargs)
    elif spec in fc_models.BUILDERS:
        model = fc_models.BUILDERS[spec](**kwargs)
    else:
        try:
            import torchvision  # noqa: F401
            from torchvision import models as tv_models
        except Exception:
            raise ValueError(f"unknown model {spec!r}: not a fastcam.models builder ({', '.join(fc_models.BUILDERS)}), "
                             "not module:factory, and torchvision is not importable here") from None
        try:
            model = tv_models.get_model(spec, weights=None, **({"num_classes": num_classes} if num_classes else {}))
        except ValueError as exc:
            raise ValueError(f"unknown model {spec!r}: {exc}") from exc
        defaults = {"size": (224, 224), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if not isinstance(model, nn.Module):
        raise TypeError(f"model spec {spec!r} gave a {type(model).__name__}, not an nn.Module")
    if softcam:
        from fastcam import softcam as sc

        k = num_classes or _output_classes(model)
        model = sc.convert(model, k)
    if weights is not None:
        model.load_state_dict(_load_state_dict(weights))
    return model, defaults


def _output_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("cannot infer the number of classes; pass --num-classes")
    return last[-1].out_features


def _load_state_dict(path: str | Path) -> dict[str, Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state


def _read_targets_file(path: Path) -> dict[str, int]:
    """CSV (`relative/path,class` per line, optional header) or JSON ({path: class}) -> mapping."""
    if path.suffix.lower() == ".json":
        return {str(k): int(v) for k, v in read_json(path).items()}
    import csv

    table: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip():
                continue
            try:
                table[row[0].strip()] = int(row[1])
            except ValueError:
                if table:  # only a first (header) line may fail to parse
                    raise ValueError(f"{str(path)!r}: class {row[1]!r} of {row[0]!r} is not an integer") from None
    return table


def explain_folder_cli(args: Any) -> int:
    """`fastcam explain`: build the model and preprocessing from flags, then `explain_dataset`."""
    from fastcam._validation import expected_in_channels

    model, defaults = load_model(args.model, args.weights, args.num_classes, args.in_channels,
                                 softcam=args.method == "softcam")
    size = args.size or defaults.get("size")
    if size is not None:
        size = tuple(size) * (2 if len(size) == 1 else 1)
        if len(size) != 2:
            raise ValueError(f"--size takes 1 or 2 values, got {len(args.size)}")
    preprocess = Preprocess(channels=expected_in_channels(model) or 3, size=size,
                            mean=tuple(args.mean) if args.mean else defaults.get("mean"),
                            std=tuple(args.std) if args.std else defaults.get("std"))
    targets: Any = args.targets
    if targets not in (None, "predicted"):
        if str(targets).lstrip("-").isdigit():
            targets = int(targets)
        elif Path(targets).is_file():
            targets = _read_targets_file(Path(targets))
        else:
            raise ValueError(f"--targets must be 'predicted', a class index or an existing file, got {targets!r}")
    run = explain_dataset(
        model, args.data, method=args.method, target_layer=args.layer, out=args.out, batch_size=args.batch_size,
        device=args.device, amp=args.amp, targets=targets, resume=not args.no_resume,
        method_kwargs=dict(args.method_arg), dtype=args.dtype, preprocess=preprocess, num_workers=args.workers,
        overlays=args.overlays, colormap=args.colormap, alpha=args.alpha, report=args.report,
        progress=not args.quiet,
        model_info={"spec": args.model, "weights": str(Path(args.weights).resolve()) if args.weights else None},
    )
    if int(os.environ.get("RANK", "0")) == 0:
        meta = run.meta
        rate = meta.get("timings", {}).get("images_per_s")
        print(f"fastcam explain: {len(run)} images explained, {len(run.skipped)} skipped"
              f"{f', {rate} images/s' if rate else ''} -> {args.out}")
    return 0
