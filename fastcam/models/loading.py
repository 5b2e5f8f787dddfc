"""The one model loader of every command (`explain`, `eval`, `bench`, `export`, and the engines above
them): a spec and a weights file in, the model and what its callers need out; and the state hash that
tells two models' weights apart.
"""
from __future__ import annotations

import hashlib
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from fastcam._device import parse_device
from fastcam.models.specs import build
from fastcam.targets import primary_tensor

__all__ = ["LoadedModel", "LogitsOnly", "load_model", "load_state_dict", "output_classes", "state_hash"]


@dataclass
class LoadedModel:
    """A model built from a spec, with what its callers need besides the module.

    Unpacks as `(model, defaults)`, the pair `load_model` returned before it returned this object.

    Attributes:
        model: the module (in the mode it was built in; `load_model(..., device=...)` moves it).
        spec: the spec it was built from.
        source: the spec's kind: "torchvision", "timm", "hf", "fastcam" or "module".
        random_weights: whether the model is left with a random initialisation (a spec that builds one,
            and no weights file).
        size: (H, W) of the model's input, where its recipe says.
        resize: resize the shorter side to this, then centre-crop to `size` (the model's recipe).
        mean, std: the normalisation of its recipe (after scaling pixels to [0, 1]).
        class_names: class index -> name, where the model says (a Hugging Face config's `id2label`).
        processor: the model's own image preprocessing where it has one (a Hugging Face
            `AutoImageProcessor`, wrapped: image array (H, W, C) uint8 -> (C, H, W) float32 tensor); the
            recipe above then describes it, and it is what images go through.
    """

    model: nn.Module
    spec: str
    source: str
    random_weights: bool
    size: tuple[int, int] | None = None
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: list[str] | None = None
    processor: Callable[[Any], Tensor] | None = field(default=None, repr=False)

    @property
    def defaults(self) -> dict[str, Any]:
        """The spec's source, `random_weights` and its own preprocessing ("size", "resize", "mean", "std")
        where it has one, as a dict (the second item of the pair)."""
        recipe = {"size": self.size, "resize": self.resize, "mean": self.mean, "std": self.std}
        return {"source": self.source, "random_weights": self.random_weights,
                **{k: v for k, v in recipe.items() if v is not None}}

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.defaults))


class LogitsOnly(nn.Module):
    """`net` with its (B, K) scores as its only output (`fastcam.targets.primary_tensor`): a Hugging Face
    `ModelOutput`'s logits, a SoftCAM network's (logits, evidence) first item. For callers that take
    tensor outputs only (metrics, peer libraries, graph tracers); `net`'s modules are under `net.`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return primary_tensor(self.net(images))


def load_model(spec: str, weights: str | Path | None = None, num_classes: int | None = None,
               in_channels: int | None = None, softcam: bool = False, *,
               device: str | torch.device | None = None) -> LoadedModel:
    """Build the model of a spec and load its weights (nothing is downloaded, nothing read is executed).

    Args:
        spec: `torchvision:NAME`, `timm:NAME`, `hf:PATH` (a local folder), `fastcam:NAME` (`fastcam.models`
            builders), `module:factory` (a callable returning an nn.Module, or an nn.Module object; the
            module is imported as `python -m` would, the current directory first), or a bare NAME:
            torchvision's, when torchvision is importable (`fastcam.models.specs`).
        weights: a safetensors file or a state dict read with `torch.load(weights_only=True)`.
        num_classes: classes of the built model (builders, torchvision, timm, a Hugging Face config).
        in_channels: input channels of the built model.
        softcam: convert the built model with `fastcam.softcam.convert` before the weights (of the SoftCAM
            network) load.
        device: where the model goes (`fastcam._device.parse_device`); None leaves it on the CPU.

    Returns:
        The model and its recipe (`LoadedModel`; unpacks as `(model, defaults)`).

    Raises:
        ValueError: a spec that cannot be built (its reason, a factory's own error included), weights
            that cannot be read, are refused (pickled objects) or do not fit the model.
    """
    model, defaults = build(spec, num_classes, in_channels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model spec {spec!r} gave a {type(model).__name__}, not an nn.Module")
    if softcam:
        from fastcam import softcam as sc

        model = sc.convert(model, num_classes or output_classes(model))
    random_weights = bool(defaults.get("random_weights"))
    if weights is not None:
        state = load_state_dict(weights)
        _check_fits(model, state, spec, weights)
        model.load_state_dict(state)
        random_weights = False
    if device is not None:
        model = model.to(parse_device(device))
    return LoadedModel(model=model, spec=spec, source=str(defaults.get("source")), random_weights=random_weights,
                       size=defaults.get("size"), resize=defaults.get("resize"), mean=defaults.get("mean"),
                       std=defaults.get("std"), class_names=defaults.get("class_names"),
                       processor=defaults.get("processor"))


def state_hash(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, values): changed weights = other run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


def output_classes(model: nn.Module) -> int:
    """The classes of a classifier: the output features of its last Linear layer."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("cannot infer the number of classes; pass --num-classes")
    return last[-1].out_features


def _check_fits(model: nn.Module, state: Mapping[str, Any], spec: str, weights: str | Path) -> None:
    """Refuse a state dict that does not fit the model, naming missing/unexpected keys and shape changes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}" for k in own
              if k in state and isinstance(state[k], Tensor) and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"{len(missing)} missing key(s) (e.g. {missing[:3]})" if missing else "",
             f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]})" if unexpected else "",
             f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else ""]
    raise ValueError(f"weights {str(weights)!r} do not fit the model {spec!r}: " + "; ".join(p for p in parts if p)
                     + "; check --model, --num-classes and --in-channels (and --method softcam weights)")


def _first_line(exc: BaseException) -> str:
    """The informative line of a loader's error: the refused global of a weights-only unpickler, else the
    first line."""
    text = str(exc).strip()
    refused = re.search(r"(unsupported GLOBAL [^\s]+|Unsupported global: GLOBAL [^\s]+)", text, re.IGNORECASE)
    return refused.group(0) if refused else (text.splitlines()[0] if text else type(exc).__name__)


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a safetensors file or a `torch.load(weights_only=True)` file (unwrapping a
    checkpoint's "state_dict" / "model"); a file holding Python objects other than tensors is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ValueError(f"cannot read weights {str(path)!r}: not a valid safetensors file ({_first_line(exc)}); "
                             "check the file, or save it again with safetensors.torch.save_file") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "unsupported global" in str(exc).lower():
            raise ValueError(f"refused to load weights {str(path)!r}: the file holds Python objects other than "
                             f"tensors, which are never run ({_first_line(exc)}); save a plain state dict "
                             "(torch.save(model.state_dict(), ...)) or a safetensors file") from exc
        raise ValueError(f"cannot read weights {str(path)!r}: not a PyTorch file ({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ValueError(f"cannot read weights {str(path)!r}: not a PyTorch file ({_first_line(exc)})") from exc
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{str(path)!r} does not hold a state dict")
    return state
