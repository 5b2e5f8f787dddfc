"""3-D volumes (B, C, D, H, W) with 5-D activations (Conv3d networks): every method, against float64 hand
computations (Grad-CAM, Grad-CAM++, Score-CAM with trilinear masks, CF-CAM with scikit-learn's DBSCAN and
scipy's 3-D Gaussian filter)."""
from __future__ import annotations


import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN
from torch import nn

import fastcam
from fastcam.methods.registry import method_names
from fastcam.models import tiny_resnet3d
from fastcam_testkit.byom import assert_maps_close, class_score, hand_gradcam
from fastcam_testkit.common import gen
from fastcam_testkit.methods import make_method as _make

POST_HOC = method_names(post_hoc=True)


@pytest.fixture(scope="module")
def net3d() -> nn.Module:
    torch.manual_seed(2)  # a random network whose Grad-CAM maps for these targets are not all zero
    return tiny_resnet3d(num_classes=3, in_channels=1, width=8).eval()


@pytest.fixture(scope="module")
def volumes() -> torch.Tensor:
    return torch.randn(2, 1, 20, 24, 28, generator=gen(0))


@pytest.mark.parametrize("name", POST_HOC)
@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_every_method_explains_volumes(net3d: nn.Module, volumes: torch.Tensor, name: str, layer: str, one_thread: None) -> None:
    exp = _make(name, net3d, layer).explain(volumes, [0, 2])
    assert exp.maps.shape == (2, 20, 24, 28) and exp.lowres.dim() == 4 and exp.logits.shape == (2, 3)
    assert torch.isfinite(exp.maps).all() and exp.maps.min() >= 0
    # a principal component of one position is centred away: Eigen maps of a 1x1x1 layer are zero (not NaN)
    single = name.startswith("eigen") and exp.lowres[0].numel() == 1
    torch.testing.assert_close(exp.maps.flatten(1).amax(1), torch.zeros(2) if single else torch.ones(2))
    assert exp.targets.tolist() == [0, 2]
    assert all(p.grad is None for p in net3d.parameters())


def test_gradcam_and_gradcampp_volumes_match_hand_computation(net3d: nn.Module, volumes: torch.Tensor, one_thread: None) -> None:
    model = net3d.double()
    try:
        x = volumes.double()
        classes = torch.tensor([0, 2])
        lowres, maps = hand_gradcam(model, model.layer3, x, class_score(classes), lambda t: t)
        exp = fastcam.GradCAM(model, "layer3").explain(x, classes)
        assert_maps_close(exp.lowres, exp.maps, lowres, maps)  # trilinear upsampling, align_corners=False

        seen: list[torch.Tensor] = []
        handle = model.layer3.register_forward_hook(lambda m, i, o: seen.append(o))
        out = model(x)
        handle.remove()
        (g,) = torch.autograd.grad(out.gather(1, classes[:, None]).sum(), seen[0])
        a = seen[0].detach()
        total = a.sum(dim=(2, 3, 4), keepdim=True)
        denom = 2 * g**2 + total * g**3
        alpha = torch.where(denom != 0, g**2 / torch.where(denom != 0, denom, 1), 0)
        w = (alpha * torch.relu(g)).sum(dim=(2, 3, 4))
        expected = torch.relu((w[:, :, None, None, None] * a).sum(1))
        got = fastcam.GradCAMPlusPlus(model, "layer3").explain(x, classes).lowres.double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    finally:
        model.float()


def test_scorecam_volumes_match_hand_computation(net3d: nn.Module, one_thread: None) -> None:
    model = net3d.double()
    try:
        x = torch.randn(1, 1, 16, 16, 20, generator=gen(1), dtype=torch.float64)
        seen: list[torch.Tensor] = []
        handle = model.layer4.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
        with torch.no_grad():
            base = torch.softmax(model(x), 1)[0, 2]
            handle.remove()
            acts = seen[0][0]
            scores = []
            for a in acts:
                span = a.max() - a.min()
                mask = (a - a.min()) / span if span > 0 else torch.zeros_like(a)
                up = F.interpolate(mask[None, None], size=x.shape[2:], mode="trilinear", align_corners=False)
                scores.append(torch.softmax(model(x * up), 1)[0, 2])
        weights = torch.softmax(torch.stack(scores) - base, dim=0)
        expected = torch.relu((weights[:, None, None, None] * acts).sum(0))
        got = fastcam.ScoreCAM(model, "layer4", batch_size=7).explain(x, 2).lowres[0].double()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7 * float(expected.max()))
    finally:
        model.float()


