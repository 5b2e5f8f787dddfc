"""Score-CAM against torchcam's ScoreCAM and a float64 hand computation."""
import pytest
import torch
import torch.nn.functional as F

import fastcam


def test_scorecam_logit_matches_torchcam(resnet, images):
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    targets = [1, 0, 4, 2]
    ours = fastcam.ScoreCAM(resnet, "layer4", score="logit", batch_size=7).explain(images, targets).lowres
    with TorchcamScoreCAM(resnet, target_layer="layer4", batch_size=32, input_shape=tuple(images.shape[1:])) as ex:
        with torch.no_grad():
            out = resnet(images)
        (theirs,) = ex(targets, out)
    low = ours.flatten(1).min(1).values[:, None, None]
    high = ours.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close((ours - low) / (high - low + 1e-8), theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk,dead", [(1, False), (5, True), (64, False), (1000, True)])
def test_scorecam_probability_float64_hand(vgg, chunk, dead):
    """Per image, per channel, in float64: mask, forward, softmax probability, softmax over channels.
    With `dead`, half the channels of the target layer are all zero (the shared zero-image path)."""
    model = vgg.double()
    if dead:
        with torch.no_grad():
            model.features[3].bias[::2] = -1e3  # the conv before the ReLU and the pool at features.5
    x = torch.randn(3, 3, 24, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    layer = "features.5"  # the pool after the second conv + ReLU: (B, 16, 6, 5)
    targets = torch.tensor([4, 0, 2])
    got = fastcam.ScoreCAM(model, layer, batch_size=chunk).explain(x, targets).lowres.double()

    acts = model.features[:6](x).detach()
    if dead:
        assert (acts.amax((2, 3)) == 0).double().mean() >= 0.5
    expected = torch.zeros(3, *acts.shape[2:], dtype=torch.float64)
    for b in range(3):
        scores = []
        for c in range(acts.shape[1]):
            a = acts[b, c]
            span = a.max() - a.min()
            norm = (a - a.min()) / span if span > 0 else torch.zeros_like(a)
            mask = F.interpolate(norm[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
            with torch.no_grad():
                p = torch.softmax(model(x[b : b + 1] * mask), dim=1)[0, targets[b]]
            scores.append(p)
        w = torch.softmax(torch.stack(scores), dim=0)
        expected[b] = torch.relu((w[:, None, None] * acts[b]).sum(0))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert expected.max() > 0


def test_scorecam_batch_equals_single_images(resnet, images):
    cam = fastcam.ScoreCAM(resnet, "layer4", batch_size=13)
    batch = cam.explain(images, 3).maps
    singles = torch.cat([cam.explain(images[i : i + 1], 3).maps for i in range(len(images))])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-6)


def test_scorecam_rejects_bad_options(resnet):
    with pytest.raises(ValueError, match="batch_size"):
        fastcam.ScoreCAM(resnet, "layer4", batch_size=0)
    with pytest.raises(ValueError, match="score"):
        fastcam.ScoreCAM(resnet, "layer4", score="softmax")


@pytest.mark.parametrize("method", [fastcam.ScoreCAM, fastcam.SSCAM, fastcam.ISCAM, fastcam.AblationCAM])
def test_opt_in_progress_bar_counts_the_forwards(method, resnet, capsys) -> None:
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    extra = {"num_samples": 2} if method in (fastcam.SSCAM, fastcam.ISCAM) else {}
    if method is fastcam.SSCAM:
        extra["generator"] = 0
    quiet = method(resnet, "layer4", batch_size=16, **extra)(images)
    assert capsys.readouterr().err == ""  # off by default
    shown = method(resnet, "layer4", batch_size=16, progress=True, **extra)(images)
    err = capsys.readouterr().err
    assert method.__name__ in err and "input" in err, err
    torch.testing.assert_close(shown, quiet)
    with pytest.raises(TypeError, match="progress must be a bool"):
        method(resnet, "layer4", progress="yes")
