"""What one `fastcam serve` replica does with requests, without Ray: check, decode, explain in batches, answer.

`ServeOptions` is what `fastcam explain` takes about the model and the method (spec, weights, layer, method
and its arguments, reshape, preprocessing, amp, device) plus the serving limits. `ExplainEngine` loads the
model once and turns requests into answers in three steps, so the Ray deployment (`fastcam.serve.app`) only
routes, batches and counts:

1. `check(content_type, content_length, query)`: the cheap refusals (415, 413, 422) before the body is read;
2. `decode(body, query)`: the image through `fastcam.io.images.decode_image` (400, 413) and the model's
   preprocessing, one `Job`;
3. `explain(jobs)`: one batch of jobs through the explainer (`fastcam.pipeline`'s non-finite and
   out-of-memory handling), one `Answer` or `RequestError` (422 for a non-finite explanation) per job; then
   `render(job, answer)` gives the JSON or the overlay PNG.

A request's problem is a `RequestError` with its HTTP status and a message that names it; nothing else a
client sends reaches the model.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from fastcam.io.images import MAX_PIXELS
from fastcam.methods.registry import get_method

#: the query parameters of POST /explain
FORMATS = ("json", "png")
#: media types a body may be sent as (besides any image/*); a request without one is taken as a byte
#: stream (RFC 9110, 8.3: a recipient may assume application/octet-stream)
BODY_TYPES = ("application/dicom", "application/octet-stream")
#: how many classes the JSON answer lists, most probable first
TOP_CLASSES = 5


class RequestError(Exception):
    """A request the service refuses: the HTTP status, a short kind (the errors counter's tag) and the message.

    Attributes:
        status: 400 (not an image), 413 (too large), 415 (content type), 422 (query or explanation).
        kind: "bad_image", "too_large", "unsupported_type", "bad_query", "non_finite", "not_found",
            "method_not_allowed".
        message: what is wrong, in words a client can act on.
    """

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class ServeOptions:
    """What a `fastcam serve` replica explains with, and its limits.

    Attributes:
        model: a model spec (`fastcam.models.load_model`: torchvision:, timm:, hf:, fastcam:, module:factory).
        layer: the target layer, a dotted module name (not used by methods that are not post-hoc).
        method: a registered method id (`fastcam.methods.registry`).
        weights: safetensors file or state dict of the model (of the SoftCAM network for softcam).
        num_classes: classes of the model (builders and torchvision).
        in_channels: input channels (fastcam.models builders).
        method_kwargs: extra keyword arguments of the method's constructor.
        reshape: a `fastcam.reshape.from_spec` layout for layers that are not (B, C, h, w) maps.
        size: model input size, one side or (H, W); default: the spec's own preprocessing.
        mean: normalisation mean per channel (default: the spec's).
        std: normalisation std per channel (default: the spec's).
        amp: None, "bf16" or "fp16": autocast the model's forward passes.
        device: "cpu", "cuda", "cuda:1"; default cuda when available.
        classes: class names, index order (the JSON answer names the top classes with them).
        max_batch_size: most requests explained in one batch.
        batch_wait_ms: longest a request waits for others to join its batch.
        max_body_mb: largest request body accepted, in MiB.
        max_pixels: most pixels an uploaded image may decode to (decompression bombs).
        colormap: matplotlib colormap of the PNG overlays.
        alpha: opacity of the map in the PNG overlays.
    """

    model: str
    layer: str | None = None
    method: str = "gradcam"
    weights: str | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    method_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reshape: str | None = None
    size: int | tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    amp: str | None = None
    device: str | None = None
    classes: tuple[str, ...] | None = None
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    max_body_mb: float = 32.0
    max_pixels: int = MAX_PIXELS
    colormap: str = "jet"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        get_method(self.method)  # an unknown method is refused before anything loads
        for name in ("max_batch_size", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.batch_wait_ms >= 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}")
        if not self.max_body_mb > 0:
            raise ValueError(f"max_body_mb must be > 0, got {self.max_body_mb!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha!r}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass
class Job:
    """One checked, decoded request: the model input (C, H, W), the image as shown (before normalisation),
    the class asked for (None: the predicted one) and the answer's format."""

    image: Tensor
    shown: Tensor
    target: int | None
    format: str


@dataclass
class Answer:
    """One explained image: maps (H, W) in [0, 1], lowres (h, w) after ReLU, logits (K,), the class explained."""

    maps: Tensor
    lowres: Tensor
    logits: Tensor
    target: int


def read_classes(text: str) -> tuple[str, ...]:
    """Class names from a file's text: a JSON list, or one name per line (blank lines ignored)."""
    import json

    stripped = text.strip()
    if stripped.startswith("["):
        names = json.loads(stripped)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("a JSON classes file must hold one list of strings")
        return tuple(names)
    return tuple(line.strip() for line in stripped.splitlines() if line.strip())


class ExplainEngine:
    """The model, its preprocessing and its explainer, loaded once; turns requests into answers.

    Args:
        options: what to load and the limits.
    """

    def __init__(self, options: ServeOptions) -> None:
        from fastcam._validation import expected_in_channels
        from fastcam.io.images import Preprocess
        from fastcam._device import AMP_DTYPES
        from fastcam.models import load_model
        from fastcam.pipeline import make_explainer
        from fastcam.targets import primary_tensor

        self.options = options
        info = get_method(options.method)
        loaded = load_model(options.model, options.weights, options.num_classes, options.in_channels,
                            softcam=not info.post_hoc)
        model, defaults = loaded
        self.random_weights = bool(defaults.get("random_weights"))
        self.preprocess = Preprocess.for_model(expected_in_channels(model) or 3, defaults, options.size,
                                               options.mean, options.std, processor=loaded.processor)
        if self.preprocess.size is None:
            raise ValueError(f"model {options.model!r} has no input size of its own: give one (--size H W), so "
                             "that images of any size can be explained together")
        kwargs = dict(options.method_kwargs)
        if options.reshape is not None:
            from fastcam.models.specs import prefix_tokens
            from fastcam.reshape import from_spec

            kwargs["reshape_transform"] = from_spec(options.reshape, prefix_tokens=prefix_tokens(model))
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.amp = AMP_DTYPES[options.amp]
        self.model = model.to(self.device).eval()
        self.explainer = make_explainer(self.model, options.method, options.layer, kwargs)
        self.layer = getattr(self.explainer, "layer_name", options.layer)
        with torch.no_grad():  # the class count (target checks) and a warm-up
            blank = torch.zeros(1, self.preprocess.channels, *self.preprocess.size, device=self.device)
            self.num_classes = int(primary_tensor(self.model(blank)).shape[-1])
        if options.classes is not None and len(options.classes) != self.num_classes:
            raise ValueError(f"{len(options.classes)} class names given for a model with {self.num_classes} classes")
        self._oom_state: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------ describing
    def info(self) -> dict[str, Any]:
        """What GET / answers: the model, the method, the layer, the input size and the classes."""
        import fastcam

        info = get_method(self.options.method)
        return {"model": self.options.model, "weights": self.options.weights, "random_weights": self.random_weights,
                "method": info.name, "method_name": info.display_name, "layer": self.layer,
                "input_size": list(self.preprocess.size or ()), "channels": self.preprocess.channels,
                "num_classes": self.num_classes,
                "classes": list(self.options.classes) if self.options.classes else None,
                "max_batch_size": self.options.max_batch_size, "max_body_mb": self.options.max_body_mb,
                "max_pixels": self.options.max_pixels, "fastcam": fastcam.__version__}

    # ------------------------------------------------------------------------------------------ requests
    def check(self, content_type: str | None, content_length: str | None,
              query: Mapping[str, str]) -> tuple[int | None, str]:
        """The refusals that need no body: (target, format) of an acceptable request.

        Raises:
            RequestError: 415 for a content type that is not an image, 413 for a declared length over the
                limit, 422 for a query that is not `target=INT` and `format=json|png`.
        """
        media = (content_type or BODY_TYPES[1]).split(";")[0].strip().lower()
        if not (media.startswith("image/") or media in BODY_TYPES):
            raise RequestError(415, "unsupported_type", f"unsupported content type {media!r}: send one image file "
                               f"as image/* (PNG, JPEG, TIFF, BMP), {' or '.join(BODY_TYPES)}")
        if content_length is not None and content_length.isdigit():
            self._check_length(int(content_length))
        unknown = sorted(set(query) - {"target", "format"})
        if unknown:
            raise RequestError(422, "bad_query", f"unknown query parameter(s) {unknown}: POST /explain takes "
                               "target=INT and format=json|png")
        fmt = query.get("format", "json")
        if fmt not in FORMATS:
            raise RequestError(422, "bad_query", f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return self._target(query.get("target")), fmt

    def _check_length(self, length: int) -> None:
        if length > self.options.max_body_bytes:
            raise RequestError(413, "too_large", f"the body has {length:,} bytes, more than the limit of "
                               f"{self.options.max_body_mb:g} MiB ({self.options.max_body_bytes:,} bytes)")

    def _target(self, text: str | None) -> int | None:
        if text is None:
            return None
        if not re.fullmatch(r"[+-]?\d+", text.strip()):
            raise RequestError(422, "bad_query", f"target must be an integer class index, got {text!r}")
        target = int(text)
        if not 0 <= target < self.num_classes:
            raise RequestError(422, "bad_query", f"target {target} is out of range for a model with "
                               f"{self.num_classes} classes (0 to {self.num_classes - 1})")
        return target

    def decode(self, body: bytes, target: int | None, fmt: str) -> Job:
        """The image of a request body, preprocessed for the model.

        Args:
            body: the whole request body (one image file).
            target: the class asked for (from `check`), None for the predicted one.
            fmt: "json" or "png" (from `check`).

        Raises:
            RequestError: 413 for a body or an image over the limits, 400 for an empty body or bytes that do
                not decode as an image.
        """
        from fastcam.errors import ImageTooLargeError
        from fastcam.io.images import decode_image

        self._check_length(len(body))
        if not body:
            raise RequestError(400, "bad_image", "empty body: send one image file (PNG, JPEG, TIFF, BMP or DICOM)")
        try:
            image = decode_image(body, max_pixels=self.options.max_pixels)
        except ImageTooLargeError as exc:
            raise RequestError(413, "too_large", f"image too large: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the decoders raise, the bytes are not a readable image
            raise RequestError(400, "bad_image", f"not a readable image (PNG, JPEG, TIFF, BMP or DICOM): "
                               f"{type(exc).__name__}: {exc}") from None
        shown = self.preprocess.display(image)
        return Job(self.preprocess.normalize(shown), shown, target, fmt)

    def explain(self, jobs: Sequence[Job]) -> list[Answer | RequestError]:
        """Explain a batch of jobs: the predicted-class jobs in one call, those with a class in another.

        An image whose explanation is non-finite gets a 422 `RequestError` naming what was non-finite; the
        other images of its batch are explained as if it had not been there.
        """
        from fastcam.pipeline.explain import explain_finite

        answers: list[Answer | RequestError | None] = [None] * len(jobs)
        for given in (False, True):
            rows = [i for i, job in enumerate(jobs) if (job.target is not None) == given]
            if not rows:
                continue
            images = torch.stack([jobs[i].image for i in rows]).to(self.device)
            targets = torch.tensor([jobs[i].target for i in rows], device=self.device) if given else None
            kept, explained, dropped = explain_finite(self.explainer, images, targets, self.amp, self._oom_state)
            for row, reason in dropped.items():
                answers[rows[row]] = RequestError(422, "non_finite",
                                                  f"the explanation is non-finite: {reason} contain NaN or Inf")
            if explained is not None:
                maps, lowres, logits, classes = (t.detach().float().cpu() for t in explained)
                for j, row in enumerate(kept.tolist()):
                    answers[rows[row]] = Answer(maps[j], lowres[j], logits[j], int(classes[j]))
        return [a if a is not None else RequestError(422, "non_finite", "the explanation is non-finite")
                for a in answers]

    # ------------------------------------------------------------------------------------------ answers
    def render(self, job: Job, answer: Answer) -> tuple[bytes, str]:
        """(body, media type) of an answer: the JSON document, or the overlay PNG for format=png."""
        if job.format == "png":
            from PIL import Image

            from fastcam.io.overlay import overlay_rgb

            rgb = overlay_rgb(job.shown[None], answer.maps[None], self.options.colormap, self.options.alpha)[0]
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="PNG")
            return buffer.getvalue(), "image/png"
        import json

        return json.dumps(self.document(answer)).encode(), "application/json"

    def document(self, answer: Answer) -> dict[str, Any]:
        """The JSON answer: target, predicted, top classes, the normalised lowres map and its shape, provenance."""
        import fastcam

        peak = answer.lowres.max()
        lowres = answer.lowres / peak if peak > 0 else answer.lowres  # an all-zero map stays zero
        probabilities = torch.softmax(answer.logits.double(), dim=0)
        top = torch.topk(probabilities, min(TOP_CLASSES, probabilities.numel()))
        names = self.options.classes
        return {
            "target": answer.target,
            "predicted": int(answer.logits.argmax()),
            "probabilities": [{"class": int(k), **({"name": names[int(k)]} if names else {}), "probability": float(p)}
                              for p, k in zip(top.values, top.indices)],
            "lowres": lowres.tolist(),
            "shape": list(lowres.shape),
            "method": self.options.method,
            "model": self.options.model,
            "fastcam": fastcam.__version__,
        }
