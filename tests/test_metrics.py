"""fastcam.metrics against hand computations on tiny constructed cases (float64 where it matters)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import fastcam
from fastcam import metrics
from fastcam.models import tiny_resnet


class MeanModel(nn.Module):
    """Softmax of its logits is exactly (m, 1 - m), m = the image's mean pixel (pixels in [0, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.double().mean(dim=(1, 2, 3)).clamp(1e-12, 1 - 1e-12)
        return torch.stack([m.log(), (1 - m).log()], dim=1)


IMAGE = torch.tensor([[0.8, 0.2], [0.6, 0.4]], dtype=torch.float64).view(1, 1, 2, 2)
MAP = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]], dtype=torch.float64)


# ---------------------------------------------------------------- deletion / insertion
def test_deletion_insertion_by_hand() -> None:
    # deletion removes 0.8, 0.6, 0.4, 0.2 in turn: mean 0.5, 0.3, 0.15, 0.05, 0
    res = metrics.deletion(MeanModel(), IMAGE, MAP, targets=0, steps=4)
    torch.testing.assert_close(res.curve.double(), torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]], dtype=torch.float64))
    assert res.auc.item() == pytest.approx(0.25 * (0.4 + 0.225 + 0.1 + 0.025), abs=1e-6)  # 0.1875
    torch.testing.assert_close(res.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    # insertion onto zeros puts them back in the same order: 0, 0.2, 0.35, 0.45, 0.5
    res = metrics.insertion(MeanModel(), IMAGE, MAP, targets=0, steps=4, baseline="zeros")
    torch.testing.assert_close(res.curve.double(), torch.tensor([[0.0, 0.2, 0.35, 0.45, 0.5]], dtype=torch.float64))
    assert res.auc.item() == pytest.approx(0.3125, abs=1e-6)
    # the target probability is the other class's for target 1
    res = metrics.deletion(MeanModel(), IMAGE, MAP, targets=1, steps=4)
    assert res.auc.item() == pytest.approx(1 - 0.1875, abs=1e-6)


def test_deletion_batched_chunks_and_uneven_steps_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2, 3, 5, generator=g, dtype=torch.float64)        # 15 pixels, 2 channels
    maps = torch.rand(3, 3, 5, generator=g, dtype=torch.float64)
    steps = 4                                                                 # 15 / 4 is not whole
    full = metrics.deletion(MeanModel(), images, maps, targets=0, steps=steps, batch_size=1000)
    chunked = metrics.deletion(MeanModel(), images, maps, targets=0, steps=steps, batch_size=4)
    torch.testing.assert_close(full.curve, chunked.curve)
    for b in range(3):  # float64 numpy oracle
        x, s = images[b].numpy(), maps[b].numpy().ravel()
        order = np.argsort(-s, kind="stable")
        curve = []
        for k in range(steps + 1):
            keep = np.ones(15, bool)
            keep[order[: (k * 15) // steps]] = False
            curve.append((x.reshape(2, -1) * keep).mean())
        np.testing.assert_allclose(full.curve[b].numpy(), curve, atol=1e-6)
        assert full.auc[b].item() == pytest.approx(np.trapezoid(curve, dx=1 / steps), abs=1e-6)


def test_low_resolution_map_is_upsampled_and_predicted_target_default() -> None:
    images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lowres = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    up = torch.nn.functional.interpolate(lowres.unsqueeze(1), size=(8, 8), mode="bilinear", align_corners=False)
    a = metrics.deletion(MeanModel(), images, lowres, steps=8)
    b = metrics.deletion(MeanModel(), images, up.squeeze(1), steps=8)
    torch.testing.assert_close(a.curve, b.curve)
    predicted = MeanModel()(images).argmax(1)
    torch.testing.assert_close(a.targets, predicted)


def test_blur_baseline_matches_scipy() -> None:
    x = torch.rand(1, 2, 15, 13, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = np.arange(11) - 5.0
    k = np.exp(-0.5 * (t / 5.0) ** 2)
    k /= k.sum()
    for c in range(2):
        ref = ndimage.correlate(x[0, c].numpy(), np.outer(k, k), mode="nearest")
        np.testing.assert_allclose(metrics.gaussian_blur(x)[0, c].numpy(), ref, atol=1e-12)
    assert torch.equal(metrics.make_baseline(x, 0.25), torch.full_like(x, 0.25))
    torch.testing.assert_close(metrics.make_baseline(x, "mean")[0, :, 3, 4], x.mean(dim=(2, 3))[0])


def test_perturbation_bad_input() -> None:
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion(MeanModel(), IMAGE, MAP, steps=0)
    with pytest.raises(ValueError, match="baseline"):
        metrics.insertion(MeanModel(), IMAGE, MAP, baseline="gray")
    with pytest.raises(ValueError, match="maps has 2 maps for a batch of 1"):
        metrics.deletion(MeanModel(), IMAGE, MAP.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion(MeanModel(), IMAGE, torch.full_like(MAP, float("nan")))
    with pytest.raises(TypeError, match="maps must be a torch.Tensor"):
        metrics.deletion(MeanModel(), IMAGE, MAP.numpy())


# ---------------------------------------------------------------- Average Drop / Increase
def test_average_drop_and_increase_by_hand() -> None:
    cam_map = torch.tensor([[[1.0, 0.5], [0.0, 0.25]]], dtype=torch.float64)
    # class 0: Y = 0.5, O = mean(0.8, 0.1, 0, 0.1) = 0.25 -> drop 50 %, no increase
    res = metrics.average_drop_increase(MeanModel(), IMAGE, cam_map, targets=0)
    assert res.clean.item() == pytest.approx(0.5) and res.explained.item() == pytest.approx(0.25)
    assert res.drop.item() == pytest.approx(50.0) and res.increase.item() == 0.0
    # class 1: Y = 0.5, O = 0.75 -> drop clipped at 0, increase
    res = metrics.average_drop_increase(MeanModel(), IMAGE, cam_map, targets=1)
    assert res.drop.item() == 0.0 and res.increase.item() == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.average_drop_increase(MeanModel(), IMAGE, cam_map * 2)


# ---------------------------------------------------------------- localisation
def _mask(*points: tuple[int, int], size: tuple[int, int] = (4, 4)) -> torch.Tensor:
    m = torch.zeros(1, *size, dtype=torch.bool)
    for r, c in points:
        m[0, r, c] = True
    return m


def test_pointing_game_by_hand() -> None:
    peak = torch.zeros(1, 4, 4)
    peak[0, 1, 2] = 1.0
    peak[0, 0, 0] = 0.5
    assert metrics.pointing_game(peak, _mask((1, 2))).item() == 1.0
    assert metrics.pointing_game(peak, _mask((0, 0), (3, 3))).item() == 0.0
    # (3, 2) is 2 px below the peak
    assert metrics.pointing_game(peak, _mask((3, 2)), tolerance=2).item() == 1.0
    assert metrics.pointing_game(peak, _mask((3, 2)), tolerance=1.9).item() == 0.0
    # a map with no positive value points nowhere
    assert metrics.pointing_game(torch.zeros(1, 4, 4), _mask((0, 0))).item() == 0.0
    # batched, masks as 0/1 floats
    maps = torch.cat([peak, peak.flip(-1)])
    masks = torch.cat([_mask((1, 2)), _mask((1, 2))]).float()
    torch.testing.assert_close(metrics.pointing_game(maps, masks), torch.tensor([1.0, 0.0]))


def test_localisation_upsamples_low_resolution_maps() -> None:
    lowres = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])      # peak in the top-right quadrant
    assert metrics.pointing_game(lowres, _mask((0, 3))).item() == 1.0
    assert metrics.pointing_game(lowres, _mask((3, 0))).item() == 0.0


def test_energy_pointing_game_by_hand() -> None:
    maps = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 3.0, -5.0], [4.0, 0.0, 0.0]]], dtype=torch.float64)
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = True                   # box = rows 0..1, cols 0..1
    total = 1 + 2 + 3 + 4                                  # negative energy is ignored
    assert metrics.energy_pointing_game(maps, mask).item() == pytest.approx((1 + 2 + 0 + 3) / total)
    assert metrics.energy_pointing_game(maps, mask, box=False).item() == pytest.approx((1 + 3) / total)
    assert metrics.energy_pointing_game(torch.zeros(1, 3, 3), mask).item() == 0.0


