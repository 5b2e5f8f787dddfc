"""The dataset loop: `explain_dataset` explains a whole dataset into a resumable run directory.

The dataset is streamed: one batch is loaded, explained on the device (`fastcam.pipeline.robust`), written to
the Zarr store (`fastcam.io.store`) and committed before the next, so memory stays flat however many images
there are, and a run killed at any moment resumes where its last commit left it when the same call (or the
same `fastcam explain` command) is made again. Under torchrun each rank explains its own shard
(`fastcam.pipeline.distributed`).

Images whose explanation is non-finite are skipped with the reason, like unreadable files: never
stored as NaN.
"""
from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fastcam.io.images import FINGERPRINT_MODES, FolderItems, ImageFolder, Preprocess, file_fingerprints, skip_reason
from fastcam.io.store import STORE_FORMAT, Run, RunDirectory, ShardWriter, open_run, shard_indices
from fastcam.methods.base import Explainer
from fastcam.methods.registry import MethodInfo, get_method
from fastcam._device import AMP_DTYPES
from fastcam.pipeline.data import (
    SafeItems,
    TargetsResolver,
    check_targets_range,
    collate,
    dataset_and_ids,
    default_preprocess,
    targets_resolver,
)
from fastcam.pipeline.distributed import process_group, rank_device, torchrun_ranks
from fastcam.pipeline.robust import Explained, explain_finite
from fastcam.pipeline.skips import DEFAULT_MAX_SKIP_FRACTION, SkipGuard, check_max_skip_fraction
from fastcam.pipeline.settings import check_settings, jsonable, state_hash


__all__ = ["AMP_DTYPES", "BatchResult", "check_options", "create_or_resume", "explain_batch", "explain_dataset",
           "input_fingerprints", "model_classes", "run_settings", "shard_skip_guard"]


def check_options(method: str | MethodInfo, amp: str | None, dtype: str, fingerprint: str) -> MethodInfo:
    """Refuse an unknown method, amp, storage dtype or fingerprint mode before anything is loaded; returns the
    method's registry entry (the one lookup every engine makes)."""
    info = method if isinstance(method, MethodInfo) else get_method(method)
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
    if fingerprint not in FINGERPRINT_MODES:
        raise ValueError(f"fingerprint must be one of {FINGERPRINT_MODES}, got {fingerprint!r}")
    return info


