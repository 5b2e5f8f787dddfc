"""SmoothGrad (`smooth=N`), pytorch-grad-cam's `aug_smooth` and `eigen_smooth` against float64 hand
computations, and the one forward / one backward they share with a plain call."""
import pytest
import torch
import torch.nn.functional as F

import fastcam
from fastcam.methods.registry import method_class
from fastcam.methods._smoothing import AUGMENTATIONS
from fastcam_testkit.pgc import activations_and_grads, cam_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _count_forwards_and_backwards(model: torch.nn.Module) -> dict[str, list[int]]:
    """Every forward of the model (its batch size) and every backward through its head."""
    seen: dict[str, list[int]] = {"forward": [], "backward": []}
    model.register_forward_pre_hook(lambda m, i: seen["forward"].append(i[0].shape[0]))
    model.fc.register_full_backward_hook(lambda m, gi, go: seen["backward"].append(go[0].shape[0]))
    return seen


def _smoothgrad_hand(model, x, targets, copies, sigma, seed, layer="layer3"):  # noqa: ANN001, ANN202
    """The clean activations and the N noisy copies' gradients, noise drawn as documented: per image b, one
    (N, C, H, W) standard normal tensor from a generator seeded with `seed + b`."""
    noise = torch.stack([torch.randn((copies, *x.shape[1:]), generator=torch.Generator().manual_seed(seed + b),
                                     dtype=x.dtype) for b in range(x.shape[0])], dim=1)
    (acts,), _, _ = activations_and_grads(model, [layer], x, targets)
    grads = torch.stack([activations_and_grads(model, [layer], x + sigma * noise[n], targets)[1][0] for n in range(copies)])
    return acts, grads


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "hirescam", "layercam"])
def test_smoothgrad_float64_hand(method, resnet, images):
    model, x = resnet.double(), images[:3].double()
    targets = torch.tensor([1, 3, 0])
    acts, grads = _smoothgrad_hand(model, x, targets, copies=3, sigma=0.3, seed=5)
    mean = grads.mean(0)
    if method == "gradcampp":  # Omeiza et al.: averaged g^2, g^3 in alpha, ReLU of the averaged g
        second, third = (grads**2).mean(0), (grads**3).mean(0)
        denom = 2 * second + acts.sum((2, 3), keepdim=True) * third
        alpha = torch.where((mean > 0) & (denom != 0), second / denom, torch.zeros_like(denom))
        w = (alpha * torch.relu(mean)).sum((2, 3))
        expected = torch.relu((w[:, :, None, None] * acts).sum(1))
    else:
        expected = torch.relu(cam_image(method, acts, mean))
    cls = method_class(method)
    # layer3: at layer4 (global average pooling + linear head) the gradient does not depend on the input
    got = cls(model, "layer3", smooth=3, smooth_sigma=0.3, generator=5).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9 * float(expected.max()))
    plain = cls(model, "layer3").explain(x, targets).lowres.double()
    assert (plain - expected).abs().max() > 1e-3 * float(expected.max())  # the noise matters


def test_smoothgrad_is_one_forward_and_one_backward(resnet, images):
    seen = _count_forwards_and_backwards(resnet)
    exp = fastcam.GradCAM(resnet, "layer4", smooth=4).explain(images)
    assert seen == {"forward": [4 * 5], "backward": [4 * 5]}
    assert exp.maps.shape == (4, 64, 48) and exp.logits.shape == (4, 5)
    with torch.no_grad():
        torch.testing.assert_close(exp.logits, resnet(images))  # logits and targets: the clean images'


