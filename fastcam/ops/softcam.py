r"""SoftCAM's head and maps (Djoumessi & Berens, MIDL 2026): the torch references of
`fastcam.kernels.softcam_head` and the product backend on CPU and in exported graphs.

The head turns the backbone's last feature map $A$ (B, C, h, w) into K signed class-evidence maps by a
1×1 convolution and pools each map into a logit:

$$ E_k = b_k + \sum_c W_{kc} A_c, \qquad
   y_k^{avg} = \frac{1}{hw}\sum_{ij} E_k(i,j), \quad y_k^{max} = \max_{ij} E_k(i,j), \quad
   y_k^{lse} = T \log \frac{1}{hw} \sum_{ij} e^{E_k(i,j)/T}. $$

The explanation of class t is $\mathrm{ReLU}(E_t)$, upsampled and max-normalised (`softcam_maps`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcam.ops._checks import POOLS, check_class_targets, check_head_inputs, check_pool, check_size
from fastcam.ops.combine import accumulation, upsample_normalize

__all__ = ["DEFAULT_TEMPERATURE", "POOLS", "evidence_head", "pool_evidence", "softcam_maps"]

DEFAULT_TEMPERATURE = 1.0


def pool_evidence(evidence: Tensor, pool: str = "avg", temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    r"""Pool evidence maps (B, K, h, w) into logits (B, K).

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
    pool, temperature = check_pool(pool, temperature)
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        shape = tuple(evidence.shape) if isinstance(evidence, Tensor) else type(evidence).__name__
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {shape}")
    if pool == "avg":
        return evidence.mean(dim=(2, 3))
    if pool == "max":
        return evidence.amax(dim=(2, 3))
    # half inputs are promoted: exp/log of bf16 values would lose the soft-max's precision
    flat = accumulation(evidence.flatten(2))
    peak = flat.amax(dim=2, keepdim=True)
    soft = torch.log1p(torch.expm1((flat - peak) / temperature).mean(dim=2))
    return (peak.squeeze(2) + temperature * soft).to(evidence.dtype)


def evidence_head(
    features: Tensor, weight: Tensor, bias: Tensor | None, pool: str = "avg", temperature: float = DEFAULT_TEMPERATURE
) -> tuple[Tensor, Tensor]:
    """(logits (B, K), evidence (B, K, h, w)): a 1×1 convolution then `pool_evidence`, in the features'
    accumulation dtype (float32 for half and float32 features, float64 for float64), as the fused kernel.

    weight: (K, C) or a 1×1 convolution's (K, C, 1, 1); bias: (K,) or None.
    """
    _, temperature = check_pool(pool, temperature)
    weight, bias = check_head_inputs(features, weight, bias)
    x = accumulation(features)
    evidence = F.conv2d(x, weight.to(x.dtype)[:, :, None, None], None if bias is None else bias.to(x.dtype))
    return pool_evidence(evidence, pool, temperature), evidence


def softcam_maps(
    evidence: Tensor, targets: Tensor, size: Sequence[int], *, check_targets: bool = True
) -> tuple[Tensor, Tensor]:
    """SoftCAM maps of the requested classes: lowres = ReLU(E[b, t_b]) (B, h, w) float32 and its upsampled,
    max-normalised version (B, H, W) float32 (an all-zero map stays zero).

    check_targets: validate the targets' range (one host sync); pass False if already validated.
    """
    if not isinstance(evidence, Tensor) or evidence.dim() != 4:
        raise ValueError(f"evidence must be a 4-D (B, K, h, w) tensor, got {getattr(evidence, 'shape', type(evidence).__name__)}")
    if any(s == 0 for s in evidence.shape):
        raise ValueError(f"evidence must be non-empty, got shape {tuple(evidence.shape)}")
    size = check_size(size)
    check_class_targets(targets, evidence.shape[0], evidence.shape[1], evidence.device, check_range=check_targets)
    index = targets.long().view(-1, 1, 1, 1).expand(-1, 1, *evidence.shape[2:])
    lowres = torch.relu(evidence.float().gather(1, index).squeeze(1))
    return lowres, upsample_normalize(lowres, size)