def test_bounding_boxes() -> None:
    m = torch.zeros(2, 5, 6, dtype=torch.bool)
    m[0, 1, 4] = m[0, 3, 2] = True
    m[1, 0, 0] = True
    box = metrics.bounding_boxes(m)
    expected = torch.zeros(2, 5, 6, dtype=torch.bool)
    expected[0, 1:4, 2:5] = True
    expected[1, 0, 0] = True
    assert torch.equal(box, expected)


def test_activation_precision_and_sensitivity_by_hand() -> None:
    maps = torch.tensor([[[1.0, 0.5], [0.0, -1.0]]])       # S = [[1, .5], [0, 0]]
    mask = torch.tensor([[[1, 0], [1, 0]]])
    assert metrics.activation_precision(maps, mask).item() == pytest.approx(1 / 1.5)
    assert metrics.activation_sensitivity(maps, mask).item() == pytest.approx(1 / 2)
    # S is scaled to [0, 1] by its max: the metrics do not depend on the map's scale
    assert metrics.activation_sensitivity(3 * maps, mask).item() == pytest.approx(1 / 2)
    assert metrics.activation_precision(-maps.abs(), mask).item() == 0.0


def test_localisation_bad_input() -> None:
    with pytest.raises(ValueError, match=r"masks of images \[1\] are empty"):
        metrics.pointing_game(torch.rand(2, 4, 4), torch.cat([_mask((0, 0)), _mask()]))
    with pytest.raises(ValueError, match="got 1 masks for 2 maps"):
        metrics.activation_precision(torch.rand(2, 4, 4), _mask((0, 0)))
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(torch.rand(1, 4, 4), _mask((0, 0)), tolerance=-1)