def test_aug_smooth_float64_hand(resnet, images):
    """pytorch-grad-cam's six ttach copies (flip x intensity), each copy's Grad-CAM computed by hand, flipped
    back, averaged, max-normalised; targets=None is the prediction on the unaugmented images for every copy."""
    model, x = resnet.double(), images.double()
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert sorted(AUGMENTATIONS) == sorted((flip, f) for flip in (False, True) for f in (0.9, 1.0, 1.1))
    maps, lows = [], []
    for flip, factor in AUGMENTATIONS:
        xa = (x.flip(-1) if flip else x) * factor
        (acts,), (grads,), _ = activations_and_grads(model, ["layer3"], xa, predicted)
        low = torch.relu(cam_image("gradcam", acts, grads))
        up = F.interpolate(low[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        up = up / up.flatten(1).amax(1)[:, None, None]
        low = low / low.flatten(1).amax(1)[:, None, None]
        maps.append(up.flip(-1) if flip else up)
        lows.append(low.flip(-1) if flip else low)
    expected = torch.stack(maps).mean(0)
    expected = expected / expected.flatten(1).amax(1)[:, None, None]
    expected_low = torch.stack(lows).mean(0)
    seen = _count_forwards_and_backwards(model)
    got = fastcam.GradCAM(model, "layer3", aug_smooth=True).explain(x)
    assert seen == {"forward": [6 * 4], "backward": [6 * 4]}
    assert got.targets.tolist() == predicted.tolist()
    torch.testing.assert_close(got.maps.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.lowres.double(), expected_low / expected_low.flatten(1).amax(1)[:, None, None],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", [fastcam.ScoreCAM, fastcam.EigenCAM, fastcam.AblationCAM, fastcam.GradCAMPlusPlus])
def test_aug_smooth_runs_for_every_kind_of_method(method, resnet, images):
    kwargs = {"batch_size": 64} if method in (fastcam.ScoreCAM, fastcam.AblationCAM) else {}
    plain = method(resnet, "layer3", **kwargs).explain(images, 1)
    smooth = method(resnet, "layer3", aug_smooth=True, **kwargs).explain(images, 1)
    assert smooth.maps.shape == plain.maps.shape and smooth.lowres.shape == plain.lowres.shape
    torch.testing.assert_close(smooth.logits, plain.logits)
    assert torch.isfinite(smooth.maps).all() and smooth.maps.max() <= 1
    assert not torch.allclose(smooth.maps, plain.maps)


def test_eigen_smooth_gradcam_float64_hand(resnet, images):
    model, x = resnet.double(), images.double()
    targets = torch.tensor([4, 0, 1, 2])
    (acts,), (grads,), _ = activations_and_grads(model, ["layer3"], x, targets)
    expected = torch.relu(cam_image("gradcam", acts, grads, eigen_smooth=True))
    got = fastcam.GradCAM(model, "layer3", eigen_smooth=True).explain(x, targets).lowres.double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7 * float(expected.max()))


def test_bad_smoothing_options(resnet):
    with pytest.raises(ValueError, match="smooth"):
        fastcam.GradCAM(resnet, "layer4", smooth=-1)
    with pytest.raises(TypeError, match="smooth must be an int, got bool"):
        fastcam.GradCAM(resnet, "layer4", smooth=True)
    with pytest.raises(ValueError, match="smooth_sigma"):
        fastcam.GradCAM(resnet, "layer4", smooth=2, smooth_sigma=-0.1)
    with pytest.raises(TypeError, match="aug_smooth"):
        fastcam.ScoreCAM(resnet, "layer4", aug_smooth=1)
    with pytest.raises(TypeError, match="eigen_smooth"):
        fastcam.LayerCAM(resnet, "layer4", eigen_smooth="yes")
    with pytest.raises(TypeError):
        fastcam.ScoreCAM(resnet, "layer4", smooth=2)  # SmoothGrad is for gradient methods


@pytest.mark.parametrize("aug", [False, True])
def test_seeded_smoothgrad_is_per_image_so_a_batch_equals_its_images_alone(aug, resnet, images):
    """Issue 24 item 8: with a seed, an image's SmoothGrad noise depended on its batch-mates. Image i of a
    call draws from seed + i (with aug_smooth, its augmented copies too), whatever the rest of the batch."""
    targets = torch.tensor([1, 0, 4, 2])
    batch = fastcam.GradCAM(resnet, "layer3", smooth=2, generator=7, aug_smooth=aug).explain(images, targets).maps
    for i in range(4):
        cam = fastcam.GradCAM(resnet, "layer3", smooth=2, generator=7 + i, aug_smooth=aug)
        torch.testing.assert_close(batch[i : i + 1], cam.explain(images[i : i + 1], targets[i : i + 1]).maps, rtol=1e-5, atol=1e-6)
