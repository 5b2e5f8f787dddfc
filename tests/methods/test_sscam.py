"""SS-CAM and IS-CAM against torchcam's SSCAM and ISCAM (the same noise for the same seed)."""
import pytest
import torch

import fastcam
from fastcam.methods.iscam import integration_coefficients

pytestmark = pytest.mark.usefixtures("one_thread")


def _minmax(x: torch.Tensor) -> torch.Tensor:
    low = x.flatten(1).min(1).values[:, None, None]
    return (x - low) / (x.flatten(1).max(1).values[:, None, None] - low + 1e-8)


def _torchcam(name: str, model, images, targets, seed: int | None = None, **kwargs):  # noqa: ANN001, ANN202
    import torchcam.methods

    if seed is not None:
        torch.manual_seed(seed)  # torchcam draws its noise from the global generator
    cls = getattr(torchcam.methods, name)
    with cls(model, target_layer="layer4", input_shape=tuple(images.shape[1:]), **kwargs) as extractor:
        with torch.no_grad():
            out = model(images)
        (cam,) = extractor(targets, out)
    return cam


def test_sscam_matches_torchcam_with_the_same_seed(resnet, images):
    """64x48 images: H·W is a multiple of 16, so fastcam's chunked draws replay torchcam's per-sample ones:
    for a batch with a generator seeded as torchcam's global one (one stream), for one image with the seed."""
    targets = [1, 0, 4, 2]

    def ours(generator, x=images, t=targets):  # noqa: ANN001, ANN202
        cam = fastcam.SSCAM(resnet, "layer4", score="logit", batch_size=7, num_samples=3, generator=generator)
        return _minmax(cam.explain(x, t).lowres)

    theirs = _torchcam("SSCAM", resnet, images, targets, seed=11, batch_size=32, num_samples=3)
    torch.testing.assert_close(ours(torch.Generator().manual_seed(11)), theirs, rtol=1e-4, atol=2e-6)
    one = _torchcam("SSCAM", resnet, images[2:3], targets[2:3], seed=11, batch_size=32, num_samples=3)
    torch.testing.assert_close(ours(11, images[2:3], targets[2:3]), one, rtol=1e-4, atol=2e-6)
    assert (ours(torch.Generator().manual_seed(12)) - theirs).abs().max() > 1e-3  # the noise matters


def test_seeded_noise_is_per_image_so_a_batch_equals_its_images_alone(resnet, images):
    """Issue 24 item 8: with a seed, an image got different noise depending on its batch-mates (a batch of
    8 differed from each image alone by up to 0.10). Image i of a call draws from seed + i."""
    targets = torch.tensor([1, 0, 4, 2])
    cam = fastcam.SSCAM(resnet, "layer4", batch_size=5, num_samples=2, generator=3)
    batch = cam.explain(images, targets).maps
    for i in range(4):
        alone = fastcam.SSCAM(resnet, "layer4", batch_size=5, num_samples=2, generator=3 + i).explain(images[i : i + 1], targets[i : i + 1]).maps
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_iscam_matches_torchcam(resnet, images):
    targets = [3, 3, 0, 1]
    ours = fastcam.ISCAM(resnet, "layer4", score="logit", batch_size=5, num_samples=4).explain(images, targets).lowres
    theirs = _torchcam("ISCAM", resnet, images, targets, batch_size=32, num_samples=4)
    torch.testing.assert_close(_minmax(ours), theirs, rtol=1e-4, atol=2e-6)


def test_iscam_coefficients_are_torchcams_running_sum():
    assert integration_coefficients(4) == pytest.approx([0.25, 0.75, 1.5, 2.5])


def test_sscam_with_zero_noise_is_scorecam_and_seeds_repeat(resnet, images):
    score = fastcam.ScoreCAM(resnet, "layer4", batch_size=64).explain(images, 2).lowres
    smooth = fastcam.SSCAM(resnet, "layer4", batch_size=64, num_samples=2, std=0.0).explain(images, 2).lowres
    torch.testing.assert_close(smooth, score, rtol=1e-5, atol=1e-7)
    cam = fastcam.SSCAM(resnet, "layer4", batch_size=64, num_samples=2, generator=3)
    torch.testing.assert_close(cam(images, 2), cam(images, 2))
    with pytest.raises(ValueError, match="num_samples"):
        fastcam.SSCAM(resnet, "layer4", num_samples=0)
    with pytest.raises(TypeError, match="generator"):
        fastcam.SSCAM(resnet, "layer4", generator=1.5)
    with pytest.raises(TypeError, match="num_samples must be an int, got bool"):
        fastcam.ISCAM(resnet, "layer4", num_samples=True)
