"""The robust call of one batch: out-of-memory halving and non-finite dropping give what the method gives."""
from __future__ import annotations

import torch

import fastcam
from fastcam.pipeline.robust import explain_finite, explain_splitting_on_oom


def test_oom_splits_the_batch_and_gives_the_same_result(resnet: torch.nn.Module) -> None:
    images = torch.rand(7, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    cam = fastcam.GradCAM(resnet, "layer4")
    calls = []

    class Tight:
        def explain(self, x, targets=None):
            calls.append(x.shape[0])
            if x.shape[0] > 2:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return cam.explain(x, targets)

    state: dict[str, int] = {}
    maps, lowres, logits, targets = explain_splitting_on_oom(Tight(), images, None, None, state)
    exp = cam.explain(images)
    torch.testing.assert_close(lowres, exp.lowres, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, exp.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(targets, exp.targets) and state["micro"] == 1
    calls.clear()
    explain_splitting_on_oom(Tight(), images[:2], None, None, state)  # later batches start at the size that worked
    assert calls == [1, 1]


def test_non_finite_error_leaves_out_exactly_the_named_images(resnet: torch.nn.Module) -> None:
    images = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    images[:, 0, 0, 0] = torch.arange(6.0)  # each image carries its batch row, to be recognised after splits
    cam = fastcam.GradCAM(resnet, "layer4")
    calls = []

    class FailsOnRowsOneAndFour:
        def explain(self, x, targets=None):
            calls.append(x.shape[0])
            bad = [j for j, row in enumerate(x[:, 0, 0, 0].tolist()) if row in (1.0, 4.0)]
            if bad:
                raise fastcam.NonFiniteError("the target layer's gradients", bad)
            return cam.explain(x, targets)

    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    state = {"micro": 4}  # split batches: the indices of a part are counted in the whole batch
    kept, explained, dropped = explain_finite(FailsOnRowsOneAndFour(), images, targets, None, state)
    assert kept.tolist() == [0, 2, 3, 5]
    assert dropped == {1: "the target layer's gradients", 4: "the target layer's gradients"}
    exp = cam.explain(images[[0, 2, 3, 5]], targets[[0, 2, 3, 5]])
    for got, want in zip(explained, (exp.maps, exp.lowres, exp.logits, exp.targets)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    calls.clear()
    kept, explained, dropped = explain_finite(FailsOnRowsOneAndFour(), images[[1, 4]], None, None, {})
    assert kept.tolist() == [] and explained is None and sorted(dropped) == [0, 1] and calls == [2]