# ---------------------------------------------------------------------------------------------- CF-CAM


class MadeUpNet3d(nn.Module):
    """Target layer output = avgpool3d(x) (designed activations); logits y_k = <W_k, A> + 1/2 <V_k, A²>."""

    def __init__(self, weight: torch.Tensor, quad: torch.Tensor) -> None:
        super().__init__()
        self.pool = nn.AvgPool3d(2)
        self.features = nn.Identity()
        self.register_buffer("weight", weight)
        self.register_buffer("quad", quad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(self.pool(x))
        return torch.einsum("bcdhw,kcdhw->bk", a, self.weight) + 0.5 * torch.einsum("bcdhw,kcdhw->bk", a * a, self.quad)


def designed_activations(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    """40 channels: 10 of high norm (important), 3 tight groups of 9 (clusters) and 3 outliers (noise)."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(3, *shape))
    channels = [5 * rng.normal(size=shape) for _ in range(10)]
    channels += [protos[k] + 0.02 * rng.normal(size=shape) for k in range(3) for _ in range(9)]
    channels += [2 * rng.normal(size=shape) for _ in range(3)]
    return np.stack(channels).astype(np.float32).astype(np.float64)


def oracle_labels(acts: np.ndarray) -> np.ndarray:
    points = acts.reshape(acts.shape[0], -1)
    norms = np.linalg.norm(points, axis=1)
    labels = np.full(len(points), -2)
    rest = np.flatnonzero(norms < np.percentile(norms, 75))
    dist = np.linalg.norm(points[rest, None] - points[None, rest], axis=2)
    eps = max(np.percentile(dist[~np.eye(len(rest), dtype=bool)], 25), 1e-5)
    labels[rest] = DBSCAN(eps=eps, min_samples=max(2, int(0.05 * len(rest)))).fit(points[rest]).labels_
    return labels


def test_cfcam_volumes_match_float64_oracle() -> None:
    shape = (3, 4, 5)
    acts = np.stack([designed_activations(1, shape), designed_activations(2, shape)])
    g = torch.Generator().manual_seed(3)
    net = MadeUpNet3d(3 * torch.randn(3, 40, *shape, generator=g), 1e-4 * torch.randn(3, 40, *shape, generator=g)).eval()
    targets = [2, 0]
    x = torch.from_numpy(acts).float()
    for dim in (2, 3, 4):
        x = x.repeat_interleave(2, dim=dim)
    exp = fastcam.CFCAM(net, "features", cluster_backend="sklearn").explain(x.unsqueeze(0).flatten(0, 1), targets)

    for b, k in enumerate(targets):
        labels = oracle_labels(acts[b])
        assert (labels >= 0).any() and (labels == -1).any()  # clusters and noise are exercised
        grads = net.weight[k].double().numpy() + net.quad[k].double().numpy() * acts[b]  # dy/dA in closed form
        scores = grads.mean(axis=(1, 2, 3))
        for cluster in range(labels.max() + 1):
            members = labels == cluster
            filtered = scipy.ndimage.gaussian_filter(grads[members].mean(axis=0), 1.0, mode="constant", truncate=4.0)
            scores[members] = filtered.mean()
        keep = labels != -1
        weights = np.zeros_like(scores)
        weights[keep] = np.exp(scores[keep] - scores[keep].max()) / np.exp(scores[keep] - scores[keep].max()).sum()
        lowres = np.maximum(np.tensordot(weights, acts[b], axes=1), 0)
        np.testing.assert_allclose(exp.lowres[b].numpy(), lowres, rtol=1e-5, atol=1e-5 * lowres.max())


def test_volumes_refuse_the_2d_only_paths(net3d: nn.Module, volumes: torch.Tensor) -> None:
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match="backend='triton' handles 2-D maps only"):
        fastcam.CFCAM(net3d, "layer4", backend="triton")(volumes)
    with pytest.raises(ValueError, match="gives 2-D maps .* for 3-D images"):
        fastcam.GradCAM(net3d, "layer4", reshape_transform=lambda t: t.mean(2))(volumes)
