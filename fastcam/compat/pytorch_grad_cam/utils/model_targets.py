"""pytorch-grad-cam's `pytorch_grad_cam.utils.model_targets`: per-image target objects, and how the
compat explainers turn a list of them into one batched fastcam target (`fastcam.targets`).

Each class is called as pytorch-grad-cam calls it, on one image's row of the model output, and gives the
same value. The explainers of `fastcam.compat.pytorch_grad_cam` do not call them per image: a list whose
objects are all of one kind below becomes one batched fastcam target (`to_fastcam_target`), e.g. B
`ClassifierOutputTarget`s one `fastcam.targets.ClassTarget` of B classes. Any other list (other
callables, or kinds mixed) is called per image, correctly and more slowly, with one warning.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fastcam.targets import BinaryTarget, ClassTarget, SegmentationTarget, SimilarityTarget, Target, primary_tensor

__all__ = [
    "BinaryClassifierOutputTarget", "ClassifierOutputReST", "ClassifierOutputSoftmaxTarget", "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget", "FinerWeightedTarget", "RawScoresOutputTarget", "SemanticSegmentationTarget",
    "SimilarityToConceptTarget", "SoftmaxOutputTarget", "to_fastcam_target",
]


class ClassifierOutputTarget:
    """The logit of `category`."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        if len(model_output.shape) == 1:
            return model_output[self.category]
        return model_output[:, self.category]


class ClassifierOutputSoftmaxTarget:
    """The softmax probability of `category`."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        if len(model_output.shape) == 1:
            return torch.softmax(model_output, dim=-1)[self.category]
        return torch.softmax(model_output, dim=-1)[:, self.category]


class ClassifierOutputReST:
    """ReST (arXiv:2501.06261): the logit of `category` minus its cross-entropy loss."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        rows = model_output.unsqueeze(0) if model_output.dim() == 1 else model_output
        labels = torch.full((rows.shape[0],), int(self.category), device=rows.device, dtype=torch.long)
        value = rows[:, self.category] - F.cross_entropy(rows, labels, reduction="none")
        return value[0] if model_output.dim() == 1 else value


class BinaryClassifierOutputTarget:
    """A single-logit binary head: the logit for `category` 1, minus the logit otherwise."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output * (1 if self.category == 1 else -1)


class SoftmaxOutputTarget:
    """Every class's softmax probability (a vector: for metrics, not for one explanation)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """The model's raw output (a vector: for metrics, or a model with one output per image)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output


class SemanticSegmentationTarget:
    """The sum of `category`'s scores over the pixels of a binary `mask` (a numpy (H, W) array)."""

    def __init__(self, category: int, mask: np.ndarray) -> None:
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: Tensor) -> Tensor:
        return (model_output[self.category, :, :] * self.mask.to(model_output.device)).sum()


class SimilarityToConceptTarget:
    """The cosine similarity of an embedding to a concept's `features` (D,) (pytorch-grad-cam's
    embeddings tutorial defines it; 1.5.7's package does not ship it)."""

    def __init__(self, features: Tensor) -> None:
        self.features = features

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.nn.CosineSimilarity(dim=0)(model_output, self.features)


class FasterRCNNBoxScoreTarget:
    """Not available: fastcam explains classifiers, segmentation and embedding models, not detectors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "FasterRCNNBoxScoreTarget (object detection) is not implemented in fastcam; explain the detector's "
            "backbone with a fastcam.targets.FunctionTarget of its output, or use pytorch-grad-cam for detectors"
        )


class FinerWeightedTarget:
    """Not available: FinerCAM's target (see `fastcam.compat.pytorch_grad_cam.FinerCAM`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "FinerWeightedTarget (FinerCAM) is not implemented in fastcam; a contrast of classes is a "
            "fastcam.targets.FunctionTarget, e.g. lambda out: out[:, main] - alpha * out[:, other]"
        )


