r"""SoftCAM (Djoumessi & Berens, MIDL 2026): turn a CNN into a self-explainable one.

The convolutional backbone is kept; global average pooling and the fully connected classifier are
replaced by a 1×1 convolution (with bias) from the last feature map $F \in \mathbb{R}^{C\times h\times w}$
to K signed *class-evidence maps*

$$ E_k(i, j) = b_k + \sum_c W_{kc} F_c(i, j), $$

and the logits are a spatial pooling of the evidence: the average (the paper), the max, or the
log-sum-exp with a temperature $T$, a soft pooling between the two:

$$ y_k^{avg} = \frac{1}{hw}\sum_{ij} E_k(i,j), \qquad y_k^{max} = \max_{ij} E_k(i,j), \qquad
   y_k^{lse} = T \log \frac{1}{hw} \sum_{ij} e^{E_k(i,j)/T}
   \;\xrightarrow[T\to\infty]{}\; y_k^{avg}, \;\xrightarrow[T\to 0]{}\; y_k^{max}. $$

Training adds the ElasticNet penalty $\lambda_1\lVert E\rVert_1 + \lambda_2\lVert E\rVert_2$ on the evidence
maps to the cross-entropy (`elastic_net`, `fit`). The explanation of class k is ReLU(E_k), upsampled
(`fastcam.SoftCAM`).

>>> net = fastcam.softcam.convert(model, num_classes=2)     # torchvision-layout ResNet / VGG / DenseNet
>>> logits, evidence = net(images)                          # (B, K), (B, K, h, w)
>>> history = fastcam.softcam.fit(net, loader, epochs=50, device="cuda", checkpoint_dir="ckpt")
>>> maps = fastcam.SoftCAM(net)(images)                     # (B, H, W) in [0, 1]
"""
from __future__ import annotations

import copy
import importlib
import json
import math
import os
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcam._backend import check_backend, resolve_backend
from fastcam._validation import check_logits

POOLS = ("avg", "max", "lse")
DEFAULT_TEMPERATURE = 1.0
#: where the fused Triton evidence head lives (kernel 1 of the Triton issue)
HEAD_KERNEL_MODULE = "fastcam.kernels.softcam_head"

__all__ = [
    "POOLS",
    "EvidenceHead",
    "SoftCAMNet",
    "check_softcam_output",
    "convert",
    "elastic_net",
    "fit",
    "head_kernel",
    "load",
    "pool_evidence",
    "save",
]


# ---------------------------------------------------------------------------------------------- checks
def _check_pool(pool: object, temperature: object) -> tuple[str, float]:
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive float, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite float, got {temperature!r}")
    return str(pool), float(temperature)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _check_non_negative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a non-negative float, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite float, got {value!r}")
    return float(value)


def check_softcam_output(output: object, batch_size: int) -> tuple[Tensor, Tensor]:
    """A SoftCAM network must return `(logits (B, K), evidence (B, K, h, w))`; returns the pair."""
    if not isinstance(output, (tuple, list)) or len(output) != 2 or not all(isinstance(t, Tensor) for t in output):
        got = f"a {type(output).__name__} of length {len(output)}" if isinstance(output, (tuple, list)) else type(output).__name__
        raise TypeError(
            f"a SoftCAM network must return a pair (logits (B, K), evidence (B, K, h, w)) of tensors, got {got}; "
            "convert a classifier with fastcam.softcam.convert"
        )
    logits = check_logits(output[0], batch_size)
    evidence = output[1]
    num_classes = logits.shape[1]
    if evidence.dim() != 4 or evidence.shape[0] != batch_size or evidence.shape[1] != num_classes:
        raise ValueError(
            f"a SoftCAM network must return evidence of shape (B, K, h, w) = ({batch_size}, {num_classes}, h, w) "
            f"matching its logits {tuple(logits.shape)}, got {tuple(evidence.shape)}"
        )
    if evidence.shape[2] == 0 or evidence.shape[3] == 0:
        raise ValueError(f"the evidence maps have an empty spatial size {tuple(evidence.shape[2:])}")
    return logits, evidence


