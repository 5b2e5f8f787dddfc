r"""Forward-only explanation graphs: plain `nn.Module`s that `torch.export` and the ONNX exporter trace.

Both compute what the explainer computes, with the `fastcam.ops` torch references (never the Triton
kernels, whatever the device):

- `SoftCAMGraph`: $(y, E) = $ the SoftCAM network; $t = \arg\max_k y_k$ (or a given index);
  lowres $= \mathrm{ReLU}(E_t)$; maps = lowres upsampled to the input size and max-normalised
  (`fastcam.ops.softcam_maps`).
- `PooledCAMGraph`: Grad-CAM on a verified pooled-linear head (`fastcam.deploy.heads`):
  $A = $ trunk(images), $y = W\,\mathrm{mean}_{ij}\, r(A) + b$,
  $w_c = \frac{W_{tc}}{hw}\cdot\frac{1}{hw}\sum_{ij} m_{cij}$, lowres $= \mathrm{ReLU}(\sum_c w_c A_c)$,
  maps as above (`fastcam.ops.combine`).

Outputs are float32 whatever the graph's dtype (the explainers' contract); `maps` has the input's spatial
size, so a graph traced with a dynamic spatial size upsamples to each input's own size.
"""
from __future__ import annotations

from torch import Tensor, nn

from fastcam.deploy.heads import PooledLinearHead
from fastcam.ops import accumulation, combine, evidence_head, softcam_maps
from fastcam.softcam import EvidenceHead, SoftCAMNet

__all__ = ["PooledCAMGraph", "SoftCAMGraph"]


class _TargetedGraph(nn.Module):
    """`targets`: "predicted" (argmax inside the graph: one input, `images`) or "given" (a second input,
    `target` (B,) int64 class indices in [0, K); out-of-range indices are the caller's to prevent: a graph
    cannot raise a Python error)."""

    def __init__(self, given_targets: bool) -> None:
        super().__init__()
        self.given_targets = bool(given_targets)

    def _targets(self, logits: Tensor, target: Tensor | None) -> Tensor:
        if self.given_targets:
            if target is None:
                raise ValueError("this graph was built with targets='given': pass a (B,) class index tensor")
            return target.long()
        # ties resolve to the first maximum, as in torch.argmax and ONNX ArgMax (select_last_index=0)
        return logits.argmax(dim=1)


class SoftCAMGraph(_TargetedGraph):
    """A SoftCAM network's explanation as one forward: images [, target] -> (logits, maps, lowres, evidence).

    A `SoftCAMNet` runs its backbone, then the evidence head through `fastcam.ops.evidence_head` (its
    pooling and temperature kept): the module's own forward may pick the Triton kernel on CUDA. Any other
    network returning (logits, evidence) runs as it is (its `EvidenceHead`s set to the torch backend).
    """

    def __init__(self, net: nn.Module, *, given_targets: bool) -> None:
        super().__init__(given_targets)
        self.net = net
        for module in net.modules():
            if isinstance(module, EvidenceHead):
                module.backend = "torch"  # an exported graph holds no Triton kernel (the net is the export's copy)

    def forward(self, images: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if isinstance(self.net, SoftCAMNet):
            head = self.net.head
            features = self.net.backbone(images)
            logits, evidence = evidence_head(features, head.conv.weight, head.conv.bias, head.pool, head.temperature)
        else:
            logits, evidence = self.net(images)
        targets = self._targets(logits, target)
        lowres, maps = softcam_maps(evidence, targets, tuple(images.shape[2:]), check_targets=False)
        return logits.float(), maps, lowres, evidence.float()


class PooledCAMGraph(_TargetedGraph):
    """Grad-CAM on a pooled-linear head, forward only: images [, target] -> (logits, maps, lowres).

    The weights are Grad-CAM's exactly (see `fastcam.deploy.heads`): $W_{t}/hw$ times, behind a ReLU,
    each channel's fraction of positive activations.
    """

    def __init__(self, head: PooledLinearHead, *, given_targets: bool) -> None:
        super().__init__(given_targets)
        self.trunk = head.trunk
        self.linear = head.linear
        self.relu = head.relu

    def forward(self, images: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        activations = self.trunk(images)
        pooled = (activations.relu() if self.relu else activations).mean(dim=(2, 3))
        logits = self.linear(pooled)
        targets = self._targets(logits, target)
        area = activations.shape[2] * activations.shape[3]
        # d y_t / d A_cij = W_tc / hw (· 1[A_cij > 0] behind a ReLU); Grad-CAM averages it over (i, j)
        weights = accumulation(self.linear.weight).index_select(0, targets) / area
        if self.relu:
            weights = weights * (activations > 0).to(weights.dtype).mean(dim=(2, 3))
        lowres, maps = combine(activations, weights, tuple(images.shape[2:]))
        return logits.float(), maps, lowres
