r"""SoftCAM explanations (Djoumessi & Berens, MIDL 2026): read the class-evidence maps, no gradients.

A SoftCAM network (`fastcam.softcam.convert`) returns logits and signed evidence maps E (B, K, h, w);
the explanation of class t is

$$ L = \mathrm{ReLU}(E_t), \qquad \text{map} = \frac{\mathrm{up}(L)}{\max \mathrm{up}(L)} $$

with bilinear upsampling (align_corners=False) to the input size: one forward, nothing else.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fastcam._backend import check_backend, op, resolve_backend
from fastcam._validation import FiniteCheck, TargetsLike, check_image_batch, check_model_input, resolve_targets
from fastcam.explanation import Explanation
from fastcam.methods._capture import capture
from fastcam.methods.base import Explainer
from fastcam.softcam import check_softcam_output


class SoftCAM(Explainer):
    """SoftCAM: explain a SoftCAM network from its own evidence maps.

    From [Djoumessi & Berens, SoftCAM, MIDL 2026, arXiv 2505.17748](https://arxiv.org/abs/2505.17748).

    Args:
        net: a network returning `(logits (B, K), evidence (B, K, h, w))`, e.g. from
            `fastcam.softcam.convert`.
        backend: "auto" | "triton" | "torch" for the map step (gather, ReLU, upsample, normalise); None
            reads FASTCAM_BACKEND. The evidence head's own backend is set at `convert`.
        allow_train_mode: explain a network in training mode as it is (refused by default: call
            `net.eval()`).

    Same call contract as the post-hoc methods: `SoftCAM(net)(images, targets=None)` -> (B, H, W)
    float32 in [0, 1] on the images' device; `.explain(...)` -> `fastcam.Explanation`. The net runs
    once under `torch.no_grad()`. No hooks outlive the call.

    Example:
        >>> with fastcam.SoftCAM(fastcam.softcam.convert(model, 2).eval()) as cam:
        ...     maps = cam(images)
    """

    name = "softcam"

    def __init__(self, net: nn.Module, *, backend: str | None = None, allow_train_mode: bool = False) -> None:
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.backend = check_backend(backend)
        self.allow_train_mode = bool(allow_train_mode)

    def __repr__(self) -> str:
        return f"SoftCAM(net={type(self.net).__name__}, backend={self.backend!r})"

    def _explain(self, images: Tensor, targets: TargetsLike) -> Explanation:
        """Explain a batch: maps (B, H, W), lowres = ReLU(E[b, t_b]) (B, h, w), logits (B, K), targets (B,)."""
        images = check_image_batch(images)
        if images.dim() != 4:
            raise ValueError(f"SoftCAM networks take 4-D (B, C, H, W) images, got shape {tuple(images.shape)}")
        check_model_input(self.net, images, allow_train_mode=self.allow_train_mode)
        finite = FiniteCheck()
        finite.add("images (pixels)", images)
        with capture(self.net, (), record_after=False, images_channels=images.shape[1]), torch.no_grad():
            output = self.net(images)
        logits, evidence = check_softcam_output(output, images.shape[0])
        finite.add("the model's logits", logits)
        finite.add("the evidence maps", evidence)
        target_idx = resolve_targets(targets, logits)
        finite.raise_if_any()  # the call's one host sync
        backend = resolve_backend(self.backend, evidence)
        # maps are computed in float32 even inside a caller's autocast region
        with torch.autocast(device_type=evidence.device.type, enabled=False):
            # resolve_targets validated the targets: no second range check (a host sync)
            lowres, maps = op("softcam_maps", backend)(evidence, target_idx, tuple(images.shape[2:]), check_targets=False)
        return Explanation(maps=maps, lowres=lowres, logits=logits.detach().float(), targets=target_idx)