class _ClassScores(Target):
    """A class per image scored by a function of the (B, K) scores and the (B,) classes: the batched form
    of `ClassifierOutputSoftmaxTarget` and `ClassifierOutputReST`."""

    def __init__(self, classes: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.classes, self.fn = classes, fn

    def score(self, output: Any) -> Tensor:
        logits = primary_tensor(output)
        return self.fn(logits, self.classes.to(logits.device))

    def select(self, index: Tensor) -> "_ClassScores":
        return _ClassScores(self.classes.index_select(0, index.to(self.classes.device)), self.fn)


def _softmax_scores(logits: Tensor, classes: Tensor) -> Tensor:
    return torch.softmax(logits, dim=-1).gather(1, classes[:, None])[:, 0]


def _rest_scores(logits: Tensor, classes: Tensor) -> Tensor:
    return logits.gather(1, classes[:, None])[:, 0] - F.cross_entropy(logits, classes, reduction="none")


class _PerImage(Target):
    """The fallback: each image's callable on its row of the output, one by one (pytorch-grad-cam's way)."""

    def __init__(self, callables: Sequence[Callable[[Tensor], Tensor]]) -> None:
        self.callables = list(callables)

    def score(self, output: Any) -> Tensor:
        rows = primary_tensor(output)
        if rows.shape[0] != len(self.callables):
            raise ValueError(f"{len(self.callables)} targets for a model output of {rows.shape[0]} images")
        values = []
        for index, (target, row) in enumerate(zip(self.callables, rows)):
            value = target(row)
            if not isinstance(value, Tensor) or value.numel() != 1:
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(
                    f"target {index} ({type(target).__name__}) must give one score per image, got {got}: an "
                    "explanation needs a scalar target (RawScoresOutputTarget and SoftmaxOutputTarget give vectors)"
                )
            values.append(value.reshape(()))
        return torch.stack(values)

    def select(self, index: Tensor) -> "_PerImage":
        return _PerImage([self.callables[i] for i in index.tolist()])


def _one_kind(targets: Sequence[object]) -> type | None:
    kinds = {type(t) for t in targets}
    return kinds.pop() if len(kinds) == 1 else None


def _classes(targets: Sequence[Any]) -> Tensor:
    return torch.as_tensor([int(t.category) for t in targets], dtype=torch.long)


def to_fastcam_target(targets: Sequence[Callable[[Tensor], Tensor]] | None, batch: int) -> Target | None:
    """The batched fastcam target of pytorch-grad-cam's per-image `targets` for a batch of `batch` images.

    Args:
        targets: one callable per image, as pytorch-grad-cam takes them, or None (the predicted class).
        batch: the number of images explained.

    Returns:
        None for None; one `fastcam.targets.Target` for the whole batch otherwise: batched when every object
        is of one kind of this module (and, for the binary and segmentation targets, of one category), else
        the callables run per image, with a warning.

    Raises:
        ValueError: when there is not exactly one target per image.
    """
    if targets is None:
        return None
    targets = list(targets)
    if len(targets) != batch:
        raise ValueError(f"targets must hold one target per image: {len(targets)} targets for {batch} images")
    kind = _one_kind(targets)
    if kind is ClassifierOutputTarget:
        return ClassTarget(_classes(targets))
    if kind is ClassifierOutputSoftmaxTarget:
        return _ClassScores(_classes(targets), _softmax_scores)
    if kind is ClassifierOutputReST:
        return _ClassScores(_classes(targets), _rest_scores)
    categories = {getattr(t, "category", None) for t in targets}
    if kind is BinaryClassifierOutputTarget and len(categories) == 1:
        return BinaryTarget(positive=categories.pop() == 1)
    if kind is SemanticSegmentationTarget and len(categories) == 1:
        masks = [t.mask for t in targets]
        same = all(m is masks[0] or (m.shape == masks[0].shape and torch.equal(m, masks[0])) for m in masks)
        return SegmentationTarget(int(categories.pop()), masks[0] if same else torch.stack(masks))
    if kind is SimilarityToConceptTarget:
        return SimilarityTarget(torch.stack([torch.as_tensor(t.features).detach() for t in targets]))
    warnings.warn(
        "fastcam.compat.pytorch_grad_cam: these targets are not all of one known kind (ClassifierOutputTarget, "
        "SemanticSegmentationTarget of one category, ...), so each is called on its image's output in turn: "
        "correct, but slower than one batched target (see fastcam.targets)", RuntimeWarning, stacklevel=5,  # the caller of the CAM
    )
    return _PerImage(targets)