def explain_dataset(
    model: nn.Module,
    data: Any,
    method: str | MethodInfo = "cfcam",
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
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
) -> Run:
    """Explain every sample of `data` with `method` into the run directory `out`; returns `open_run(out)`.

    Args:
        model: the classifier (a SoftCAM network for method="softcam"); it is moved to `device` and put in
            eval mode.
        data: a folder path (PNG/JPEG/TIFF/DICOM, see `fastcam.io.images`), a map-style Dataset whose
            items are an image, an (image, label, ...) tuple or a dict with "image" (and "label"), as a
            Hugging Face `datasets` split gives them, or a DataLoader (its dataset, batch size and workers
            are used; its sampler is replaced by the deterministic, resumable order). An image is a tensor
            (the model's input as it is), a PIL image or an (H, W[, C]) numpy array (read as files are:
            `fastcam.io.images.picture_tensor`, then preprocessed).
        method: a registered method id (`fastcam.methods.registry.method_names()`: "gradcam", "gradcampp",
            "scorecam", "cfcam", "softcam", ...) or its `MethodInfo`; method_kwargs go to its constructor.
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
        preprocess: channels/resize/normalisation (`fastcam.Preprocess`) of a folder's images and a
            dataset's pictures, and of a dataset's tensor images when given (taken as [0, 1] images). Default
            (`fastcam.pipeline.data.default_preprocess`): the model's input channels, its input size where
            it says one (a Hugging Face config's `image_size`, timm's `pretrained_cfg`), else the first
            readable image's size with every other size resized to it; no normalisation. Tensor datasets
            are taken as they are.
        overlays: write PNG overlays under out/overlays (and the model-input images under out/inputs).
        report: write out/report.html (implies overlays).
        progress: tqdm progress bar (rank 0 only).
        model_info: extra JSON description of the model for run.json (the CLI passes its spec).
        fingerprint: how input files are recognised as changed when resuming a folder run: "stat" (size
            and modification time, default) or "content" (a hash of each file, read once more per session).
        max_skip_fraction: the share of samples that may be skipped (unreadable, wrong type, non-finite)
            before the run stops with `fastcam.errors.TooManySkippedError`, not marked complete; the first
            samples all failing for one reason stop it at once (`fastcam.pipeline.skips`). 1.0: never stop.

    The run directory is locked for the whole call (`fastcam.errors.RunLockedError` if another process
    writes it). Settings that change results (method and its arguments, layer, model weights, data ids,
    preprocessing, batch size, world size, dtype, amp, targets) are recorded; a run directory written
    with other settings is refused with a ValueError listing the differences. Unreadable samples and
    samples whose explanation is non-finite are skipped and listed with the reason (`Run.skipped`), up to
    `max_skip_fraction`.
    """
    info = check_options(method, amp, dtype, fingerprint)  # refused before anything loads
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    max_skip_fraction = check_max_skip_fraction(max_skip_fraction)
    directory = RunDirectory(Path(out))
    directory.check_out()  # a file, or a folder of something else: refused before any work
    report = bool(report)
    overlays = overlays or report
    ranks = torchrun_ranks()
    device = rank_device(device, ranks)

    user_preprocess = preprocess is not None
    if preprocess is None:
        preprocess = default_preprocess(model, data)
    dataset, ids, data_info, user_loader = dataset_and_ids(data, preprocess, preprocess_tensors=user_preprocess)
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
    num_classes = model_classes(model, dataset, device) if not (targets is None or isinstance(targets, str)) else None
    if num_classes is not None:
        check_targets_range(targets, ids, num_classes)  # the whole dataset, before the first batch
    explainer = info.build(model, target_layer, **dict(method_kwargs or {}))
    ids_json = [i if isinstance(i, int) else str(i) for i in ids]
    settings = run_settings(model, explainer, info, method_kwargs, model_info, data_info, ids_json, targets_info,
                            batch_size, ranks.world, dtype, amp, fingerprint)

    try:
        with process_group(ranks.world, device) as barrier, directory.writer_lock(ranks.rank, ranks.world):
            if ranks.is_main:
                create_or_resume(directory, settings, ids_json, resume, data_info)
            barrier()
            check_settings(directory.root, settings)  # every rank checks: a refusal is the same on all of them
            mine = list(shard_indices(len(ids), ranks.rank, ranks.world))
            writer = ShardWriter(directory.root, ranks.rank, ranks.world, len(ids), batch_size, dtype,
                                 fingerprints=input_fingerprints(dataset, mine, fingerprint))
            todo = writer.plan()
            label = info.name + (f"[{ranks.rank}]" if ranks.world > 1 else "")
            _explain_shard(writer, todo, explainer, dataset, ids, device, amp, resolve_targets, num_workers,
                           overlays=overlays, colormap=colormap, alpha=alpha,
                           show_progress=progress and ranks.is_main, desc=label, max_skip_fraction=max_skip_fraction)
            barrier()
            if ranks.is_main:
                directory.finalize(str(device))
            barrier()
    finally:  # no hook outlives a call; closing marks the explainer done, whatever happened
        explainer.close()
    result = open_run(directory.root)
    if report and ranks.is_main:
        from fastcam.io.report import write_report

        write_report([result], directory.report, title=f"fastcam {info.name} — {directory.root.name}")
    return result


def run_settings(model: nn.Module, explainer: Explainer, method: str | MethodInfo,
                 method_kwargs: Mapping[str, Any] | None, model_info: Mapping[str, Any] | None,
                 data_info: Mapping[str, Any], ids_json: list[Any], targets_info: Any, batch_size: int,
                 world_size: int, dtype: str, amp: str | None, fingerprint: str) -> dict[str, Any]:
    """The settings record of a run (run.json "settings"): everything that changes its results, as every
    engine (local, torchrun, `fastcam.ray`) writes and checks it."""
    return jsonable({
        "method": method.name if isinstance(method, MethodInfo) else method,
        "method_kwargs": dict(method_kwargs or {}), "target_layer": explainer.layer_name,
        "model": {"class": type(model).__qualname__, "state_sha256": state_hash(model), **dict(model_info or {})},
        "data": {**data_info, "n": len(ids_json),
                 "ids_sha256": hashlib.sha256(json.dumps(ids_json).encode()).hexdigest()},
        "targets": targets_info, "batch_size": batch_size, "world_size": world_size, "dtype": dtype, "amp": amp,
        "fingerprint": fingerprint, "format": STORE_FORMAT,
    })


def model_classes(model: nn.Module, dataset: Dataset, device: torch.device) -> int | None:
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


def input_fingerprints(dataset: Dataset, indices: Sequence[int], mode: str) -> Any:
    """The input fingerprints of the dataset indices (folder datasets; None for other datasets)."""
    if not isinstance(dataset, ImageFolder):
        return None
    files = dataset.files
    assert files is not None
    return file_fingerprints(dataset.root, [files[i] for i in indices], mode)


