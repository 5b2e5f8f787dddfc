"""XGrad-CAM against a float64 hand computation of pytorch-grad-cam's formula (torchcam parity: in
test_layercam.py, with Layer-CAM)."""
import pytest
import torch

import fastcam
from fastcam_testkit.pgc import activations_and_grads, cam_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("eigen_smooth", [False, True])
def test_xgradcam_float64_hand(eigen_smooth, resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([0, 4, 2, 2])
    (acts,), (grads,), _ = activations_and_grads(model, ["layer3"], x, targets)
    expected = torch.relu(cam_image("xgradcam", acts, grads, eigen_smooth))
    got = fastcam.XGradCAM(model, "layer3", eigen_smooth=eigen_smooth).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7 * float(expected.max()))
    assert expected.max() > 0


def test_xgradcam_is_on_the_fused_combine_path(resnet, images, monkeypatch):
    """XGrad-CAM is a weighted sum: it goes through the fused combine op, not `_get_lowres`."""
    import fastcam.ops

    calls = []
    original = fastcam.ops.combine
    monkeypatch.setattr(fastcam.ops, "combine", lambda *a, **k: calls.append(1) or original(*a, **k))
    fastcam.XGradCAM(resnet, "layer4", backend="torch")(images)
    assert calls == [1]
