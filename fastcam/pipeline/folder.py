"""The folder entry point: `explain_folder` builds a model from a spec and explains a folder of images or
volumes with it (what `fastcam explain` runs), through `fastcam.pipeline.loop.explain_dataset`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from torch import nn

from fastcam._validation import expected_in_channels, expected_input_size
from fastcam.errors import RandomWeightsWarning  # defined with every error; importable from here as before
from fastcam.io.images import Preprocess
from fastcam.io.store import Run
from fastcam.methods.registry import MethodInfo, get_method
from fastcam.models import load_model
from fastcam.pipeline.loop import explain_dataset
from fastcam.pipeline.skips import DEFAULT_MAX_SKIP_FRACTION

__all__ = ["PreparedFolder", "RandomWeightsWarning", "explain_folder", "prepare_folder"]


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
    max_skip_fraction: float = DEFAULT_MAX_SKIP_FRACTION,
) -> Run:
    """Explain a folder of images with a model built from a spec (what `fastcam explain` runs).

    `model` is a spec for `fastcam.pipeline.load_model` (with `weights`, `num_classes`, `in_channels`;
    for a method that is not post-hoc the built model is converted to its network first). The
    preprocessing is the model's input channels, `size` (one side or (H, W); default: the spec's recipe,
    else the size the model says it takes (`fastcam._validation.expected_input_size`), else the first
    readable image's, every other size resized to it) and `mean`/`std` (default: the spec's, else none). `targets` may also be a path
    (`os.PathLike`) to a CSV/JSON file mapping relative image paths to classes. `reshape`: a
    `fastcam.reshape.from_spec` layout ("vit", "vit:2", "swin", "nhwc") for layers that are not
    channels-first maps. `volumes=True`: `data` is a folder of 3-D volumes (`fastcam.io.volumes`: NIfTI,
    `.npy`, DICOM series folders), `size` (D, H, W) or one side; `mean`/`std` as given (volumes keep their
    stored intensities). A spec with random weights and no `weights` file warns (`RandomWeightsWarning`)
    and records it in run.json. The other arguments are `explain_dataset`'s.
    """
    info = get_method(method)  # the one lookup: explain_dataset takes the entry as it is
    built, dataset, preprocess, kwargs, model_info = prepare_folder(
        model, data, weights=weights, num_classes=num_classes, in_channels=in_channels, method=info,
        method_kwargs=method_kwargs, size=size, mean=mean, std=std, reshape=reshape, volumes=volumes)
    return explain_dataset(
        built, dataset, method=info, target_layer=layer, out=out, batch_size=batch_size, device=device, amp=amp,
        targets=targets, resume=resume, method_kwargs=kwargs, dtype=dtype, preprocess=preprocess,
        num_workers=workers, overlays=overlays, colormap=colormap, alpha=alpha, report=report, progress=progress,
        fingerprint=fingerprint, model_info=model_info, max_skip_fraction=max_skip_fraction,
    )


class PreparedFolder(NamedTuple):
    """What `prepare_folder` builds from `fastcam explain`'s flags: the model, the data (a folder path, or a
    `VolumeFolder`), its preprocessing, the method's keyword arguments and the model's run.json record."""

    model: nn.Module
    data: Any
    preprocess: Preprocess | None
    method_kwargs: dict[str, Any]
    model_info: dict[str, Any]


def prepare_folder(model: str, data: str | Path, *, weights: str | Path | None = None, num_classes: int | None = None,
                   in_channels: int | None = None, method: str | MethodInfo = "gradcam",
                   method_kwargs: Mapping[str, Any] | None = None, size: int | Sequence[int] | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   reshape: str | None = None, volumes: bool = False) -> PreparedFolder:
    """The model built from its spec and the folder's preprocessing, as `explain_folder` explains them (and
    `fastcam.ray.explain_dataset`, so both engines agree); the arguments are `explain_folder`'s (`method`
    also as its `MethodInfo`)."""
    info = method if isinstance(method, MethodInfo) else get_method(method)
    # a method that is not post-hoc explains its own network: the built model is converted to it
    loaded = load_model(model, weights, num_classes, in_channels, softcam=not info.post_hoc)
    built, defaults = loaded
    model_info: dict[str, Any] = {"spec": model, "weights": str(Path(weights).resolve()) if weights else None,
                                  "source": defaults.get("source")}
    if loaded.class_names:
        model_info["class_names"] = loaded.class_names
    if defaults.get("random_weights"):
        message = (f"model {model!r} has random weights (no --weights file was given): its explanations show "
                   "what an untrained network responds to, not what a trained one uses")
        warnings.warn(message, RandomWeightsWarning, stacklevel=3)  # the caller of explain_folder
        model_info.update(random_weights=True, warning=message)
    kwargs = dict(method_kwargs or {})
    if reshape is not None:
        from fastcam.reshape import from_spec
        from fastcam.models.specs import prefix_tokens

        kwargs["reshape_transform"] = from_spec(reshape, prefix_tokens=prefix_tokens(built))
    if volumes:
        from fastcam.io.volumes import VolumeFolder, VolumePreprocess

        side3 = tuple(size) if isinstance(size, Sequence) and size is not None else ((size,) * 3 if size else None)
        vprep = VolumePreprocess(channels=expected_in_channels(built) or 1, size=side3,  # type: ignore[arg-type]
                                 mean=tuple(mean) if mean else None, std=tuple(std) if std else None)
        dataset: Any = VolumeFolder(data, vprep)
        preprocess = None
    else:
        # the spec's recipe (the model's own processor for Hugging Face models; the size the model states
        # when the recipe has none); --size/--mean/--std override it
        recipe = {**defaults, "size": defaults.get("size") or expected_input_size(built)}
        preprocess = Preprocess.for_model(expected_in_channels(built) or 3, recipe, size, mean, std,
                                          processor=loaded.processor)
        dataset = data
    return PreparedFolder(built, dataset, preprocess, kwargs, model_info)