def create_or_resume(directory: RunDirectory, settings: dict[str, Any], ids: list[Any], resume: bool,
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


def _explain_shard(writer: ShardWriter, todo: Sequence[int], explainer: Explainer, dataset: Dataset, ids: Sequence[Any],
                   device: torch.device, amp: str | None, resolve_targets: TargetsResolver, num_workers: int, *,
                   overlays: bool, colormap: str, alpha: float, show_progress: bool, desc: str,
                   max_skip_fraction: float) -> None:
    """Explain the shard's batches `todo` (`ShardWriter.plan`), committing each; stop as
    `fastcam.pipeline.skips` says when too many samples are skipped."""
    from tqdm.auto import tqdm

    indices_of_shard = list(shard_indices(len(ids), writer.rank, writer.world))
    batches = [indices_of_shard[r.start : r.stop] for r in map(writer.batch_rows, todo)]
    guard = shard_skip_guard(writer, todo, dataset, ids, indices_of_shard, max_skip_fraction)
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
                done = explain_batch(explainer, batch, indices, resolve_targets, device, amp_dtype, oom_state)
                ok, errors = done.ok, done.errors
                results = ready = overlay_job = None
                if done.explained is not None:
                    maps, lowres, logits, tgt = done.explained
                    # the results travel to the host asynchronously; the writer waits for them (`ready`)
                    results = tuple(t.to("cpu", non_blocking=True) for t in (lowres, logits, tgt))
                    if overlays:
                        overlay_job = (batch["images"][done.kept], maps.to("cpu", non_blocking=True),
                                       [ids[i] for i in done.kept_index.tolist()])
                    if device.type == "cuda":
                        ready = torch.cuda.Event()
                        ready.record()
                if pending is not None:
                    pending.result()  # the previous batch is committed (or its error raised) before the next
                pending = pool.submit(store, batch_no, indices, ok, errors, results, ready, overlay_job)
                bar.update(len(indices))
                guard.add((i, ids[i], None if good else error) for i, error, good in zip(indices, errors, ok.tolist()))
                guard.check()  # the batch above still commits: a stopped run resumes after it
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


class BatchResult(NamedTuple):
    """One loaded batch explained (`explain_batch`): every row's ok flag and error (non-finite explanations
    turned into skipped rows), the batch rows of the loaded images kept and their dataset indices, and
    their (maps, lowres, logits, targets) on the device (None when no row is explained)."""

    ok: Tensor
    errors: list[str]
    kept: Tensor
    kept_index: Tensor
    explained: Explained | None


def explain_batch(explainer: Explainer, batch: Mapping[str, Any], indices: Sequence[int],
                  resolve_targets: TargetsResolver, device: torch.device, amp: torch.dtype | None,
                  oom_state: dict[str, int]) -> BatchResult:
    """Explain one batch as `collate` gives it (rows `indices` of the dataset): the step every engine
    (the local loop, `fastcam.ray`'s actors) runs, so they agree bit for bit on the same batches."""
    ok: Tensor = batch["ok"].clone()
    errors: list[str] = list(batch["errors"])
    empty = torch.zeros(0, dtype=torch.long)
    if batch["images"] is None:
        return BatchResult(ok, errors, empty, empty, None)
    ok_rows = torch.nonzero(ok).flatten()  # the batch rows of the loaded images, in order
    images = batch["images"].to(device, non_blocking=True)
    ok_index = torch.tensor(list(indices), dtype=torch.long)[ok_rows]
    kept, explained, dropped = explain_finite(
        explainer, images, _to_device(resolve_targets(ok_index, batch["labels"]), device), amp, oom_state)
    for image_row, reason in dropped.items():
        ok[ok_rows[image_row]] = False
        errors[int(ok_rows[image_row])] = f"non-finite explanation: {reason} contain NaN or Inf"
    return BatchResult(ok, errors, kept, ok_index[kept], explained)


def shard_skip_guard(writer: ShardWriter, todo: Sequence[int], dataset: Dataset, ids: Sequence[Any],
                indices_of_shard: Sequence[int], max_skip_fraction: float) -> SkipGuard:
    """The shard's `SkipGuard`, holding the committed batches that stay as they are; checked at once, so a
    resumed run that broke a rule stops again before computing anything."""
    root, files = getattr(dataset, "root", None), getattr(dataset, "files", None)
    not_read = ((lambda index: skip_reason(Path(root) / files[index]) is not None)  # type: ignore[index]
                if isinstance(dataset, FolderItems) else (lambda index: False))
    guard = SkipGuard(max_skip_fraction, len(indices_of_shard), not_read)
    redo = set(todo)
    kept = [indices_of_shard[r] for b in range(writer.committed_batches) if b not in redo for r in writer.batch_rows(b)]
    errors = {int(s["index"]): str(s["error"]) for s in writer.progress["skipped"]}
    guard.add((i, ids[i], errors.get(i)) for i in kept)
    guard.check()
    return guard


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
