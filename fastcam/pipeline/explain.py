"""Explain whole datasets into a resumable run directory: `explain_dataset` and its batch loop.

The dataset is streamed: one batch is loaded, explained on the device, written to the Zarr store
(`fastcam.io.run`) and committed before the next, so memory stays flat however many images there
are, and a run killed at any moment resumes where its last commit left it when the same call (or the
same `fastcam explain` command) is made again. Under torchrun each rank explains its own shard
(`fastcam.pipeline.distributed`).

Images whose explanation is non-finite are skipped with the reason, like unreadable files: never
stored as NaN.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastcam._validation import NonFiniteError, expected_in_channels
from fastcam.io.images import FINGERPRINT_MODES, ImageFolder, Preprocess, file_fingerprints
from fastcam.io.run import STORE_FORMAT, Run, RunDirectory, ShardWriter, open_run, shard_indices
from fastcam.methods.registry import get_method
from fastcam.pipeline.data import (
    SafeItems,
    TargetsResolver,
    check_targets_range,
    collate,
    dataset_and_ids,
    load_model,
    targets_resolver,
)
from fastcam.pipeline.distributed import process_group, rank_device, torchrun_ranks
from fastcam.pipeline.settings import check_settings, jsonable, state_hash

AMP_DTYPES: dict[str | None, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}

#: (maps, lowres, logits, targets) of the explained rows of a batch
Explained = tuple[Tensor, Tensor, Tensor, Tensor]


# ---------------------------------------------------------------------------------------------- explainers
def make_explainer(model: nn.Module, method: str, target_layer: nn.Module | str | None,
                   method_kwargs: Mapping[str, Any] | None = None) -> Any:
    """Build the explainer registered as `method` (see `fastcam.methods.registry`) on `model`.

    For a method that is not post-hoc ("softcam"), `model` must be its own network
    (`fastcam.softcam.convert(...)`) and the target layer is not used.
    """
    info = get_method(method)
    try:
        cls = info.load()
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"method {method!r} ({info.class_path}) is not available in this fastcam install: "
                         f"{exc}") from exc
    kwargs = dict(method_kwargs or {})
    if not info.post_hoc:
        return cls(model, **kwargs)
    if target_layer is None:
        raise ValueError(f"method {method!r} needs a target layer (e.g. 'layer4' for a ResNet)")
    return cls(model, target_layer, **kwargs)


def explain_splitting_on_oom(explainer: Any, images: Tensor, targets: Any, amp: torch.dtype | None,
                             state: dict[str, int]) -> Explained:
    """(maps, lowres, logits, targets) of a batch; on CUDA out-of-memory the batch is halved and retried
    (recursively), and later batches start at the size that worked (`state["micro"]`).

    A `NonFiniteError` of a part is raised again with its indices counted in the whole batch.
    """
    micro = state.get("micro", images.shape[0])
    if micro < images.shape[0]:
        parts = []
        for start in range(0, images.shape[0], micro):
            rows = torch.arange(start, min(start + micro, images.shape[0]))
            try:
                parts.append(explain_splitting_on_oom(explainer, images[rows], _select_targets(targets, rows),
                                                      amp, state))
            except NonFiniteError as exc:
                raise NonFiniteError(exc.reason, [start + i for i in exc.indices]) from exc
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
        return explain_splitting_on_oom(explainer, images, targets, amp, state)


def explain_finite(explainer: Any, images: Tensor, targets: Any, amp: torch.dtype | None,
                   state: dict[str, int]) -> tuple[Tensor, Explained | None, dict[int, str]]:
    """Explain a batch, leaving out the images whose explanation is non-finite.

    Returns (rows kept, their (maps, lowres, logits, targets) or None when none is kept, {row: reason}
    of the rows left out). The explainer names bad images with a `NonFiniteError` (the rest are explained
    again without them); any NaN/Inf that still reaches the maps or logits leaves its image out too.
    """
    keep = torch.arange(images.shape[0])
    dropped: dict[int, str] = {}
    while keep.numel():
        try:
            explained = explain_splitting_on_oom(explainer, images[keep.to(images.device)],
                                                 _select_targets(targets, keep), amp, state)
        except NonFiniteError as exc:
            if not exc.indices:  # names no image: nothing to leave out, so it cannot be worked around
                raise
            bad = torch.zeros(keep.numel(), dtype=torch.bool)
            bad[exc.indices] = True
            dropped.update({int(row): exc.reason for row in keep[bad]})
            keep = keep[~bad]
            continue
        _, lowres, logits, _ = explained
        finite = (torch.isfinite(lowres).flatten(1).all(dim=1) & torch.isfinite(logits).all(dim=1)).cpu()
        if bool(finite.all()):
            return keep, explained, dropped
        dropped.update({int(row): "the explanation (maps or logits)" for row in keep[~finite]})
        if not bool(finite.any()):
            return keep[finite], None, dropped
        # explanations are per image, so the finite rows stand as they are
        return keep[finite], tuple(t[finite.to(t.device)] for t in explained), dropped  # type: ignore[return-value]
    return keep, None, dropped  # every image was named by a NonFiniteError


def _select_targets(targets: Any, rows: Tensor) -> Any:
    """The targets of `rows` of a batch: per-image targets are indexed, one class for all stays."""
    return targets[rows.to(targets.device)] if isinstance(targets, Tensor) else targets


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
    fingerprint: str = "stat",
) -> Run:
    """Explain every sample of `data` with `method` into the run directory `out`; returns `open_run(out)`.

    Args:
        model: the classifier (a SoftCAM network for method="softcam"); it is moved to `device` and put in
            eval mode.
        data: a folder path (PNG/JPEG/TIFF/DICOM, see `fastcam.io.images`), a map-style Dataset whose
            items are an image tensor, an (image, label, ...) tuple or a dict with "image" (and "label"),
            or a DataLoader (its dataset, batch size and workers are used; its sampler is replaced by the
            deterministic, resumable order).
        method: a registered method id (`fastcam.methods.registry.method_names()`: "gradcam", "gradcampp",
            "scorecam", "cfcam", "softcam"); method_kwargs go to its constructor.
        target_layer: module or dotted name (not used by softcam).
        out: the run directory (created, or resumed when it holds a run with the same settings).
        batch_size: images per batch = per commit (default: the DataLoader's, else 32).
        device: default cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu.
        amp: None, "bf16" or "fp16": autocast for the model's forward passes.
        targets: None/"predicted", "label" (the dataset's labels), an int, a sequence of N classes in
            dataset order, a mapping sample id -> class (naming every sample and nothing else), or the
            path (`os.PathLike`) of a CSV/JSON targets file (`fastcam.pipeline.data.read_targets_file`).
            Classes are checked against the model's output size for the whole dataset before the first
            batch.
        resume: continue a run directory with the same settings; False refuses an existing one. Resuming
            also repairs: committed batches whose chunks are damaged, or whose input files changed
            (`fingerprint`), are computed again.
        dtype: storage dtype of the maps, "float16" (default) or "float32".
        preprocess: channels/resize/normalisation for a folder path (default: the model's input channels,
            native size, no normalisation).
        overlays: write PNG overlays under out/overlays (and the model-input images under out/inputs).
        report: write out/report.html (implies overlays).
        progress: tqdm progress bar (rank 0 only).
        model_info: extra JSON description of the model for run.json (the CLI passes its spec).
        fingerprint: how input files are recognised as changed when resuming a folder run: "stat" (size
            and modification time, default) or "content" (a hash of each file, read once more per session).

    The run directory is locked for the whole call (`fastcam.errors.RunLockedError` if another process
    writes it). Settings that change results (method and its arguments, layer, model weights, data ids,
    preprocessing, batch size, world size, dtype, amp, targets) are recorded; a run directory written
    with other settings is refused with a ValueError listing the differences. Unreadable samples and
    samples whose explanation is non-finite are skipped and listed with the reason (`Run.skipped`).
    """
    get_method(method)  # an unknown method is refused before anything is loaded
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if fingerprint not in FINGERPRINT_MODES:
        raise ValueError(f"fingerprint must be one of {FINGERPRINT_MODES}, got {fingerprint!r}")
    directory = RunDirectory(Path(out))
    directory.check_out()  # a file, or a folder of something else: refused before any work
    report = bool(report)
    overlays = overlays or report
    ranks = torchrun_ranks()
    device = rank_device(device, ranks)

    if preprocess is None and isinstance(data, (str, os.PathLike)):
        preprocess = Preprocess(channels=expected_in_channels(model) or 3)  # grayscale/RGB adapted to the model
    dataset, ids, data_info, user_loader = dataset_and_ids(data, preprocess)
    if batch_size is None:
        batch_size = (user_loader.batch_size if user_loader is not None and user_loader.batch_size else 32)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_workers is None:
        num_workers = user_loader.num_workers if user_loader is not None else 0
    if len(ids) == 0:
        raise ValueError("the dataset is empty")
    resolve_targets, targets_info = targets_resolver(targets, ids)

    model = model.to(device).eval()
    num_classes = _num_classes(model, dataset, device) if not (targets is None or isinstance(targets, str)) else None
    if num_classes is not None:
        check_targets_range(targets, ids, num_classes)  # the whole dataset, before the first batch
    explainer = make_explainer(model, method, target_layer, method_kwargs)
    layer_name = getattr(explainer, "layer_name", None)
    ids_json = [i if isinstance(i, int) else str(i) for i in ids]
    settings = jsonable({
        "method": method, "method_kwargs": dict(method_kwargs or {}), "target_layer": layer_name,
        "model": {"class": type(model).__qualname__, "state_sha256": state_hash(model), **dict(model_info or {})},
        "data": {**data_info, "n": len(ids),
                 "ids_sha256": hashlib.sha256(json.dumps(ids_json).encode()).hexdigest()},
        "targets": targets_info, "batch_size": batch_size, "world_size": ranks.world, "dtype": dtype, "amp": amp,
        "fingerprint": fingerprint, "format": STORE_FORMAT,
    })

    try:
        with process_group(ranks.world, device) as barrier, directory.writer_lock(ranks.rank, ranks.world):
            if ranks.is_main:
                _create_or_resume(directory, settings, ids_json, resume, data_info)
            barrier()
            check_settings(directory.root, settings)  # every rank checks: a refusal is the same on all of them
            mine = list(shard_indices(len(ids), ranks.rank, ranks.world))
            writer = ShardWriter(directory.root, ranks.rank, ranks.world, len(ids), batch_size, dtype,
                                 fingerprints=_fingerprints(dataset, mine, fingerprint))
            todo = writer.plan()
            label = method + (f"[{ranks.rank}]" if ranks.world > 1 else "")
            _explain_shard(writer, todo, explainer, dataset, ids, device, amp, resolve_targets, num_workers,
                           overlays=overlays, colormap=colormap, alpha=alpha,
                           show_progress=progress and ranks.is_main, desc=label)
            barrier()
            if ranks.is_main:
                directory.finalize(str(device))
            barrier()
    finally:  # the user's model gets its hooks back off, whatever happened
        close = getattr(explainer, "close", None)
        if callable(close):
            close()
    result = open_run(directory.root)
    if report and ranks.is_main:
        from fastcam.io.report import write_report

        write_report([result], directory.report, title=f"fastcam {method} — {directory.root.name}")
    return result


def _num_classes(model: nn.Module, dataset: Dataset, device: torch.device) -> int | None:
    """The model's number of classes, from one forward pass of the first readable sample (None if none of
    the first 16 can be read: the targets are then checked batch by batch)."""
    items = SafeItems(dataset)
    for i in range(min(len(items), 16)):
        item = items[i]
        if item["ok"]:
            with torch.no_grad():
                out = model(item["image"][None].to(device))
            logits = out[0] if isinstance(out, (tuple, list)) else out
            return int(logits.shape[-1])
    return None


def _fingerprints(dataset: Dataset, indices: Sequence[int], mode: str) -> Any:
    """The input fingerprints of the dataset indices (folder datasets; None for other datasets)."""
    if not isinstance(dataset, ImageFolder):
        return None
    files = dataset.files
    assert files is not None
    return file_fingerprints(dataset.root, [files[i] for i in indices], mode)


def _create_or_resume(directory: RunDirectory, settings: dict[str, Any], ids: list[Any], resume: bool,
                      data_info: dict[str, Any]) -> None:
    """Set up a new run directory, or accept an existing run with the same settings for resuming (its
    ids.json is rewritten if damaged). Called with the run's writer lock held."""
    if directory.is_run():
        if not resume:
            raise ValueError(f"run directory {str(directory.root)!r} already exists and resume=False (--no-resume)")
        check_settings(directory.root, settings)
        directory.repair_ids(ids)
        return
    import fastcam

    directory.create(ids, settings, input_size=data_info.get("size"),
                     versions={"fastcam": fastcam.__version__, "torch": torch.__version__})


def _explain_shard(writer: ShardWriter, todo: Sequence[int], explainer: Any, dataset: Dataset, ids: Sequence[Any],
                   device: torch.device, amp: str | None, resolve_targets: TargetsResolver, num_workers: int, *,
                   overlays: bool, colormap: str, alpha: float, show_progress: bool, desc: str) -> None:
    """Explain the shard's batches `todo` (`ShardWriter.plan`), committing each."""
    from tqdm.auto import tqdm

    indices_of_shard = list(shard_indices(len(ids), writer.rank, writer.world))
    batches = [indices_of_shard[r.start : r.stop] for r in map(writer.batch_rows, todo)]
    if show_progress:
        for damage in writer.damages:
            tqdm.write(f"fastcam: repairing {damage}")
        if writer.changed:
            tqdm.write(f"fastcam: the input files of {len(writer.changed)} batch(es) changed since they were explained "
                       f"(batches {', '.join(map(str, writer.changed[:8]))}{', ...' if len(writer.changed) > 8 else ''}): "
                       "explaining them again")
    if not batches:
        return
    loader = DataLoader(SafeItems(dataset), batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    display = getattr(getattr(dataset, "preprocess", None), "denormalize", None)
    amp_dtype = AMP_DTYPES[amp]
    oom_state: dict[str, int] = {}
    done_rows = writer.rows - sum(len(b) for b in batches)
    bar = tqdm(total=writer.rows, initial=done_rows, unit="img", desc=desc, disable=not show_progress,
               dynamic_ncols=True)
    tick = [time.perf_counter()]

    def store(batch_no: int, indices: Sequence[int], ok: Tensor, errors: list[str], results: tuple[Any, ...] | None,
              ready: Any, overlay_job: tuple[Any, ...] | None) -> None:
        """Write and commit one batch (in the writer thread): the results' copies to the host finish
        first (`ready`), overlays are encoded, chunks written, then the commit (fsync) marks it done."""
        if ready is not None:
            ready.synchronize()
        lowres, logits, tgt = results if results is not None else (None, None, None)
        if overlay_job is not None:
            _save_overlays(writer.run_dir, *overlay_job, display, colormap, alpha)
        skipped = [{"index": int(i), "id": ids[i], "error": e} for i, e, good in
                   zip(indices, errors, ok.tolist()) if not good]
        for s in skipped:
            bar.write(f"fastcam: skipping {s['id']!r}: {s['error']}")
        writer.write_batch(batch_no, ok, lowres, logits, tgt)
        now = time.perf_counter()
        writer.commit(batch_no, skipped, now - tick[0], int(ok.sum()), str(device))
        tick[0] = now

    # One writer thread overlaps batch k's store writes and commit (chunk writes, fsyncs, overlays) with
    # batch k+1's loading and compute. At most one batch waits for it, so commits stay strictly in order
    # and memory stays bounded; an error in the writer surfaces at the next batch (or at the end).
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastcam-store") as pool:
        try:
            for batch_no, indices, batch in zip(todo, batches, loader):
                ok: Tensor = batch["ok"].clone()
                errors: list[str] = list(batch["errors"])
                results = ready = overlay_job = None
                if batch["images"] is not None:
                    ok_rows = torch.nonzero(ok).flatten()  # the batch rows of the loaded images, in order
                    images = batch["images"].to(device, non_blocking=True)
                    ok_index = torch.tensor(indices, dtype=torch.long)[ok_rows]
                    kept, explained, dropped = explain_finite(
                        explainer, images, _to_device(resolve_targets(ok_index, batch["labels"]), device), amp_dtype,
                        oom_state)
                    for image_row, reason in dropped.items():
                        ok[ok_rows[image_row]] = False
                        errors[int(ok_rows[image_row])] = f"non-finite explanation: {reason} contain NaN or Inf"
                    if explained is not None:
                        maps, lowres, logits, tgt = explained
                        # the results travel to the host asynchronously; the writer waits for them (`ready`)
                        results = tuple(t.to("cpu", non_blocking=True) for t in (lowres, logits, tgt))
                        if overlays:
                            overlay_job = (batch["images"][kept], maps.to("cpu", non_blocking=True),
                                           [ids[i] for i in ok_index[kept].tolist()])
                        if device.type == "cuda":
                            ready = torch.cuda.Event()
                            ready.record()
                if pending is not None:
                    pending.result()  # the previous batch is committed (or its error raised) before the next
                pending = pool.submit(store, batch_no, indices, ok, errors, results, ready, overlay_job)
                bar.update(len(indices))
            if pending is not None:
                pending.result()
                pending = None
        finally:
            if pending is not None:  # an error in this thread: let the batch being written finish cleanly
                try:
                    pending.result()
                except Exception:  # noqa: BLE001 - the first error (this thread's) is the one raised
                    pass
            bar.close()


def _save_overlays(run_dir: Path, cpu_images: Tensor, maps: Tensor, sample_ids: list[Any], display: Any,
                   colormap: str, alpha: float) -> None:
    """The model inputs (as shown to people) and the maps on them, as PNGs named after the samples."""
    from fastcam.io.overlay import save_overlays, save_pngs, to_uint8

    directory = RunDirectory(run_dir)
    maps = maps.cpu()
    if cpu_images.dim() == 5:  # volumes: their three central slices side by side (fastcam.io.volumes)
        from fastcam.io.volumes import central_slices

        cpu_images, maps, display = central_slices(cpu_images), central_slices(maps), None
    shown = display(cpu_images) if display is not None else _minmax(cpu_images)
    save_pngs(to_uint8(shown), directory.inputs, sample_ids)
    save_overlays(shown, maps, directory.overlays, sample_ids, colormap, alpha)


def _to_device(targets: Any, device: torch.device) -> Any:
    return targets.to(device) if isinstance(targets, Tensor) else targets


def _minmax(images: Tensor) -> Tensor:
    dims = tuple(range(1, images.dim()))
    low = images.amin(dim=dims, keepdim=True)
    span = (images.amax(dim=dims, keepdim=True) - low).clamp_min(1e-12)
    return (images - low) / span


# ---------------------------------------------------------------------------------------------- folders
def explain_folder(
    model: str,
    data: str | Path,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    method_kwargs: Mapping[str, Any] | None = None,
    targets: None | str | int | os.PathLike | Mapping[str, int] = "predicted",
    size: int | Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    workers: int = 0,
    batch_size: int = 32,
    device: str | None = None,
    amp: str | None = None,
    dtype: str = "float16",
    resume: bool = True,
    overlays: bool = False,
    colormap: str = "jet",
    alpha: float = 0.5,
    report: bool = False,
    progress: bool = True,
    reshape: str | None = None,
    volumes: bool = False,
    fingerprint: str = "stat",
) -> Run:
    """Explain a folder of images with a model built from a spec (what `fastcam explain` runs).

    `model` is a spec for `fastcam.pipeline.load_model` (with `weights`, `num_classes`, `in_channels`;
    for a method that is not post-hoc the built model is converted to its network first). The
    preprocessing is the model's input channels, `size` (one side or (H, W); default: the spec's, else
    the images' own) and `mean`/`std` (default: the spec's, else none). `targets` may also be a path
    (`os.PathLike`) to a CSV/JSON file mapping relative image paths to classes. `reshape`: a
    `fastcam.reshape.from_spec` layout ("vit", "vit:2", "swin", "nhwc") for layers that are not
    channels-first maps. `volumes=True`: `data` is a folder of 3-D volumes (`fastcam.io.volumes`: NIfTI,
    `.npy`, DICOM series folders), `size` (D, H, W) or one side; `mean`/`std` as given (volumes keep their
    stored intensities). A spec with random weights and no `weights` file warns (`RandomWeightsWarning`)
    and records it in run.json. The other arguments are `explain_dataset`'s.
    """
    # a method that is not post-hoc explains its own network: the built model is converted to it
    built, defaults = load_model(model, weights, num_classes, in_channels, softcam=not get_method(method).post_hoc)
    model_info: dict[str, Any] = {"spec": model, "weights": str(Path(weights).resolve()) if weights else None,
                                  "source": defaults.get("source")}
    if defaults.get("random_weights"):
        message = (f"model {model!r} has random weights (no --weights file was given): its explanations show "
                   "what an untrained network responds to, not what a trained one uses")
        warnings.warn(message, RandomWeightsWarning, stacklevel=2)
        model_info.update(random_weights=True, warning=message)
    kwargs = dict(method_kwargs or {})
    if reshape is not None:
        from fastcam.reshape import from_spec
        from fastcam.pipeline.specs import prefix_tokens

        kwargs["reshape_transform"] = from_spec(reshape, prefix_tokens=prefix_tokens(built))
    if volumes:
        from fastcam.io.volumes import VolumeFolder, VolumePreprocess

        side3 = tuple(size) if isinstance(size, Sequence) and size is not None else ((size,) * 3 if size else None)
        vprep = VolumePreprocess(channels=expected_in_channels(built) or 1, size=side3,  # type: ignore[arg-type]
                                 mean=tuple(mean) if mean else None, std=tuple(std) if std else None)
        dataset: Any = VolumeFolder(data, vprep)
        preprocess = None
    else:
        side = size if size is not None else defaults.get("size")
        if isinstance(side, int):
            side = (side, side)
        preprocess = Preprocess(channels=expected_in_channels(built) or 3, size=tuple(side) if side else None,
                                mean=tuple(mean) if mean else defaults.get("mean"),
                                std=tuple(std) if std else defaults.get("std"),
                                # --size overrides the model's recipe: a plain resize, no centre crop
                                resize=defaults.get("resize") if size is None else None)
        dataset = data
    return explain_dataset(
        built, dataset, method=method, target_layer=layer, out=out, batch_size=batch_size, device=device, amp=amp,
        targets=targets, resume=resume, method_kwargs=kwargs, dtype=dtype, preprocess=preprocess,
        num_workers=workers, overlays=overlays, colormap=colormap, alpha=alpha, report=report, progress=progress,
        fingerprint=fingerprint, model_info=model_info,
    )


class RandomWeightsWarning(UserWarning):
    """A run explains a model left with its random initialisation (no weights file for a spec that
    builds one): printed, and recorded in run.json (`settings.model.random_weights`)."""
