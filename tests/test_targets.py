"""fastcam.targets: scores and probabilities against formulas written out, and the outputs they read."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fastcam.targets import (
    BinaryTarget,
    ClassTarget,
    FunctionTarget,
    MultiLabelTarget,
    SegmentationTarget,
    SimilarityTarget,
    primary_tensor,
    resolve_target,
)
from fastcam_testkit.common import gen


def test_primary_tensor_of_every_container() -> None:
    z = torch.randn(2, 3)
    assert primary_tensor(z) is z
    assert primary_tensor((z, 1)) is z and primary_tensor([z]) is z
    assert primary_tensor({"logits": z, "x": 1}) is z and primary_tensor({"out": z, "aux": z * 2}) is z
    transformers = pytest.importorskip("transformers")
    assert primary_tensor(transformers.modeling_outputs.ImageClassifierOutput(logits=z)) is z
    for bad in ({"scores": z}, ("a", z), [], "logits"):
        with pytest.raises(TypeError, match="pass output_fn="):
            primary_tensor(bad)


def test_class_target_softmax_and_single_logit_sigmoid() -> None:
    z = torch.randn(4, 5, generator=gen(0))
    t = ClassTarget(torch.tensor([0, 4, 2, 2]))
    torch.testing.assert_close(t.score(z), z[torch.arange(4), [0, 4, 2, 2]])
    torch.testing.assert_close(t.probability(z), torch.softmax(z, 1)[torch.arange(4), [0, 4, 2, 2]])
    one = torch.randn(4, 1, generator=gen(1))
    torch.testing.assert_close(ClassTarget(0).probability(one), torch.sigmoid(one[:, 0]))  # never a flat 1
    assert ClassTarget(torch.tensor([1, 2])).select(torch.tensor([1])).classes.tolist() == [2]
    with pytest.raises(TypeError):
        ClassTarget(torch.tensor([0.5]))


def test_binary_target_positive_and_negative_evidence() -> None:
    z = torch.randn(3, 1, generator=gen(2))
    torch.testing.assert_close(BinaryTarget().score(z), z[:, 0])
    torch.testing.assert_close(BinaryTarget(positive=False).score(z[:, 0]), -z[:, 0])
    torch.testing.assert_close(BinaryTarget(positive=False).probability(z), 1 - torch.sigmoid(z[:, 0]))
    with pytest.raises(ValueError, match=r"single-logit output \(B,\) or \(B, 1\)"):
        BinaryTarget().score(torch.randn(3, 2))


def test_multilabel_target_sums_logits_and_averages_sigmoids() -> None:
    z = torch.randn(2, 6, generator=gen(3))
    t = MultiLabelTarget([1, 4])
    torch.testing.assert_close(t.score(z), z[:, 1] + z[:, 4])
    torch.testing.assert_close(t.probability(z), (torch.sigmoid(z[:, 1]) + torch.sigmoid(z[:, 4])) / 2)
    with pytest.raises(TypeError):
        MultiLabelTarget([])


def test_segmentation_target_masked_sum_and_mean_probability() -> None:
    out = torch.randn(2, 3, 4, 5, generator=gen(4))
    mask = (torch.rand(4, 5, generator=gen(5)) > 0.5).float()
    t = SegmentationTarget(2, mask)
    torch.testing.assert_close(t.score(out), (out[:, 2] * mask).sum((1, 2)))
    expected = (torch.softmax(out, 1)[:, 2] * mask).sum((1, 2)) / mask.sum()
    torch.testing.assert_close(t.probability(out), expected)
    torch.testing.assert_close(SegmentationTarget(1).score(out), out[:, 1].sum((1, 2)))
    per_image = torch.stack([mask, 1 - mask])
    torch.testing.assert_close(SegmentationTarget(0, per_image).select(torch.tensor([1])).score(out[1:]),
                               (out[1:, 0] * (1 - mask)).sum((1, 2)))
    with pytest.raises(ValueError, match="does not match the output"):
        SegmentationTarget(0, torch.ones(8, 10)).score(out)
    with pytest.raises(ValueError, match=r"\(B, K, H, W\) output"):
        SegmentationTarget(0).score(torch.randn(2, 3))


def test_similarity_target_is_the_cosine_to_the_reference() -> None:
    emb, ref = torch.randn(3, 8, generator=gen(6)), torch.randn(8, generator=gen(7))
    got = SimilarityTarget(ref).score(emb)
    torch.testing.assert_close(got, (emb @ ref) / (emb.norm(dim=1) * ref.norm()))
    torch.testing.assert_close(SimilarityTarget(ref).probability(emb), got)  # no probability: the score
    refs = torch.randn(3, 8, generator=gen(8))
    torch.testing.assert_close(SimilarityTarget(refs).select(torch.tensor([2])).score(emb[2:]),
                               F.cosine_similarity(emb[2:], refs[2:]))
    with pytest.raises(ValueError, match=r"needs a \(B, 8\) embedding"):
        SimilarityTarget(ref).score(torch.randn(3, 4))


def test_resolve_target_takes_indices_targets_and_callables() -> None:
    z = torch.randn(2, 4, generator=gen(9))
    target, logits = resolve_target(None, z, 2)
    assert isinstance(target, ClassTarget) and target.classes.tolist() == z.argmax(1).tolist() and logits is z
    target, _ = resolve_target(lambda out: out[:, 1] - out[:, 0], z, 2)
    assert isinstance(target, FunctionTarget)
    torch.testing.assert_close(target.score(z), z[:, 1] - z[:, 0])
    with pytest.raises(ValueError, match="out of range"):
        resolve_target(7, z, 2)
