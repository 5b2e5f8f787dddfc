"""The SoftCAM modules: the evidence head and the self-explainable network, and the output contract."""
from __future__ import annotations

from torch import Tensor, nn

from fastcam._backend import check_backend, op, resolve_backend
from fastcam._validation import check_logits
from fastcam.ops import pool_evidence
from fastcam.ops._checks import check_int, check_pool
from fastcam.ops.softcam import DEFAULT_TEMPERATURE


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


class EvidenceHead(nn.Module):
    """The SoftCAM head: a 1×1 convolution (with bias) to K signed evidence maps, pooled into logits.

    Args:
        in_channels: channels C of the backbone's last feature map.
        num_classes: K.
        pool: "avg" (paper), "max" or "lse" (see `pool_evidence`).
        temperature: T of the "lse" pooling (ignored by the others).
        backend: "auto" | "triton" | "torch" (None reads FASTCAM_BACKEND): "triton" runs the fused kernel
            `fastcam.kernels.softcam_head.evidence_head` (convolution and pooling in one pass, with its
            own backward), "auto" does so on CUDA tensors (`fastcam._backend`).

    forward(features (B, C, h, w)) -> (logits (B, K), evidence (B, K, h, w)).
    """

    def __init__(self, in_channels: int, num_classes: int, pool: str = "avg",
                 temperature: float = DEFAULT_TEMPERATURE, backend: str | None = None) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, low=1)
        self.num_classes = check_int("num_classes", num_classes, low=1)
        self.pool, self.temperature = check_pool(pool, temperature)
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
        if resolve_backend(self.backend, features) == "triton":
            # weight as (K, C): the 1×1 convolution is a matrix product over channels
            return op("evidence_head", "triton")(features, self.conv.weight.flatten(1), self.conv.bias, self.pool, self.temperature)
        # the module's own path: its convolution in its dtype (autocast applies), then the pooling reference
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
