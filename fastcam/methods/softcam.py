r"""SoftCAM explanations (Djoumessi & Berens, MIDL 2026): read the class-evidence maps, no gradients.

A SoftCAM network (`fastcam.softcam.convert`) returns logits and signed evidence maps E (B, K, h, w);
the explanation of class t is

$$ L = \mathrm{ReLU}(E_t), \qquad \text{map} = \frac{\mathrm{up}(L)}{\max \mathrm{up}(L)} $$

with bilinear upsampling (align_corners=False) to the input size: one forward, nothing else.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fastcam._backend import check_backend
from fastcam._validation import TargetsLike, check_images, resolve_targets
from fastcam.explanation import Explanation
from fastcam.methods._combine import upsample_normalize
from fastcam.softcam import check_softcam_output, head_kernel


def evidence_maps(evidence: Tensor, targets: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Torch reference: lowres = ReLU(E[b, t_b]) (B, h, w) float32, maps = its upsampled, max-normalised
    version (B, H, W) float32 (an all-zero map stays zero)."""
    index = targets.view(-1, 1, 1, 1).expand(-1, 1, *evidence.shape[2:])
    lowres = torch.relu(evidence.gather(1, index).squeeze(1).float())
    return lowres, upsample_normalize(lowres, size)


class SoftCAM:
    """Explain a SoftCAM network from its own evidence maps.

    Args:
        net: a network returning `(logits (B, K), evidence (B, K, h, w))`, e.g. from
            `fastcam.softcam.convert`.
        backend: "auto" | "triton" | "torch" for the map step (gather, ReLU, upsample, normalise); None
            reads FASTCAM_BACKEND. The evidence head's own backend is set at `convert`.

    Same call contract as the post-hoc methods: `SoftCAM(net)(images, targets=None)` -> (B, H, W)
    float32 in [0, 1] on the images' device; `.explain(...)` -> `fastcam.Explanation`. The net runs
    once under `torch.no_grad()` in the mode it is in (call `net.eval()` first, as for any inference).
    No hooks are installed; `close()` and the context manager exist for the shared protocol.

    Example:
        >>> with fastcam.SoftCAM(fastcam.softcam.convert(model, 2).eval()) as cam:
        ...     maps = cam(images)
    """

    def __init__(self, net: nn.Module, *, backend: str | None = None) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.backend = check_backend(backend)
        self._closed = False

    def close(self) -> None:
        """Mark the explainer closed (idempotent); there are no hooks to remove."""
        self._closed = True

    def __enter__(self) -> "SoftCAM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SoftCAM(net={type(self.net).__name__}, backend={self.backend!r})"

    def __call__(self, images: Tensor, targets: TargetsLike = None) -> Tensor:
        """(B, H, W) float32 maps in [0, 1] on the images' device."""
        return self.explain(images, targets).maps

    def explain(self, images: Tensor, targets: TargetsLike = None) -> Explanation:
        """Explain a batch: maps (B, H, W), lowres = ReLU(E[b, t_b]) (B, h, w), logits (B, K), targets (B,)."""
        if self._closed:
            raise RuntimeError("SoftCAM was closed; create a new one")
        # the channel check reads the first convolution of the backbone (the head's conv comes last)
        backbone = getattr(self.net, "backbone", None)
        images = check_images(images, backbone if isinstance(backbone, nn.Module) else self.net)
        with torch.no_grad():
            output = self.net(images)
        logits, evidence = check_softcam_output(output, images.shape[0])
        target_idx = resolve_targets(targets, logits)
        size = (images.shape[-2], images.shape[-1])
        fused = head_kernel("softcam_maps", self.backend, evidence)
        # maps are computed in float32 even inside a caller's autocast region
        with torch.autocast(device_type=evidence.device.type, enabled=False):
            if fused is not None:
                lowres, maps = fused(evidence, target_idx, size, check_targets=False)  # resolve_targets validated them
            else:
                lowres, maps = evidence_maps(evidence, target_idx, size)
        return Explanation(maps=maps, lowres=lowres, logits=logits.detach().float(), targets=target_idx)