# ---------------------------------------------------------------- SSIM / MSE
def _ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """float64 transcription of Wang et al. 2004 with scipy's Gaussian filter (sigma 1.5, truncate 3.5)."""
    f = lambda a: ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s[5:-5, 5:-5].mean())  # the border where the 11 x 11 window leaves the image is cropped


def test_ssim_against_float64_transcription() -> None:
    rng = np.random.default_rng(0)
    for shape in [(11, 11), (23, 17), (40, 33)]:
        x = rng.random(shape)
        y = np.clip(x + 0.2 * rng.standard_normal(shape), 0, 1)
        ours = metrics.ssim(torch.tensor(x)[None], torch.tensor(y)[None]).item()
        assert ours == pytest.approx(_ssim_numpy(x, y), abs=1e-12)
        ours32 = metrics.ssim(torch.tensor(x).float()[None], torch.tensor(y).float()[None]).item()
        assert ours32 == pytest.approx(_ssim_numpy(x, y), abs=1e-5)


def test_ssim_against_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    x, y = rng.random((30, 26)), rng.random((30, 26))
    ref = skm.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert metrics.ssim(torch.tensor(x)[None], torch.tensor(y)[None]).item() == pytest.approx(ref, abs=1e-12)


def test_ssim_by_hand_and_bad_input() -> None:
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3))
    # constant 0 vs constant 1: only the luminance term survives, C1 / (1 + C1)
    c1 = 0.01**2
    s = metrics.ssim(torch.zeros(1, 12, 12, dtype=torch.float64), torch.ones(1, 12, 12, dtype=torch.float64))
    assert s.item() == pytest.approx(c1 / (1 + c1), rel=1e-12)
    torch.testing.assert_close(metrics.mse(torch.zeros(2, 3, 3), torch.full((2, 3, 3), 0.5)), torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="at least 11 x 11"):
        metrics.ssim(torch.rand(1, 7, 7), torch.rand(1, 7, 7))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(torch.rand(1, 12, 12), torch.rand(1, 12, 13))


# ---------------------------------------------------------------- robustness
def test_gradient_noise_enters_before_weighting() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    captured = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    x = images.clone().requires_grad_(True)
    logits = model(x)
    targets = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), captured["a"])
    acts = captured["a"].detach()
    handle.remove()
    sigma = 0.7
    noise = torch.randn(grad.shape, generator=torch.Generator().manual_seed(5))
    weights = (grad + sigma * noise).mean(dim=(2, 3))  # oracle: noisy gradients, then Grad-CAM's weights
    expected = torch.relu(torch.einsum("bc,bchw->bhw", weights, acts))
    with fastcam.GradCAM(model, "layer4") as cam:
        with metrics.gradient_noise(cam, sigma, torch.Generator().manual_seed(5)):
            lowres = cam.explain(images, targets).lowres
        assert cam.gradient_noise == 0.0 and cam.noise_generator is None  # restored
    torch.testing.assert_close(lowres, expected, atol=1e-5, rtol=1e-4)


