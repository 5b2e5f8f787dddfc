"""HiResCAM and Grad-CAM element-wise against float64 hand computations of pytorch-grad-cam's formulas."""
import pytest
import torch

import fastcam
from fastcam_testkit.pgc import activations_and_grads, cam_image

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = {"hirescam": fastcam.HiResCAM, "gradcamelementwise": fastcam.GradCAMElementWise}


@pytest.mark.parametrize("eigen_smooth", [False, True])
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize("method", sorted(CLASSES))
def test_float64_hand(method, layer, eigen_smooth, resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([2, 0, 1, 4])
    (acts,), (grads,), _ = activations_and_grads(model, [layer], x, targets)
    expected = torch.relu(cam_image(method, acts, grads, eigen_smooth))
    got = CLASSES[method](model, layer, eigen_smooth=eigen_smooth).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7 * float(expected.max()))
    assert expected.max() > 0


def test_hirescam_is_the_score_decomposition_for_a_gap_linear_head(resnet, images):
    """HiResCAM's guarantee: with global average pooling + a linear head, the unclipped map sums to the
    score minus the bias (each location's exact contribution); ReLU'd maps keep the positive part."""
    model, x = resnet.double(), images.double()
    targets = torch.tensor([0, 1, 2, 3])
    (acts,), (grads,), logits = activations_and_grads(model, ["layer4"], x, targets)
    unclipped = (grads * acts).sum(1)  # g = w_k / (hw): sum over positions = w_k . mean(A) = y_k - b_k
    torch.testing.assert_close(unclipped.flatten(1).sum(1), logits.gather(1, targets[:, None])[:, 0] - model.fc.bias[targets].detach())
    got = fastcam.HiResCAM(model, "layer4").explain(x, targets).lowres.double()
    torch.testing.assert_close(got, torch.relu(unclipped))


def test_elementwise_differs_from_hirescam_where_products_have_mixed_signs(resnet, images):
    hires = fastcam.HiResCAM(resnet, "layer3").explain(images, 1).lowres
    elementwise = fastcam.GradCAMElementWise(resnet, "layer3").explain(images, 1).lowres
    assert (elementwise >= hires - 1e-6).all() and (elementwise > hires + 1e-4).any()