# ---------------------------------------------------------------------------------------------- pooling
def pool_evidence(evidence: Tensor, pool: str = "avg", temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    r"""Pool evidence maps (B, K, h, w) into logits (B, K): the torch reference of the fused head.

    - ``"avg"``: $\frac{1}{hw}\sum_{ij} E_k(i,j)$ (the paper's choice);
    - ``"max"``: $\max_{ij} E_k(i,j)$;
    - ``"lse"``: $T\log\frac{1}{hw}\sum_{ij} e^{E_k(i,j)/T}$, between avg and max, tending to them as
      $T\to\infty$ and $T\to 0$. Computed as
      $m + T\,\mathrm{log1p}\big(\frac{1}{hw}\sum_{ij}\mathrm{expm1}((E_k(i,j) - m)/T)\big)$ with
      $m = \max_{ij} E_k(i,j)$, in at least float32: no exponential overflows (the arguments are
      $\le 0$), and unlike $T(\operatorname{logsumexp}(E/T) - \log hw)$, whose rounding error grows like
      $T\cdot$eps, it stays accurate to a few ulps for large T too (the log1p argument is at least
      $1/hw - 1$, so never $\log 0$).

    The result has the evidence's dtype.
    """
    pool, temperature = _check_pool(pool, temperature)
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        shape = tuple(evidence.shape) if isinstance(evidence, Tensor) else type(evidence).__name__
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {shape}")
    if pool == "avg":
        return evidence.mean(dim=(2, 3))
    if pool == "max":
        return evidence.amax(dim=(2, 3))
    flat = evidence.flatten(2)
    # half inputs are promoted: exp/log of bf16 values would lose the soft-max's precision
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    peak = flat.amax(dim=2, keepdim=True)
    soft = torch.log1p(torch.expm1((flat - peak) / temperature).mean(dim=2))
    return (peak.squeeze(2) + temperature * soft).to(evidence.dtype)


# ---------------------------------------------------------------------------------------------- dispatch
def head_kernel(function: str, backend: str | None, tensor: Tensor) -> Callable[..., Any] | None:
    """`fastcam.kernels.softcam_head.<function>` when the backend resolves to Triton, else None (torch path).

    "auto" falls back to torch when the kernel module (or that function) is not installed; an explicit
    "triton" raises instead. An import error *inside* an installed kernel module is never hidden.
    """
    if resolve_backend(backend, tensor) != "triton":
        return None
    try:
        module: ModuleType | None = importlib.import_module(HEAD_KERNEL_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != HEAD_KERNEL_MODULE:
            raise
        module = None
    kernel = getattr(module, function, None)
    if kernel is None and check_backend(backend) == "triton":
        raise RuntimeError(
            f"backend='triton' was asked for but the fused SoftCAM kernel {HEAD_KERNEL_MODULE}.{function} is not available"
        )
    return kernel


# ---------------------------------------------------------------------------------------------- modules
class EvidenceHead(nn.Module):
    """The SoftCAM head: a 1×1 convolution (with bias) to K signed evidence maps, pooled into logits.

    Args:
        in_channels: channels C of the backbone's last feature map.
        num_classes: K.
        pool: "avg" (paper), "max" or "lse" (see `pool_evidence`).
        temperature: T of the "lse" pooling (ignored by the others).
        backend: "auto" | "triton" | "torch" (None reads FASTCAM_BACKEND): "triton" runs the fused kernel
            `fastcam.kernels.softcam_head.evidence_head` (convolution and pooling in one pass, with its
            own backward), "auto" does so on CUDA tensors when the kernel is available.

    forward(features (B, C, h, w)) -> (logits (B, K), evidence (B, K, h, w)).
    """

    def __init__(self, in_channels: int, num_classes: int, pool: str = "avg",
                 temperature: float = DEFAULT_TEMPERATURE, backend: str | None = None) -> None:
        super().__init__()
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        self.pool, self.temperature = _check_pool(pool, temperature)
        self.backend = check_backend(backend) if backend is not None else None
        self.conv = nn.Conv2d(self.in_channels, self.num_classes, kernel_size=1, bias=True)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(features, Tensor) or features.dim() != 4:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"the SoftCAM backbone must output a 4-D (B, C, h, w) feature map, got {shape}")
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"the evidence head expects {self.in_channels} feature channels, the backbone gave {features.shape[1]}"
            )
        fused = head_kernel("evidence_head", self.backend, features)
        if fused is not None:
            # weight as (K, C): the 1×1 convolution is a matrix product over channels
            return fused(features, self.conv.weight.flatten(1), self.conv.bias, self.pool, self.temperature)
        evidence = self.conv(features)
        return pool_evidence(evidence, self.pool, self.temperature), evidence

    def extra_repr(self) -> str:
        temperature = f", temperature={self.temperature}" if self.pool == "lse" else ""
        return f"in_channels={self.in_channels}, num_classes={self.num_classes}, pool={self.pool!r}{temperature}"