def test_gradient_noise_robustness() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with fastcam.GradCAMPlusPlus(model, "layer4") as cam:
        res = metrics.gradient_noise_robustness(cam, images, sigmas=(0.0, 0.1, 10.0), seed=3)
        again = metrics.gradient_noise_robustness(cam, images, sigmas=(0.0, 0.1, 10.0), seed=3)
    assert res.ssim.shape == res.mse.shape == (3, 2)
    torch.testing.assert_close(res.ssim[0], torch.ones(2))         # sigma 0: the clean map itself
    torch.testing.assert_close(res.mse[0], torch.zeros(2))
    assert bool((res.mse[2] > 0).all())                            # large noise changes the maps
    torch.testing.assert_close(res.ssim, again.ssim)               # seeded: reproducible
    with fastcam.ScoreCAM(model, "layer4") as cam, pytest.raises(ValueError, match="does not use gradients"):
        metrics.gradient_noise_robustness(cam, images)


# ---------------------------------------------------------------- fastcam eval on a tiny stored run
def test_fastcam_eval_on_a_tiny_run(tmp_path) -> None:
    import json

    from PIL import Image
    from safetensors.torch import save_file

    from fastcam.cli import main
    from fastcam.io.images import Preprocess
    from fastcam.metrics.evaluate import evaluate

    data, masks = tmp_path / "data", tmp_path / "masks"
    data.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(data / f"im{i}.png")
    m = np.zeros((64, 64), np.uint8)
    m[0:32, 0:32] = 255                                     # top-left quadrant, for im0 only
    Image.fromarray(m).save(masks / "im0.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "im1.png")   # empty: left out
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=3).eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    run_dir = tmp_path / "runs" / "gradcam"
    run = fastcam.explain_dataset(model, str(data), method="gradcam", target_layer="layer4", out=run_dir,
                                  batch_size=2, device="cpu", preprocess=Preprocess(channels=3), progress=False,
                                  model_info={"spec": "tiny_resnet", "weights": str(tmp_path / "w.safetensors")})
    (run_dir / "report.html").write_text("<html><body><p>report</p></body></html>")
    rc = main(["eval", str(run_dir), "--masks", str(masks), "--steps", "4", "--sigmas", "0.1,5", "--quiet",
               "--out", str(tmp_path / "combined")])
    assert rc == 0
    result = json.loads((run_dir / "eval" / "metrics.json").read_text())
    summary = result["summary"]
    assert summary["deletion"]["n"] == summary["robustness"]["n"] == 3 and summary["pointing_game"]["n"] == 1
    # the same numbers by hand, from the stored maps and the metrics API
    maps = fastcam.methods._combine.upsample_normalize(run.lowres.float(), (64, 64))
    from fastcam.io.images import ImageFolder

    images = torch.stack([ImageFolder(data, Preprocess(channels=3))[i]["image"] for i in range(3)])
    auc = metrics.deletion(model, images, maps, run.targets, steps=4).auc
    assert summary["deletion"]["mean"] == pytest.approx(auc.mean().item(), abs=1e-5)
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, :32, :32] = True
    assert summary["precision"]["mean"] == pytest.approx(metrics.activation_precision(maps[:1], mask).item(), abs=1e-5)
    assert result["robustness"]["sigmas"] == [0.1, 5.0] and len(result["curves"]["insertion"]) == 5
    assert {p.name for p in (tmp_path / "combined").iterdir()} >= {"metrics.json", "metrics.md", "curves.png",
                                                                   "metrics.png", "robustness.png"}
    report = (run_dir / "report.html").read_text()
    assert report.count("<!-- fastcam-eval -->") == 1 and "eval/curves.png" in report
    # the wrong weights are refused, not silently scored
    save_file(tiny_resnet(num_classes=3).state_dict(), str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="state hash differs"):
        evaluate(run_dir, "deletion", weights=str(tmp_path / "other.safetensors"), progress=False,
                 out=tmp_path / "c2")
    assert main(["eval", str(run_dir), "--metrics", "nonsense", "--quiet"]) == 2
