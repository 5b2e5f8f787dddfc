"""`convert`: a torchvision-layout classifier (or any backbone) into a SoftCAM network."""
from __future__ import annotations

import copy
from collections import OrderedDict

from torch import nn

from fastcam._backend import check_backend
from fastcam.ops._checks import check_int, check_pool, check_real
from fastcam.ops.softcam import DEFAULT_TEMPERATURE
from fastcam.softcam.modules import EvidenceHead, SoftCAMNet

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
    num_classes = check_int("num_classes", num_classes, low=1)
    pool, temperature = check_pool(pool, temperature)
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
        parts, channels = OrderedDict(backbone=backbone), check_int("in_channels", in_channels, low=1)
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
        hidden = check_int("vgg_hidden", vgg_hidden, low=1)
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
    value = check_real("vgg_dropout", p, low=0, high=1)
    if value == 1:
        raise ValueError(f"vgg_dropout must be in [0, 1), got {value}")
    return value
