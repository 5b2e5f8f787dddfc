"""SoftCAM's pooling of the evidence maps (`fastcam.ops.pool_evidence`) against float64, its limits and
stability, and bad arguments."""
from __future__ import annotations

import math

import pytest
import torch
from fastcam_testkit.common import gen
from torch import nn

from fastcam.softcam import convert, pool_evidence

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------- pooling
def _pool_float64(evidence: torch.Tensor, pool: str, temperature: float) -> torch.Tensor:
    """Independent float64 oracle, straight from the definitions (no max-shift)."""
    e = evidence.double().flatten(2)
    if pool == "avg":
        return e.sum(2) / e.shape[2]
    if pool == "max":
        return e.max(2).values
    return temperature * torch.log(torch.exp(e / temperature).mean(2))


@pytest.mark.parametrize("pool,temperature", [("avg", 1.0), ("max", 1.0), ("lse", 1.0), ("lse", 0.37), ("lse", 5.0)])
def test_logits_equal_pooled_evidence(resnet: nn.Module, images: torch.Tensor, pool: str, temperature: float) -> None:
    torch.manual_seed(3)
    net = convert(resnet, 7, pool=pool, temperature=temperature).eval()
    with torch.no_grad():
        logits, evidence = net(images)
    assert logits.shape == (4, 7) and evidence.shape[:2] == (4, 7)
    expected = _pool_float64(evidence, pool, temperature)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits, pool_evidence(evidence, pool, temperature), rtol=0, atol=0)


def test_lse_limits_and_stability() -> None:
    evidence = torch.randn(3, 4, 5, 7, generator=gen(0), dtype=torch.float64)
    avg, mx = evidence.mean((2, 3)), evidence.amax((2, 3))
    lse = {t: pool_evidence(evidence, "lse", t) for t in (1e-4, 1.0, 1e4)}
    # avg <= lse_T <= max for every T (Jensen / log-mean-exp <= max)
    for value in lse.values():
        assert bool((value >= avg - 1e-12).all() and (value <= mx + 1e-12).all())
    # T -> inf: lse - avg ≈ Var/(2T) -> 0; T -> 0: max - lse <= T·log(hw) -> 0
    assert (lse[1e4] - avg).abs().max() < 1e-3
    assert (mx - lse[1e-4]).abs().max() <= 1e-4 * math.log(35) + 1e-12
    # huge evidence: exp would overflow without the max shift
    big = torch.full((1, 2, 3, 3), 1e4)
    big[0, 0, 1, 1] = 2e4
    out = pool_evidence(big, "lse", 1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([[2e4 - math.log(9), 1e4]]))


@pytest.mark.parametrize("temperature", [1e-3, 1.0, 1e3, 1e6])
def test_lse_float32_accurate_at_any_temperature(temperature: float) -> None:
    """float32 lse against the float64 definition: T·(logsumexp(E/T) - log hw) would be off by ~T·1e-7."""
    evidence = torch.randn(3, 4, 7, 9, generator=gen(2))
    exact = evidence.double().flatten(2)
    peak = exact.amax(2)
    exact = peak + temperature * torch.log(torch.exp((exact - peak[..., None]) / temperature).mean(2))
    torch.testing.assert_close(pool_evidence(evidence, "lse", temperature).double(), exact, rtol=0, atol=2e-6)


def test_lse_bf16_is_computed_in_float32() -> None:
    evidence = torch.randn(2, 3, 4, 4, generator=gen(1)).bfloat16()
    out = pool_evidence(evidence, "lse", 0.5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), _pool_float64(evidence.float(), "lse", 0.5), rtol=8e-3, atol=8e-3)


@pytest.mark.parametrize("pool,temperature,error", [
    ("mean", 1.0, ValueError), ("avg", 0.0, ValueError), ("lse", -1.0, ValueError),
    ("lse", float("nan"), ValueError), ("lse", "1", TypeError),
])
def test_bad_pool_arguments(resnet: nn.Module, pool: str, temperature: object, error: type) -> None:
    with pytest.raises(error):
        convert(resnet, 2, pool=pool, temperature=temperature)
    with pytest.raises(error):
        pool_evidence(torch.zeros(1, 2, 3, 3), pool, temperature)
