"""Model specs that mean what users think, and the preprocessing each model was trained with.

A spec names where a model comes from; nothing is ever downloaded:

- `torchvision:NAME`: `torchvision.models.get_model(NAME, weights=None)`; preprocessing from the model's
  default weights' transforms (resize the shorter side, centre crop, ImageNet mean/std).
- `timm:NAME`: `timm.create_model(NAME, pretrained=False)`; preprocessing from
  `timm.data.resolve_data_config` (input size, crop_pct, mean/std).
- `hf:PATH`: a local Hugging Face folder (`config.json`, optional `model.safetensors`,
  `preprocessor_config.json`), loaded with `local_files_only=True`, `trust_remote_code=False` and
  safetensors only (a pickled `pytorch_model.bin` is refused); preprocessing by the folder's own
  `AutoImageProcessor` (`preprocessor_config.json`), class names from the config's `id2label`.
- `fastcam:NAME`: a `fastcam.models` builder (plain torch, torchvision's layout).
- `module:factory`: your own code (a callable returning an nn.Module, or a module object), imported as
  `python -m` would: modules of the current directory first.
- a bare `NAME`: torchvision's model of that name when torchvision is importable; otherwise an error
  that suggests `fastcam:NAME`.

Models of the first four kinds start with random weights: without a weights file a run warns and
records it (`random_weights` in run.json).
"""
from __future__ import annotations

import contextlib
import importlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import nn

from fastcam.models.builders import BUILDERS

__all__ = ["HF_PICKLED_WEIGHTS", "HF_SAFE_WEIGHTS", "IMAGENET_MEAN", "IMAGENET_STD", "SCHEMES", "build",
           "hf_class_names", "hf_preprocessing", "import_from_spec", "prefix_tokens", "spec_imports_code"]

#: ImageNet's channel statistics (torchvision's recipe, and the default of fastcam's own builders' users)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SCHEMES = ("torchvision", "timm", "hf", "fastcam")
#: `module:callable` specs of fastcam's own model factories: not code named by a run directory
_FASTCAM_FACTORIES = frozenset({"fastcam.demo:demo_cnn"})


def spec_imports_code(spec: str) -> bool:
    """Whether building the model of `spec` imports and calls code that the spec names (`module:callable`),
    rather than a library's model by name (`torchvision:`, `timm:`, `fastcam:`, a bare torchvision name) or
    a local Hugging Face folder (`hf:`: config and safetensors only, `trust_remote_code=False`).
    `fastcam eval` does not do that for a spec read from a run directory unless the user names the model
    or passes --trust-run."""
    scheme, sep, attr = spec.partition(":")
    if not sep or scheme in SCHEMES:
        return False
    return not (spec in _FASTCAM_FACTORIES or (scheme == "fastcam.models" and attr in BUILDERS))