class SoftCAMNet(nn.Module):
    """A self-explainable CNN: `backbone` (images -> (B, C, h, w)) then `head` (an `EvidenceHead`).

    forward(images) -> (logits (B, K), evidence (B, K, h, w)).
    """

    def __init__(self, backbone: nn.Module, head: EvidenceHead) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if not isinstance(head, EvidenceHead):
            raise TypeError(f"head must be an EvidenceHead, got {type(head).__name__}")
        self.backbone = backbone
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone(images))


# ---------------------------------------------------------------------------------------------- convert
_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _class_names(model: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(model).__mro__}


def _classifier_in_features(classifier: object, where: str) -> int:
    """in_features of the classifier: a Linear, or the first Linear of a replaced head (Dropout, Linear)."""
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)] if isinstance(classifier, nn.Module) else []
    if not linears:
        raise TypeError(f"{where} has no nn.Linear: cannot tell the feature channels; pass backbone= and in_channels=")
    return linears[0].in_features


def _resnet_parts(model: nn.Module) -> tuple[OrderedDict[str, nn.Module], int]:
    """torchvision ResNet/ResNeXt/Wide-ResNet: the trunk conv1 … layer4, in the order of its forward."""
    missing = [name for name in (*_RESNET_TRUNK, "fc") if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} does not have torchvision's ResNet layout (conv1, bn1, relu, maxpool, "
            f"layer1-4, avgpool, fc); missing: {missing}. Pass backbone= and in_channels= instead"
        )
    channels = _classifier_in_features(model.fc, f"{type(model).__name__}.fc")
    return OrderedDict((name, getattr(model, name)) for name in _RESNET_TRUNK), channels


def _vgg_parts(model: nn.Module) -> tuple[OrderedDict[str, nn.Module], int]:
    """torchvision VGG: `features` (its last convolution gives the channels)."""
    if not isinstance(getattr(model, "features", None), nn.Module):
        raise TypeError(f"{type(model).__name__} has no `features` module: not torchvision's VGG layout")
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise TypeError(f"{type(model).__name__}.features has no Conv2d: cannot tell its output channels")
    return OrderedDict(features=model.features), convs[-1].out_channels


def _densenet_parts(model: nn.Module) -> tuple[OrderedDict[str, nn.Module], int]:
    """torchvision DenseNet: `features` (the final ReLU of its forward is added by `convert`)."""
    if not isinstance(getattr(model, "features", None), nn.Module):
        raise TypeError(f"{type(model).__name__} has no `features` module: not torchvision's DenseNet layout")
    return OrderedDict(features=model.features), _classifier_in_features(
        getattr(model, "classifier", None), f"{type(model).__name__}.classifier"
    )


