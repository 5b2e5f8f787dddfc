r"""What an explanation explains: a differentiable score per image, computed from the model's output.

Every method takes `targets=` as class indices (None = the predicted class, an int, a sequence or a 1-D
tensor, as before) or as a **target**: a callable `target(output) -> (B,)` scores, where `output` is
whatever the model returns (a tensor, a tuple, a Hugging Face `ModelOutput`). The ready ones:

- `ClassTarget(k)`: the class score $y_k$ (logit). Its probability is softmax$(y)_k$, or sigmoid$(y_0)$
  for a single-logit model (softmax over one class would be 1 for every input).
- `BinaryTarget(positive=True)`: a single-logit binary head; positive evidence explains $z$, negative
  evidence $-z$; probability sigmoid$(\pm z)$.
- `MultiLabelTarget(classes)`: the sum of several classes' logits; probability = the mean of their sigmoids
  (multi-label heads score classes independently).
- `SegmentationTarget(category, mask)`: $\sum_{ij} m_{ij}\, y_{k,ij}$ over a semantic segmentation output
  (B, K, H, W); probability = the mean softmax probability of the class inside the mask.
- `SimilarityTarget(reference)`: the cosine similarity of an embedding output (B, D) to a reference
  embedding ((D,) or (B, D)); it has no probability, so scoring methods use the similarity itself.

Gradient methods differentiate `score`; Score-CAM and the faithfulness metrics use `probability` (a
target without one: its score). A plain callable is wrapped in `FunctionTarget`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcam._validation import check_has_values, check_logits, resolve_targets

__all__ = [
    "BinaryTarget", "ClassTarget", "FunctionTarget", "MultiLabelTarget", "SegmentationTarget", "SimilarityTarget",
    "Target", "primary_tensor",
]


#: the keys of a mapping output that hold its main tensor, in order: Hugging Face `ModelOutput.logits`,
#: torchvision segmentation models' "out"
PRIMARY_KEYS = ("logits", "out")


def primary_tensor(output: Any) -> Tensor:
    """The main tensor of a model output: a tensor, the first element of a tuple/list, or a mapping's
    (e.g. a Hugging Face `ModelOutput`'s) "logits" (torchvision segmentation models: "out")."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        for key in PRIMARY_KEYS:
            if isinstance(output.get(key), Tensor):
                return output[key]
    elif not isinstance(output, (str, bytes)) and isinstance(getattr(output, "logits", None), Tensor):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    keys = f" with keys {list(output)[:8]}" if isinstance(output, Mapping) else ""
    raise TypeError(
        f"cannot find the output tensor in a {type(output).__name__}{keys}: pass output_fn= to the explainer "
        "(a function from the model's output to the scores, e.g. lambda out: out['scores']), or give a target "
        "that is a function of the whole output"
    )


class Target:
    """A score per image. Subclasses define `score`; `probability` defaults to the score.

    Attributes:
        classes: (B,) int64 class explained per image when the target is one class per image (reported as
            `Explanation.targets`), else None.
    """

    classes: Tensor | None = None

    def __call__(self, output: Any) -> Tensor:
        return self.score(output)

    def score(self, output: Any) -> Tensor:
        """(B,) differentiable scores."""
        raise NotImplementedError

    def probability(self, output: Any) -> Tensor:
        """(B,) the score as a probability where one is defined (Score-CAM, faithfulness), else the score."""
        return self.score(output)

    def select(self, index: Tensor) -> "Target":
        """The same target for the images `index` of the batch (Score-CAM's packed masked forwards)."""
        return self


def _per_image(values: Tensor | None, index: Tensor) -> Tensor | None:
    return None if values is None or values.dim() == 0 else values.index_select(0, index.to(values.device))


class ClassTarget(Target):
    """The score of one class per image: `classes` is an int (every image) or (B,) int64 indices."""

    def __init__(self, classes: int | Sequence[int] | Tensor) -> None:
        if isinstance(classes, bool):
            raise TypeError("ClassTarget takes class indices, got bool")
        self._classes = check_has_values(classes, "ClassTarget's classes") if isinstance(classes, Tensor) else torch.as_tensor(classes, dtype=torch.long)
        if self._classes.is_floating_point() or self._classes.dtype == torch.bool or self._classes.dim() > 1:
            raise TypeError(f"ClassTarget takes an int or a 1-D tensor of integer class indices, got {self._classes.dtype} "
                            f"of shape {tuple(self._classes.shape)}")

    @property
    def classes(self) -> Tensor | None:  # type: ignore[override]
        return self._classes if self._classes.dim() == 1 else None

    def _index(self, logits: Tensor) -> Tensor:
        index = self._classes.to(logits.device)
        return index.expand(logits.shape[0]) if index.dim() == 0 else index

    def score(self, output: Any) -> Tensor:
        logits = primary_tensor(output)
        return logits.gather(1, self._index(logits).unsqueeze(1)).squeeze(1)

    def probability(self, output: Any) -> Tensor:
        logits = primary_tensor(output).float()
        probabilities = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return probabilities.gather(1, self._index(logits).unsqueeze(1)).squeeze(1)

    def select(self, index: Tensor) -> "ClassTarget":
        selected = _per_image(self._classes, index)
        return self if selected is None else ClassTarget(selected)


class BinaryTarget(Target):
    """A single-logit binary classifier (output (B,) or (B, 1)): positive (z) or negative (-z) evidence."""

    def __init__(self, positive: bool = True) -> None:
        self.sign = 1.0 if positive else -1.0

    @staticmethod
    def _logit(output: Any) -> Tensor:
        z = primary_tensor(output)
        if z.dim() == 2 and z.shape[1] == 1:
            return z[:, 0]
        if z.dim() != 1:
            raise ValueError(f"BinaryTarget needs a single-logit output (B,) or (B, 1), got {tuple(z.shape)}")
        return z

    def score(self, output: Any) -> Tensor:
        return self.sign * self._logit(output)

    def probability(self, output: Any) -> Tensor:
        return torch.sigmoid(self.sign * self._logit(output).float())


class MultiLabelTarget(Target):
    """Several classes of a multi-label head at once: the sum of their logits (B, K) -> (B,)."""

    def __init__(self, classes: Sequence[int]) -> None:
        if not classes or not all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
            raise TypeError("MultiLabelTarget takes a non-empty sequence of int class indices")
        self.class_list = list(classes)

    def score(self, output: Any) -> Tensor:
        logits = primary_tensor(output)
        return logits[:, self.class_list].sum(dim=1)

    def probability(self, output: Any) -> Tensor:
        return torch.sigmoid(primary_tensor(output)[:, self.class_list].float()).mean(dim=1)


class SegmentationTarget(Target):
    r"""A class of a semantic segmentation output (B, K, H, W): $\sum_{ij} m_{ij}\, y_{k,ij}$.

    mask: (H, W) for every image or (B, H, W), at the output's resolution; None means every pixel.
    """

    def __init__(self, category: int, mask: Tensor | None = None) -> None:
        if isinstance(category, bool) or not isinstance(category, int):
            raise TypeError(f"category must be an int class index, got {type(category).__name__}")
        if mask is not None and (not isinstance(mask, Tensor) or mask.dim() not in (2, 3)):
            raise ValueError("mask must be an (H, W) or (B, H, W) tensor")
        self.category, self.mask = category, mask if mask is None else check_has_values(mask, "SegmentationTarget's mask values")

    def _weights(self, maps: Tensor) -> Tensor:
        if maps.dim() != 4:
            raise ValueError(f"SegmentationTarget needs a (B, K, H, W) output, got {tuple(maps.shape)}")
        if self.mask is None:
            return torch.ones_like(maps[:, 0])
        mask = self.mask.to(device=maps.device, dtype=maps.dtype)
        if mask.shape[-2:] != maps.shape[-2:]:
            raise ValueError(f"the mask {tuple(mask.shape)} does not match the output's {tuple(maps.shape[-2:])}")
        return mask.expand(maps.shape[0], *maps.shape[-2:])

    def score(self, output: Any) -> Tensor:
        maps = primary_tensor(output)
        return (maps[:, self.category] * self._weights(maps)).sum(dim=(1, 2))

    def probability(self, output: Any) -> Tensor:
        maps = primary_tensor(output).float()
        weights = self._weights(maps)
        inside = (torch.softmax(maps, dim=1)[:, self.category] * weights).sum(dim=(1, 2))
        return inside / weights.sum(dim=(1, 2)).clamp_min(torch.finfo(maps.dtype).tiny)

    def select(self, index: Tensor) -> "SegmentationTarget":
        if self.mask is None or self.mask.dim() == 2:
            return self
        return SegmentationTarget(self.category, self.mask.index_select(0, index.to(self.mask.device)))


class SimilarityTarget(Target):
    """The cosine similarity of an embedding output (B, D) to `reference` ((D,) or (B, D))."""

    def __init__(self, reference: Tensor) -> None:
        if not isinstance(reference, Tensor) or reference.dim() not in (1, 2):
            raise ValueError("reference must be a (D,) or (B, D) embedding tensor")
        self.reference = check_has_values(reference, "SimilarityTarget's reference values").detach()

    def score(self, output: Any) -> Tensor:
        embedding = primary_tensor(output)
        if embedding.dim() != 2 or embedding.shape[1] != self.reference.shape[-1]:
            raise ValueError(f"SimilarityTarget needs a (B, {self.reference.shape[-1]}) embedding, got {tuple(embedding.shape)}")
        reference = self.reference.to(device=embedding.device, dtype=embedding.dtype)
        return F.cosine_similarity(embedding, reference.expand_as(embedding), dim=1)

    def select(self, index: Tensor) -> "SimilarityTarget":
        return self if self.reference.dim() == 1 else SimilarityTarget(self.reference.index_select(0, index.to(self.reference.device)))


class FunctionTarget(Target):
    """A user function `fn(output) -> (B,)` as a target (no probability: scoring methods use the score).

    Score-CAM evaluates a target on subsets of the batch; a function whose result depends on which images
    it sees must be given as a `Target` subclass with its own `select`.
    """

    def __init__(self, fn: Callable[[Any], Tensor]) -> None:
        self.fn = fn

    def score(self, output: Any) -> Tensor:
        return self.fn(output)


def resolve_target(targets: Any, output: Any, batch: int) -> tuple[Target, Tensor | None]:
    """The `Target` of a call and the (B, K) class scores when the output has them.

    `output` is the model's output as the target sees it (after the explainer's `output_fn`). Class
    indices (None = predicted, int, sequence, 1-D tensor) need (B, K) scores and are validated against
    them; a `Target` or any callable is taken as given (a callable is wrapped in `FunctionTarget`).
    """
    if isinstance(targets, Target):
        target: Target = targets
    elif callable(targets) and not isinstance(targets, (Tensor, int, str, bytes)):
        target = FunctionTarget(targets)
    else:
        try:
            logits = check_logits(primary_tensor(output), batch)
        except TypeError as exc:
            raise TypeError(f"{exc}; for other outputs give a target (fastcam.targets) instead of class indices") from None
        except ValueError as exc:
            raise ValueError(
                f"{exc}. Class indices need (B, K) class scores; for other outputs give a target from "
                "fastcam.targets: SegmentationTarget for (B, K, H, W) segmentation maps, BinaryTarget for a (B,) "
                "single logit, SimilarityTarget for embeddings, or any function of the output"
            ) from None
        return ClassTarget(resolve_targets(targets, logits)), logits
    try:
        candidate = primary_tensor(output)
    except TypeError:
        candidate = None
    logits = candidate if isinstance(candidate, Tensor) and candidate.dim() == 2 and candidate.shape[0] == batch else None
    return target, logits


def check_scores(scores: object, batch: int) -> Tensor:
    """A target must return (B,) floating scores."""
    if not isinstance(scores, Tensor) or scores.shape != (batch,) or not scores.is_floating_point():
        got = f"{tuple(scores.shape)} {scores.dtype}" if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"a target must return (B,) = ({batch},) floating scores, got {got}")
    return scores


def repeat_output(output: Any, batch: int) -> Any:
    """A one-image model output broadcast to `batch` images (tensors, tuples/lists and mappings of them)."""
    if isinstance(output, Tensor):
        return output.expand(batch, *output.shape[1:])
    if isinstance(output, (tuple, list)):
        return type(output)(repeat_output(item, batch) if isinstance(item, Tensor) else item for item in output)
    if isinstance(output, Mapping):
        items = {k: repeat_output(v, batch) if isinstance(v, Tensor) else v for k, v in output.items()}
        try:
            return type(output)(**items)
        except TypeError:
            return dict(items)
    return output