@contextlib.contextmanager
def _current_directory_importable() -> Iterator[None]:
    """Put the current directory first on sys.path, as `python -m` does, for the duration."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def import_from_spec(spec: str) -> Any:
    """The object `module:attr` names, imported as `python -m` would (modules of the current directory
    first)."""
    module_name, _, attr = spec.partition(":")
    try:
        with _current_directory_importable():
            return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load model spec {spec!r}: {exc} (the module is looked up in the current "
                         "directory first, then on sys.path)") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ValueError(f"cannot load model spec {spec!r}: importing {module_name!r} raised "
                         f"{type(exc).__name__}: {exc}") from exc


def _import(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure: the spec cannot be served here
        raise ValueError(f"model spec {spec!r} needs {name}, which does not import here "
                         f"({type(exc).__name__}: {exc})") from None


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def build(spec: str, num_classes: int | None = None, in_channels: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(model, defaults) for a spec, before any weights file is loaded.

    defaults: "source" (the scheme), "random_weights" (the model starts from a random initialisation),
    and the model's own preprocessing where it has one: "size" (H, W) the model input, "resize" (resize
    the shorter side to this, then centre-crop to size), "mean", "std"; for a Hugging Face folder also
    its "processor" (`hf_preprocessing`) and "class_names" (`hf_class_names`).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a model spec must be a non-empty string, got {spec!r}")
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in SCHEMES:
        if not rest:
            raise ValueError(f"model spec {spec!r} names no model after {scheme!r}")
        return {"torchvision": _torchvision, "timm": _timm, "hf": _huggingface, "fastcam": _fastcam}[scheme](
            rest, spec, num_classes, in_channels)
    if sep:
        return _factory(scheme, rest, spec, num_classes, in_channels)
    return _bare(spec, num_classes, in_channels)


def _kwargs(num_classes: int | None, in_channels: int | None) -> dict[str, int]:
    return {k: v for k, v in {"num_classes": num_classes, "in_channels": in_channels}.items() if v is not None}


def _fastcam(name: str, spec: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    if name not in BUILDERS:
        raise ValueError(f"unknown model {spec!r}: fastcam.models has {', '.join(BUILDERS)}")
    return BUILDERS[name](**_kwargs(num_classes, in_channels)), {"source": "fastcam", "random_weights": True}


def _factory(module_name: str, attr: str, spec: str, num_classes: int | None,
             in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    obj = import_from_spec(spec)
    if not isinstance(obj, nn.Module) and not callable(obj):
        raise ValueError(f"model spec {spec!r} names a {type(obj).__name__}, not an nn.Module or a callable "
                         "returning one")
    try:
        with _current_directory_importable():  # a factory may import its own modules lazily
            model = obj if isinstance(obj, nn.Module) else obj(**_kwargs(num_classes, in_channels))
    except Exception as exc:  # noqa: BLE001 - the user's factory failed: its own error, said plainly
        raise ValueError(f"model factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
    # the factory may load weights itself: nothing is known about them, so nothing is claimed
    return model, {"source": "module", "random_weights": False}


def _torchvision_names() -> list[str] | None:
    try:
        from torchvision import models
    except Exception:  # noqa: BLE001 - not importable (absent, or built for another torch)
        return None
    return list(models.list_models())


def _bare(name: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    names = _torchvision_names()
    hint = f"; fastcam's own plain-torch builder is fastcam:{name}" if name in BUILDERS else ""
    if names is None:
        raise ValueError(f"unknown model {name!r}: a bare name means a torchvision model, and torchvision is not "
                         f"importable here{hint or '; use fastcam:NAME, timm:NAME, hf:PATH or module:factory'}")
    if name not in names:
        raise ValueError(f"unknown model {name!r}: torchvision has no such model{hint or ''} (specs: torchvision:NAME, "
                         "timm:NAME, hf:PATH, fastcam:NAME, module:factory)")
    return _torchvision(name, f"torchvision:{name}", num_classes, in_channels)


def _torchvision(name: str, spec: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    tv = _import("torchvision.models", spec)
    if name not in tv.list_models():
        raise ValueError(f"unknown model {spec!r}: torchvision has no model {name!r}")
    if in_channels not in (None, 3):
        raise ValueError(f"torchvision models take 3 input channels; {spec!r} cannot be built with in_channels={in_channels}")
    model = tv.get_model(name, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    defaults: dict[str, Any] = {"source": "torchvision", "random_weights": True,
                                "size": (224, 224), "resize": 256, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    try:  # the default weights' own transforms (no download: only the recipe is read)
        transform = tv.get_model_weights(name).DEFAULT.transforms()
        defaults.update(size=_pair(transform.crop_size), resize=int(_pair(transform.resize_size)[0]),
                        mean=tuple(transform.mean), std=tuple(transform.std))
    except Exception:  # noqa: BLE001 - models without weights or transforms of another kind: ImageNet's
        pass
    return model, defaults


def _timm(name: str, spec: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    timm = _import("timm", spec)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {spec!r}: timm has no model {name!r}")
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_channels is not None:
        kwargs["in_chans"] = in_channels
    model = timm.create_model(name, **kwargs)
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    size = _pair(config["input_size"][-2:])
    crop_pct = float(config.get("crop_pct") or 1.0)
    return model, {"source": "timm", "random_weights": True, "size": size,
                   "resize": int(math.floor(size[0] / crop_pct)) if crop_pct < 1 else None,
                   "mean": tuple(config["mean"]), "std": tuple(config["std"])}


#: weight files a Hugging Face folder may hold, by how they are read
HF_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
HF_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")


def _huggingface(path_text: str, spec: str, num_classes: int | None, in_channels: int | None) -> tuple[nn.Module, dict[str, Any]]:
    path = Path(path_text)
    if not (path / "config.json").is_file():
        raise ValueError(f"model spec {spec!r}: {str(path)!r} is not a local Hugging Face model folder (no config.json); "
                         "fastcam never downloads, so save the model there first (model.save_pretrained(PATH))")
    transformers = _import("transformers", spec)
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    if in_channels is not None and getattr(config, "num_channels", in_channels) != in_channels:
        raise ValueError(f"{spec!r} takes {config.num_channels} input channels, not {in_channels}")
    has_safe = any((path / f).is_file() for f in HF_SAFE_WEIGHTS)
    pickled = [f for f in HF_PICKLED_WEIGHTS if (path / f).is_file()]
    common = dict(local_files_only=True, trust_remote_code=False)
    if has_safe:
        if num_classes is not None and num_classes != config.num_labels:
            raise ValueError(f"{spec!r} holds weights for {config.num_labels} classes, not --num-classes {num_classes}")
        model = transformers.AutoModelForImageClassification.from_pretrained(str(path), use_safetensors=True, **common)
        random_weights = False
    elif pickled:
        raise ValueError(f"{spec!r} holds only pickled weights ({', '.join(pickled)}), which fastcam does not load "
                         "(unpickling runs code): save them as safetensors (model.save_pretrained(PATH, "
                         "safe_serialization=True))")
    else:
        if num_classes is not None:
            config.num_labels = num_classes
        model = transformers.AutoModelForImageClassification.from_config(config)
        random_weights = True
    return model, {"source": "hf", "random_weights": random_weights, "class_names": hf_class_names(model.config),
                   **hf_preprocessing(path)}


def hf_preprocessing(folder: Path) -> dict[str, Any]:
    """The preprocessing of a local Hugging Face model folder: its own `AutoImageProcessor`
    (`preprocessor_config.json`, never re-implemented) as "processor" (`HFImageProcessor`), with what it
    gives: "size" (H, W) when its outputs have one fixed size, "mean"/"std" when it normalises. Empty when
    the folder has no processor config."""
    from fastcam.models.processors import hf_image_processor

    processor = hf_image_processor(folder)
    if processor is None:
        return {}
    recipe = {"size": processor.size, "mean": processor.mean, "std": processor.std}
    return {"processor": processor, **{k: v for k, v in recipe.items() if v is not None}}


def hf_class_names(config: Any) -> list[str] | None:
    """Class index -> name from a Hugging Face config's `id2label`; None when it names no class (absent,
    incomplete, or transformers' placeholders "LABEL_0", "LABEL_1", ...)."""
    id2label = getattr(config, "id2label", None) or {}
    count = int(getattr(config, "num_labels", len(id2label)) or 0)
    try:
        names = [str(id2label[i]) if i in id2label else str(id2label[str(i)]) for i in range(count)]
    except KeyError:
        return None
    return None if not names or names == [f"LABEL_{i}" for i in range(count)] else names


def prefix_tokens(model: nn.Module) -> int | None:
    """The number of non-patch tokens a ViT-like model puts before its patches, where it says: timm's
    `num_prefix_tokens`, Hugging Face DeiT-with-teacher (2) / register models (1 + registers); else None."""
    count = getattr(model, "num_prefix_tokens", None)
    if isinstance(count, int):
        return count
    config = getattr(model, "config", None)
    if config is not None:
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        distilled = "WithTeacher" in type(model).__name__
        return 1 + registers + int(distilled)
    return None