def _vgg_neck(channels: int, hidden: int, dropout: float) -> nn.Sequential:
    """The released code's stand-in for VGG's first two fully connected layers: 1×1 convs
    C -> hidden -> hidden with ReLU and Dropout, freshly initialised."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Conv2d(hidden, hidden, kernel_size=1), nn.ReLU(inplace=True), nn.Dropout(dropout),
    )


def _unwrap(model: nn.Module) -> nn.Module:
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, parallel) else model


def convert(
    model: nn.Module | None,
    num_classes: int,
    *,
    pool: str = "avg",
    temperature: float = DEFAULT_TEMPERATURE,
    backbone: nn.Module | None = None,
    in_channels: int | None = None,
    backend: str | None = None,
    vgg_hidden: int = 4096,
    vgg_dropout: float = 0.5,
) -> SoftCAMNet:
    """Turn a classifier into a SoftCAM network (copies; the given model is left untouched).

    Supported layouts (torchvision's; also `fastcam.models`):
      - ResNet / ResNeXt / Wide-ResNet: conv1 … layer4 kept, avgpool and fc dropped, 1×1 conv on layer4.
      - VGG: `features` kept, avgpool and classifier dropped; 1×1 convs C->`vgg_hidden`->`vgg_hidden` with
        ReLU and Dropout(`vgg_dropout`) freshly initialised (as the released code), then the 1×1 conv to K.
      - DenseNet: `features` and the final ReLU that torchvision's forward applies, then the 1×1 conv.
    Any other network: pass `model=None`, `backbone=` (images -> (B, C, h, w)) and `in_channels=C`.

    Only the kept layers are deep-copied (with their weights, buffers and per-module train/eval flags),
    so the backbone's outputs are bit-identical to the original model's; the head (and VGG's 1×1 neck)
    are freshly initialised on the model's device and dtype, in the model's train/eval mode.

    Args:
        model: the classifier to convert, or None with `backbone=`.
        num_classes: K, the number of evidence maps / logits.
        pool: "avg" (paper), "max" or "lse"; temperature: T of "lse".
        backend: the evidence head's backend ("auto" | "triton" | "torch", None reads FASTCAM_BACKEND).
    """
    num_classes = _check_positive_int(num_classes, "num_classes")
    pool, temperature = _check_pool(pool, temperature)
    if backend is not None:
        check_backend(backend)
    if backbone is not None:
        if model is not None:
            raise ValueError("give either a model to convert or backbone= with in_channels=, not both")
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if in_channels is None:
            raise ValueError("backbone= needs in_channels=, the channel count of the backbone's output")
        source, kind = backbone, "backbone"
        parts, channels = OrderedDict(backbone=backbone), _check_positive_int(in_channels, "in_channels")
    else:
        if model is None:
            raise TypeError("convert needs a model, or model=None with backbone= and in_channels=")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if in_channels is not None:
            raise ValueError("in_channels= is only used with backbone=; for a known model it is read from the model")
        source = _unwrap(model)
        names = _class_names(source)
        kind = next((k for k in ("ResNet", "VGG", "DenseNet") if k in names), None)
        if kind is None:
            raise TypeError(
                f"cannot convert {type(source).__name__}: supported are torchvision-layout ResNet/ResNeXt/"
                "Wide-ResNet, VGG and DenseNet; for another network pass model=None, backbone= (a module "
                "returning the (B, C, h, w) feature map) and in_channels=C"
            )
        parts, channels = {"ResNet": _resnet_parts, "VGG": _vgg_parts, "DenseNet": _densenet_parts}[kind](source)
    # one deepcopy of all kept parts together, so modules they share stay shared; the dropped classifier
    # is never copied
    kept = copy.deepcopy(nn.ModuleDict(parts))
    if kind == "backbone":
        trunk: nn.Module = kept["backbone"]
    elif kind == "ResNet":
        trunk = nn.Sequential(OrderedDict(kept.items()))
    elif kind == "VGG":
        hidden = _check_positive_int(vgg_hidden, "vgg_hidden")
        trunk = nn.Sequential(OrderedDict(features=kept["features"], neck=_vgg_neck(channels, hidden, _check_probability(vgg_dropout))))
        channels = hidden
    else:  # DenseNet: torchvision's forward applies F.relu(features, inplace=True) before pooling
        trunk = nn.Sequential(OrderedDict(features=kept["features"], relu=nn.ReLU(inplace=True)))
    net = SoftCAMNet(trunk, EvidenceHead(channels, num_classes, pool, temperature, backend))

    kept_ids = {id(m) for part in kept.values() for m in part.modules()}
    reference = next((p for p in source.parameters() if p.is_floating_point()), None)
    for module in net.modules():
        if id(module) in kept_ids:
            continue  # kept layers stay exactly as they were: device, dtype, train/eval flag
        if reference is not None and all(id(m) not in kept_ids for m in module.modules()):
            module.to(device=reference.device, dtype=reference.dtype)
        module.training = source.training
    return net


def _check_probability(p: object) -> float:
    value = _check_non_negative(p, "vgg_dropout")
    if value >= 1:
        raise ValueError(f"vgg_dropout must be in [0, 1), got {value}")
    return value


# ---------------------------------------------------------------------------------------------- penalty
def elastic_net(evidence: Tensor, l1: float, l2: float, first_only: bool = False) -> Tensor:
    r"""The paper's ElasticNet penalty on the evidence maps, a scalar tensor:

    $$ \frac{1}{B}\sum_b \Big(\lambda_1 \lVert E_b\rVert_1 + \lambda_2 \lVert E_b\rVert_2\Big), \qquad
       \lVert E_b\rVert_1 = \sum_{kij} |E_{bkij}|, \quad \lVert E_b\rVert_2 = \Big(\sum_{kij} E_{bkij}^2\Big)^{1/2} $$

    (the L2 term is the un-squared Frobenius norm of image b's K×h×w evidence). `first_only=True`
    penalises only the first image of the batch, as the released code does. Computed in at least
    float32; the L2 norm's gradient at an all-zero map is 0 (torch's convention), never NaN.
    """
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        shape = tuple(evidence.shape) if isinstance(evidence, Tensor) else type(evidence).__name__
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {shape}")
    if evidence.shape[0] == 0:
        raise ValueError("evidence is an empty batch (B = 0)")
    l1, l2 = _check_non_negative(l1, "l1"), _check_non_negative(l2, "l2")
    flat = evidence[:1] if first_only else evidence
    flat = flat.flatten(1)
    flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
    per_image = flat.new_zeros(flat.shape[0])
    if l1:
        per_image = per_image + l1 * flat.abs().sum(dim=1)
    if l2:
        per_image = per_image + l2 * torch.linalg.vector_norm(flat, ord=2, dim=1)
    return per_image.mean()


# ---------------------------------------------------------------------------------------------- checkpoints
def save(net: nn.Module, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
    """Write the network's weights (parameters and buffers) to a safetensors file; returns the path.

    Tensors shared between modules are stored once (safetensors' `save_model`).
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    from safetensors.torch import save_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, str(path), metadata={"format": "pt", "written_by": "fastcam.softcam", **(metadata or {})})
    return path


def load(net: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load weights written by `save` into `net` (in place, onto its devices); returns `net`.

    With `strict=True` (default) missing or unexpected tensors raise a RuntimeError naming them.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    from safetensors.torch import load_model

    load_model(net, str(path), strict=strict)
    return net


# ---------------------------------------------------------------------------------------------- training
_AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def _amp_dtype(amp: object) -> torch.dtype | None:
    if amp is None:
        return None
    if isinstance(amp, str) and amp in _AMP_DTYPES:
        return _AMP_DTYPES[amp]
    if amp in (torch.bfloat16, torch.float16):
        return amp  # type: ignore[return-value]
    raise ValueError(f"amp must be None, torch.bfloat16/'bf16' or torch.float16/'fp16', got {amp!r}")


def _batch(batch: object, device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError("each batch of the loader must be a pair (images (B, C, H, W), labels (B,))")
    images, labels = batch[0], batch[1]
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise TypeError("the loader's images must be a floating-point (B, C, H, W) tensor")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise TypeError(f"the loader's labels must be a 1-D tensor of B = {images.shape[0]} class indices")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"the loader's labels must be integer class indices, got dtype {labels.dtype}")
    return images.to(device, non_blocking=True), labels.to(device, dtype=torch.long, non_blocking=True)


def _clipped_cosine(lr: float, eta_min: float, t_max: int):  # noqa: ANN202 - a LambdaLR factor
    """The released code's clipped cosine: lr·½(1+cos(π·e/T_max)), never below eta_min, flat after T_max."""

    def factor(epoch: int) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(epoch, t_max) / t_max))
        return max(eta_min / lr, cosine)

    return factor


@torch.no_grad()
def _evaluate(net: nn.Module, loader: Iterable[Any], device: torch.device, amp: torch.dtype | None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a loader (eval mode; the caller restores the mode)."""
    net.eval()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for batch in loader:
        images, labels = _batch(batch, device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits, _ = check_softcam_output(net(images), images.shape[0])
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(dim=1) == labels).sum()
        count += images.shape[0]
    if count == 0:
        raise ValueError("val_loader yielded no batches")
    return float(total_loss) / count, float(correct) / count


def fit(
    net: nn.Module,
    train_loader: Iterable[Any],
    *,
    epochs: int,
    lr: float = 1e-3,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    l1: float = 0.0,
    l2: float = 4e-5,
    first_only: bool = False,
    t_max: int | None = None,
    eta_min: float = 1e-4,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    val_loader: Iterable[Any] | None = None,
    amp: str | torch.dtype | None = None,
    progress: bool = True,
    log_every: int = 20,
) -> dict[str, list[float]]:
    r"""Fine-tune a SoftCAM network with the paper's recipe.

    Loss per batch: cross-entropy(logits, labels) + `elastic_net(evidence, l1, l2, first_only)`
    (defaults λ1 = 0, λ2 = 4e-5: the released "dense" setting; `first_only=True` reproduces the
    released code's first-image-only penalty). SGD with Nesterov momentum 0.9, lr 1e-3, weight decay
    5e-4; per-epoch clipped cosine schedule $\eta_e = \max(\eta_{min}, \eta_0\,\tfrac12(1+\cos(\pi
    \min(e, T_{max})/T_{max})))$ with $T_{max}$ = `t_max` (default: `epochs`), as the released code.

    Args:
        net: returns (logits, evidence), e.g. from `convert`. Trained in place, moved to `device`
            (default: where its parameters are), left in the train/eval mode it was found in.
        train_loader / val_loader: iterables of (images, labels) batches.
        checkpoint_dir: if given, `last.safetensors` is written after each epoch, `best.safetensors`
            whenever the validation accuracy improves (needs `val_loader`), and `history.json`.
        amp: None, "bf16" or "fp16" (autocast; fp16 uses a gradient scaler).
        progress: show a tqdm progress bar; the running loss is synced to the host every `log_every` steps.

    Returns:
        history: per-epoch lists "epoch", "lr", "train_loss", "train_ce", "train_penalty", "train_acc" and,
        with `val_loader`, "val_loss" (cross-entropy) and "val_acc".
    """
    from tqdm.auto import tqdm

    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    epochs = _check_positive_int(epochs, "epochs")
    log_every = _check_positive_int(log_every, "log_every")
    t_max = epochs if t_max is None else _check_positive_int(t_max, "t_max")
    if _check_non_negative(lr, "lr") == 0:
        raise ValueError("lr must be positive")
    eta_min = _check_non_negative(eta_min, "eta_min")
    if eta_min > lr:
        raise ValueError(f"eta_min ({eta_min}) must not exceed lr ({lr})")
    l1, l2 = _check_non_negative(l1, "l1"), _check_non_negative(l2, "l2")
    amp_dtype = _amp_dtype(amp)
    if device is None:
        first = next(net.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the network has no trainable parameters (all requires_grad=False)")

    was_training = net.training
    net.to(device)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _clipped_cosine(lr, eta_min, t_max))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: dict[str, list[float]] = {k: [] for k in ("epoch", "lr", "train_loss", "train_ce", "train_penalty", "train_acc")}
    if val_loader is not None:
        history.update(val_loss=[], val_acc=[])
    best_acc = -1.0

    try:
        for epoch in range(1, epochs + 1):
            net.train()
            current_lr = optimizer.param_groups[0]["lr"]
            # running sums stay on the device: the host syncs only every `log_every` steps
            sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, ce, penalty (× batch size)
            correct = torch.zeros((), device=device, dtype=torch.long)
            count = 0
            total = len(train_loader) if hasattr(train_loader, "__len__") else None  # type: ignore[arg-type]
            bar = tqdm(train_loader, total=total, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
            for step, batch in enumerate(bar, start=1):
                images, labels = _batch(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits, evidence = check_softcam_output(net(images), images.shape[0])
                ce = F.cross_entropy(logits.float(), labels)
                penalty = elastic_net(evidence, l1, l2, first_only)
                loss = ce + penalty
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

                batch_size = images.shape[0]
                sums += torch.stack([loss.detach(), ce.detach(), penalty.detach()]).double() * batch_size
                correct += (logits.detach().argmax(dim=1) == labels).sum()
                count += batch_size
                if step % log_every == 0:
                    running = float(sums[0]) / count
                    if not math.isfinite(running):
                        raise FloatingPointError(f"training diverged at epoch {epoch}, step {step}: loss is {running}")
                    bar.set_postfix(loss=f"{running:.4f}", lr=f"{current_lr:.2e}")
            bar.close()
            if count == 0:
                raise ValueError("train_loader yielded no batches")

            loss_sum, ce_sum, penalty_sum = (float(v) / count for v in sums.tolist())
            if not math.isfinite(loss_sum):
                raise FloatingPointError(f"training diverged in epoch {epoch}: loss is {loss_sum}")
            history["epoch"].append(epoch)
            history["lr"].append(current_lr)
            history["train_loss"].append(loss_sum)
            history["train_ce"].append(ce_sum)
            history["train_penalty"].append(penalty_sum)
            history["train_acc"].append(float(correct) / count)
            scheduler.step()

            message = f"epoch {epoch}/{epochs}: loss {loss_sum:.4f}, acc {history['train_acc'][-1]:.3f}"
            improved = False
            if val_loader is not None:
                val_loss, val_acc = _evaluate(net, val_loader, device, amp_dtype)
                history["val_loss"].append(val_loss)
                history["val_acc"].append(val_acc)
                improved = val_acc > best_acc
                best_acc = max(best_acc, val_acc)
                message += f", val loss {val_loss:.4f}, val acc {val_acc:.3f}"
            if checkpoints is not None:
                save(net, checkpoints / "last.safetensors", {"epoch": str(epoch)})
                if improved:
                    save(net, checkpoints / "best.safetensors", {"epoch": str(epoch), "val_acc": f"{best_acc:.6f}"})
                (checkpoints / "history.json").write_text(json.dumps(history, indent=1))
            if progress:
                tqdm.write(message)
    finally:
        net.train(was_training)
    return history
