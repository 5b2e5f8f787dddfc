"""CF-CAM against independent computations.

* a float64 step-by-step oracle (numpy percentiles, explicit distance matrices, scikit-learn DBSCAN,
  scipy's Gaussian filter, an explicit loop for the map-sized kernel), one image at a time;
* a float32 transcription of the released code's per-image computation (jerryp-hfut/CF-CAM, cfcam.py),
  for `variant="reference"`.

Made-up activations come from a model whose target layer ("features", an Identity after a 2x2 average
pool) outputs exactly the activations we design, so the images are the activations upsampled 2x (nearest)
and the maps are upsampled 2x again by the shared path. Its head is
y_k = <W_k, A> + 1/2 <V_k, A²>, so dy_k/dA = W_k + V_k ⊙ A is known in closed form.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from sklearn.cluster import DBSCAN
from torch import nn

import fastcam
from fastcam.methods.cfcam import CFCAM, channel_labels
from fastcam.models import tiny_resnet
from fastcam.ops import (
    IMPORTANT,
    NOISE,
    cluster_filter_weights,
    gaussian_coverage,
    reference_filtered_mean,
)

# ------------------------------------------------------------------------------------------- made-up data


class MadeUpNet(nn.Module):
    """Target layer output = avgpool2(x); logits y_k = <W_k, A> + 1/2 <V_k, A*A>."""

    def __init__(self, weight: torch.Tensor, quad: torch.Tensor) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.features = nn.Identity()
        self.register_buffer("weight", weight)  # (K, C, h, w)
        self.register_buffer("quad", quad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(self.pool(x))
        return torch.einsum("bchw,kchw->bk", a, self.weight) + 0.5 * torch.einsum("bchw,kchw->bk", a * a, self.quad)


def images_for(acts: torch.Tensor) -> torch.Tensor:
    """Images whose 2x2 average pool is exactly `acts` (each value repeated in a 2x2 block)."""
    return acts.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def make_net(channels: int, height: int, width: int, seed: int, grad_scale: float = 3.0) -> MadeUpNet:
    g = torch.Generator().manual_seed(seed)
    weight = grad_scale * torch.randn(3, channels, height, width, generator=g)
    quad = 1e-4 * torch.randn(3, channels, height, width, generator=g)
    return MadeUpNet(weight, quad).eval()


def true_gradients(net: MadeUpNet, acts: np.ndarray, targets: list[int]) -> np.ndarray:
    """float64 dy_t/dA = W_t + V_t ⊙ A, per image."""
    w = net.weight.double().numpy()
    v = net.quad.double().numpy()
    return np.stack([w[t] + v[t] * acts[b] for b, t in enumerate(targets)])


LINE_HEIGHT, LINE_WIDTH = 3, 4  # odd x even: exercises the asymmetric 'same' padding of the map-sized kernel
# 60 positions on a line: three runs (24, 20, 10 points at spacing 1) -> three clusters; 37, 86 and 223
# lie exactly eps = 14 from one run's end -> border points (noise if the tie at eps were missed);
# 300, 305 are within eps of each other but not core (min_samples = 3); 400 is isolated -> 3 noise points.
LINE_POSITIONS = (
    list(range(0, 24)) + [37] + list(range(100, 120)) + [86] + list(range(200, 210)) + [223, 300, 305, 400]
)


def line_activations(seed: int, scale: int = 1) -> np.ndarray:
    """(81, 3, 4) integer-valued float activations: 60 'remaining' channels = base + position·e0 (all pairwise
    distances are exact integers, so eps = 14·scale exactly), 21 'important' channels with much larger norms.
    81 channels put the 75th percentile exactly on a channel norm (virtual index 60): tests the `>=`.
    Channel order is shuffled so clusters interleave with each other and with the important channels."""
    rng = np.random.default_rng(seed)
    dims = LINE_HEIGHT * LINE_WIDTH
    base = rng.integers(0, 4, size=dims).astype(np.float64)
    remaining = np.tile(base, (60, 1))
    remaining[:, 0] += scale * np.asarray(LINE_POSITIONS, dtype=np.float64)
    important = rng.integers(2000, 3000, size=(21, dims)).astype(np.float64)
    feats = np.concatenate([remaining, important])[rng.permutation(81)]
    return feats.reshape(81, LINE_HEIGHT, LINE_WIDTH)


def blob_activations(seed: int, height: int = 3, width: int = 5) -> np.ndarray:
    """(83, h, w) float activations: three Gaussian blobs (24, 20, 10 channels), 8 scattered channels and 21
    high-norm channels. 83 channels leave 62 to cluster: min_samples = 3, and the 25th percentile of the
    62·61 distances interpolates between two different distances (no tie at eps)."""
    rng = np.random.default_rng(seed)
    dims = height * width
    centres = rng.uniform(0, 10, size=(3, dims))
    blobs = [centres[i] + 0.3 * rng.standard_normal((n, dims)) for i, n in enumerate((24, 20, 10))]
    scattered = rng.uniform(-15, 25, size=(8, dims))
    important = rng.uniform(25, 45, size=(21, dims))
    feats = np.concatenate(blobs + [scattered, important])[rng.permutation(83)]
    return np.abs(feats).astype(np.float32).astype(np.float64).reshape(83, height, width)


# ------------------------------------------------------------------------------------------- float64 oracle


def oracle_labels(acts: np.ndarray, min_samples_floor: int = 2, importance: float = 75.0) -> np.ndarray:
    """Step-by-step labels of one image (C, h, w), float64: -2 important, -1 noise, clusters 0..."""
    feats = acts.reshape(acts.shape[0], -1)
    norms = np.sqrt((feats**2).sum(axis=1))
    important = norms >= np.percentile(norms, importance)
    labels = np.full(feats.shape[0], -2, dtype=np.int64)
    rest = np.flatnonzero(~important)
    if rest.size:
        points = feats[rest]
        eps = 1e-5
        if rest.size >= 2:
            dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
            eps = max(np.percentile(dist[~np.eye(rest.size, dtype=bool)], 25), 1e-5)
        min_samples = max(min_samples_floor, int(0.05 * rest.size))
        labels[rest] = DBSCAN(eps=eps, min_samples=min_samples).fit(points).labels_
    return labels


def oracle_reference_filter(mean: np.ndarray, spatial_sigma: float = 5.0, range_sigma: float = 0.1) -> np.ndarray:
    """The released map-sized kernel applied by explicit loops with PyTorch's 'same' convention."""
    h, w = mean.shape
    ii, jj = np.meshgrid(np.arange(h) - h / 2, np.arange(w) - w / 2, indexing="ij")
    kernel = np.exp(-(ii**2 + jj**2) / (2 * spatial_sigma**2)) * np.exp(-((mean - mean.mean()) ** 2) / (2 * range_sigma**2))
    kernel = kernel / (kernel.sum() + 1e-6)
    top, left = (h - 1) // 2, (w - 1) // 2
    out = np.zeros_like(mean)
    for i in range(h):
        for j in range(w):
            for a in range(h):
                for b in range(w):
                    r, c = i + a - top, j + b - left
                    if 0 <= r < h and 0 <= c < w:
                        out[i, j] += kernel[a, b] * mean[r, c]
    return out


def oracle_weights(grads: np.ndarray, labels: np.ndarray, variant: str, sigma: float | None = None) -> np.ndarray:
    """Softmax weights of one image from its float64 gradients (C, h, w) and labels."""
    scores = grads.mean(axis=(1, 2))
    for k in range(labels.max() + 1):
        members = labels == k
        mean = grads[members].mean(axis=0)
        if variant == "paper":
            filtered = scipy.ndimage.gaussian_filter(mean, 1.0 if sigma is None else sigma, mode="constant", cval=0.0, truncate=4.0)
        else:
            filtered = oracle_reference_filter(mean, 5.0 if sigma is None else sigma)
        scores[members] = filtered.mean()
    keep = labels != -1
    weights = np.zeros_like(scores)
    e = np.exp(scores[keep] - scores[keep].max())
    weights[keep] = e / e.sum()
    return weights


def oracle_lowres(acts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.maximum(np.tensordot(weights, acts, axes=1), 0.0)


# ------------------------------------------------------------------------------------------- released code, transcribed


def released_cfcam(fmap: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """One image through the released code's steps, float32 as it runs: -> (map (H, W), weights (C,))."""
    channels = fmap.shape[0]
    feats = fmap.reshape(channels, -1).numpy()
    norms = np.linalg.norm(feats, ord=2, axis=1)
    important = np.flatnonzero(norms >= np.percentile(norms, 75))
    rest = np.flatnonzero(norms < np.percentile(norms, 75))
    labels = np.full(channels, -2, dtype=int)
    n_clusters = 0
    if rest.size:
        sub = feats[rest]
        dist = np.linalg.norm(sub[:, None] - sub[None, :], axis=2)
        np.fill_diagonal(dist, np.inf)
        flat = dist.flatten()
        eps = max(np.percentile(flat[flat != np.inf], 25), 1e-5)
        found = DBSCAN(eps=eps, min_samples=max(2, int(len(rest) * 0.05))).fit(sub).labels_
        labels[rest] = found
        n_clusters = len(set(found.tolist()) - {-1})

    def bilateral(g: torch.Tensor) -> torch.Tensor:
        g = g[None, None]
        h, w = g.shape[-2:]
        x, y = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        x = x.float() - h / 2
        y = y.float() - w / 2
        spatial = torch.exp(-(x**2 + y**2) / (2 * 5.0**2))[None, None]
        rng = torch.exp(-((g - g.mean()) ** 2) / (2 * 0.1**2))
        k = spatial * rng
        k = k / (k.sum(dim=(-1, -2), keepdim=True) + 1e-6)
        return F.conv2d(g, k, padding="same").squeeze()

    weights = torch.zeros(channels)
    for c in important:
        weights[c] = grad[c].mean()
    for k in range(n_clusters):
        members = np.flatnonzero(labels == k)
        weights[members] = bilateral(grad[members].mean(dim=0)).mean()
    keep = torch.from_numpy(labels != -1)
    alpha = torch.softmax(weights[keep], dim=0)
    cam = torch.relu((alpha[:, None, None] * fmap[keep]).sum(dim=0))
    cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False).squeeze()
    if cam.max() > 0:
        cam = cam / cam.max()
    full = torch.zeros(channels)
    full[keep] = alpha
    return cam.numpy(), full


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def line_case() -> tuple[MadeUpNet, np.ndarray, list[int]]:
    acts = np.stack([line_activations(0), line_activations(1, scale=2)])
    return make_net(81, LINE_HEIGHT, LINE_WIDTH, seed=2), acts, [0, 2]


@pytest.fixture(scope="module")
def blob_case() -> tuple[MadeUpNet, np.ndarray, list[int]]:
    acts = np.stack([blob_activations(3), blob_activations(4), blob_activations(5)])
    return make_net(83, 3, 5, seed=6), acts, [1, 0, 2]


def as_input(acts: np.ndarray) -> torch.Tensor:
    return images_for(torch.from_numpy(acts).float())


def labels_summary(labels: np.ndarray, acts: np.ndarray) -> tuple[int, int, int]:
    """(clusters, noise, border) of one image's oracle labels (border: clustered but not core)."""
    rest = np.flatnonzero(labels != -2)
    points = acts.reshape(acts.shape[0], -1)[rest]
    dist = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    eps = max(np.percentile(dist[~np.eye(rest.size, dtype=bool)], 25), 1e-5)
    core = (dist <= eps).sum(1) >= max(2, int(0.05 * rest.size))
    sub = labels[rest]
    return int(sub.max() + 1), int((sub == -1).sum()), int(((sub >= 0) & ~core).sum())


# ------------------------------------------------------------------------------------------- labels


def test_line_data_has_clusters_noise_and_border_points_at_an_exact_tie(line_case) -> None:
    _, acts, _ = line_case
    for image in acts:
        clusters, noise, border = labels_summary(oracle_labels(image), image)
        assert (clusters, noise, border) == (3, 3, 3)


@pytest.mark.parametrize("case", ["line_case", "blob_case"])
def test_channel_labels_match_float64_oracle(case: str, request: pytest.FixtureRequest) -> None:
    _, acts, _ = request.getfixturevalue(case)
    labels = channel_labels(torch.from_numpy(acts).float(), cluster_backend="sklearn")
    expected = np.stack([oracle_labels(a.astype(np.float32).astype(np.float64)) for a in acts])
    np.testing.assert_array_equal(labels.numpy(), expected)
    assert (labels == IMPORTANT).sum(dim=1).tolist() == [21] * len(acts)
    for image, lab in zip(acts, expected):  # the blobs are a real multi-cluster case too
        clusters, noise, _ = labels_summary(lab, image)
        assert clusters >= 3 and noise >= 1


@pytest.mark.parametrize("case", ["line_case", "blob_case"])
def test_batched_torch_cluster_backend_gives_the_same_labels(case: str, request: pytest.FixtureRequest) -> None:
    _, acts, _ = request.getfixturevalue(case)
    points = torch.from_numpy(acts).float()
    assert torch.equal(channel_labels(points, cluster_backend="torch"), channel_labels(points, cluster_backend="sklearn"))


# ------------------------------------------------------------------------------------------- weights and maps


@pytest.mark.parametrize("case", ["line_case", "blob_case"])
@pytest.mark.parametrize("variant, sigma", [("paper", None), ("paper", 0.6), ("paper", 2.5), ("reference", None), ("reference", 1.5)])
def test_weights_and_maps_match_float64_oracle(case: str, variant: str, sigma: float | None, request: pytest.FixtureRequest) -> None:
    net, acts, targets = request.getfixturevalue(case)
    acts32 = acts.astype(np.float32).astype(np.float64)
    grads = true_gradients(net, acts32, targets)
    labels = np.stack([oracle_labels(a) for a in acts32])
    expected_w = np.stack([oracle_weights(g, lab, variant, sigma) for g, lab in zip(grads, labels)])

    got_w = cluster_filter_weights(torch.from_numpy(grads).float(), torch.from_numpy(labels), variant=variant, sigma=sigma)
    assert got_w.dtype == torch.float32
    np.testing.assert_allclose(got_w.numpy(), expected_w, rtol=2e-5, atol=1e-7)
    assert np.all(got_w.numpy()[labels == NOISE] == 0)

    with CFCAM(net, "features", variant=variant, sigma=sigma, cluster_backend="sklearn") as cam:
        exp = cam.explain(as_input(acts), targets=targets)
    lowres = np.stack([oracle_lowres(a, w) for a, w in zip(acts32, expected_w)])
    scale = lowres.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.lowres.numpy() / scale, lowres / scale, rtol=0, atol=2e-6)
    up = F.interpolate(torch.from_numpy(lowres)[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(exp.maps.numpy(), up / up.max(axis=(1, 2), keepdims=True), rtol=0, atol=2e-6)


def test_float64_model_agrees_with_oracle_to_float64_precision(line_case) -> None:
    net, acts, targets = line_case
    net64 = make_net(81, LINE_HEIGHT, LINE_WIDTH, seed=2).double()
    grads = true_gradients(net64, acts, targets)
    labels = np.stack([oracle_labels(a) for a in acts])
    for variant in ("paper", "reference"):
        expected = np.stack([oracle_weights(g, lab, variant) for g, lab in zip(grads, labels)])
        got = cluster_filter_weights(torch.from_numpy(grads), torch.from_numpy(labels), variant=variant)
        assert got.dtype == torch.float64
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_filter_identities_against_explicit_filters() -> None:
    """The O(hw) forms used for the weights equal the mean of the explicitly filtered map."""
    g = torch.Generator().manual_seed(7)
    for h, w in [(1, 1), (2, 5), (7, 7), (6, 4), (5, 9)]:
        maps = torch.randn(4, h, w, generator=g, dtype=torch.float64) * 0.2
        for sigma, truncate in [(1.0, 4.0), (0.7, 2.0), (3.0, 4.0)]:
            explicit = [scipy.ndimage.gaussian_filter(m.numpy(), sigma, mode="constant", truncate=truncate).mean() for m in maps]
            via_coverage = (maps * gaussian_coverage(h, w, sigma, truncate, dtype=torch.float64)).mean(dim=(1, 2))
            np.testing.assert_allclose(via_coverage.numpy(), explicit, rtol=1e-12, atol=1e-15)
        explicit = [oracle_reference_filter(m.numpy()).mean() for m in maps]
        np.testing.assert_allclose(reference_filtered_mean(maps).numpy(), explicit, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------------- released code


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # the released call, as is
@pytest.mark.parametrize("case", ["line_case", "blob_case"])
def test_reference_variant_matches_released_code(case: str, request: pytest.FixtureRequest) -> None:
    net, acts, targets = request.getfixturevalue(case)
    images = as_input(acts)
    with CFCAM(net, "features", variant="reference", cluster_backend="sklearn") as cam:
        exp = cam.explain(images, targets=targets)
    grads = torch.from_numpy(true_gradients(net, acts.astype(np.float32).astype(np.float64), targets)).float()
    fmaps = torch.from_numpy(acts).float()
    for b in range(len(acts)):
        expected_map, expected_w = released_cfcam(fmaps[b], grads[b], tuple(images.shape[-2:]))
        labels = channel_labels(fmaps[b : b + 1], cluster_backend="sklearn")
        got_w = cluster_filter_weights(grads[b : b + 1], labels, variant="reference")[0]
        np.testing.assert_allclose(got_w.numpy(), expected_w.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(exp.maps[b].numpy(), expected_map, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- gradient noise


def test_gradient_noise_is_added_before_the_weights(blob_case) -> None:
    net, acts, targets = blob_case
    images = as_input(acts)
    kwargs = dict(variant="paper", cluster_backend="sklearn")
    with CFCAM(net, "features", **kwargs) as clean_cam, CFCAM(net, "features", gradient_noise=0.0, generator=1, **kwargs) as zero_cam:
        clean = clean_cam.explain(images, targets)
        assert torch.equal(zero_cam.explain(images, targets).lowres, clean.lowres)
    with CFCAM(net, "features", gradient_noise=0.5, generator=11, **kwargs) as noisy_cam:
        noisy = noisy_cam.explain(images, targets)
        again = noisy_cam.explain(images, targets)  # an int seed gives the same noise each call
    assert torch.equal(noisy.lowres, again.lowres)
    assert (noisy.lowres - clean.lowres).abs().max() > 1e-3 * clean.lowres.max()

    # the noise enters the gradients, so the weights are exactly those of the noisy gradients
    grads = torch.from_numpy(true_gradients(net, acts.astype(np.float32).astype(np.float64), targets)).float()
    noise = torch.randn(grads.shape, generator=torch.Generator().manual_seed(11))
    labels = channel_labels(torch.from_numpy(acts).float(), cluster_backend="sklearn")
    weights = cluster_filter_weights(grads + 0.5 * noise, labels, variant="paper")
    lowres = torch.relu(torch.einsum("bc,bchw->bhw", weights, torch.from_numpy(acts).float()))
    torch.testing.assert_close(noisy.lowres, lowres, rtol=1e-4, atol=1e-4 * float(lowres.max()))

    generator = torch.Generator().manual_seed(5)
    with CFCAM(net, "features", gradient_noise=0.5, generator=generator, **kwargs) as stream_cam:
        first, second = stream_cam.explain(images, targets), stream_cam.explain(images, targets)
    assert not torch.equal(first.lowres, second.lowres)  # a Generator's state advances


# ------------------------------------------------------------------------------------------- degenerate cases


def _check_defined(exp: fastcam.Explanation) -> None:
    assert torch.isfinite(exp.maps).all() and torch.isfinite(exp.lowres).all()
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_constant_activations_make_every_channel_important(variant: str) -> None:
    acts = np.full((2, 9, 3, 3), 1.5)
    net = make_net(9, 3, 3, seed=8)
    with CFCAM(net, "features", variant=variant) as cam:
        exp = cam.explain(as_input(acts), targets=[0, 1])
    _check_defined(exp)
    assert (channel_labels(torch.from_numpy(acts).float()) == IMPORTANT).all()
    torch.testing.assert_close(exp.lowres, torch.full((2, 3, 3), 1.5))  # softmax weights sum to 1
    assert torch.equal(exp.maps, torch.ones(2, 6, 6))


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_zero_gradients_give_uniform_weights_over_kept_channels(variant: str, blob_case) -> None:
    """The op: zero gradients give uniform weights over the kept channels (defined, no NaN). The method
    refuses a batch whose gradients are all exactly zero (the target does not depend on the layer): its
    maps would be the plain channel mean, silently."""
    _, acts, _ = blob_case
    labels = np.stack([oracle_labels(a.astype(np.float32).astype(np.float64)) for a in acts])
    got = cluster_filter_weights(torch.zeros(acts.shape), torch.from_numpy(labels), variant=variant)
    keep = (labels != NOISE).astype(np.float64)
    np.testing.assert_allclose(got.numpy(), keep / keep.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    net = MadeUpNet(torch.zeros(3, 83, 3, 5), torch.zeros(3, 83, 3, 5)).eval()
    with CFCAM(net, "features", variant=variant, cluster_backend="sklearn") as cam:
        with pytest.raises(ValueError, match="exactly zero for every image"):
            cam.explain(as_input(acts), targets=0)


def test_dbscan_finding_only_noise_keeps_only_important_channels(blob_case) -> None:
    net, acts, targets = blob_case
    with CFCAM(net, "features", min_samples_floor=1000, cluster_backend="sklearn") as cam:
        exp = cam.explain(as_input(acts), targets=targets)
    _check_defined(exp)
    labels = channel_labels(torch.from_numpy(acts).float(), min_samples_floor=1000, cluster_backend="sklearn")
    assert set(labels.unique().tolist()) == {IMPORTANT, NOISE}
    grads = true_gradients(net, acts.astype(np.float32).astype(np.float64), targets)
    important = labels.numpy() == IMPORTANT
    for b in range(len(acts)):
        scores = grads[b].mean(axis=(1, 2))[important[b]]
        w = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        expected = np.maximum(np.tensordot(w, acts[b][important[b]], axes=1), 0)
        np.testing.assert_allclose(exp.lowres[b].numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("channels, size", [(1, 1), (1, 3), (6, 1), (2, 2), (3, 1)])
def test_tiny_shapes_are_defined(variant: str, channels: int, size: int) -> None:
    """1x1 feature maps, a single channel, and too few remaining channels to form a pair."""
    acts = np.abs(np.random.default_rng(channels * 10 + size).standard_normal((2, channels, size, size))) + 0.1
    net = make_net(channels, size, size, seed=9)
    grads = true_gradients(net, acts.astype(np.float32).astype(np.float64), [0, 2])
    with CFCAM(net, "features", variant=variant, cluster_backend="sklearn") as cam:
        exp = cam.explain(as_input(acts), targets=[0, 2])
    _check_defined(exp)
    for b in range(2):
        labels = oracle_labels(acts[b].astype(np.float32).astype(np.float64))
        expected = oracle_lowres(acts[b], oracle_weights(grads[b], labels, variant))
        np.testing.assert_allclose(exp.lowres[b].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_percentile_extremes(blob_case) -> None:
    net, acts, targets = blob_case
    points = torch.from_numpy(acts).float()
    assert (channel_labels(points, importance_percentile=0.0) == IMPORTANT).all()
    top = channel_labels(points, importance_percentile=100.0, cluster_backend="sklearn")
    assert ((top == IMPORTANT).sum(dim=1) == 1).all()  # only the largest-norm channel
    with CFCAM(net, "features", importance_percentile=0.0) as cam:  # plain softmax over Grad-CAM weights
        exp = cam.explain(as_input(acts), targets=targets)
    grads = true_gradients(net, acts.astype(np.float32).astype(np.float64), targets)
    for b in range(len(acts)):
        scores = grads[b].mean(axis=(1, 2))
        w = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(exp.lowres[b].numpy(), oracle_lowres(acts[b], w), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- batching, real models, input checks


@pytest.mark.parametrize("variant", ["paper", "reference"])
@pytest.mark.parametrize("case", ["line_case", "blob_case"])
def test_batch_equals_each_image_alone(variant: str, case: str, request: pytest.FixtureRequest) -> None:
    net, acts, targets = request.getfixturevalue(case)
    images = as_input(acts)
    with CFCAM(net, "features", variant=variant, cluster_backend="sklearn") as cam:
        whole = cam.explain(images, targets=targets)
        for b in range(len(acts)):
            alone = cam.explain(images[b : b + 1], targets=targets[b])
            torch.testing.assert_close(alone.lowres[0], whole.lowres[b], rtol=1e-6, atol=1e-6 * float(whole.lowres[b].max()))
            torch.testing.assert_close(alone.maps[0], whole.maps[b], rtol=0, atol=1e-6)
    labels = channel_labels(torch.from_numpy(acts).float(), cluster_backend="sklearn")
    for b in range(len(acts)):
        assert torch.equal(channel_labels(torch.from_numpy(acts[b : b + 1]).float(), cluster_backend="sklearn")[0], labels[b])


def test_real_cnn_no_parameter_grad_and_valid_maps() -> None:
    torch.manual_seed(0)
    model = tiny_resnet(num_classes=5).eval()
    images = torch.randn(2, 3, 40, 36, generator=torch.Generator().manual_seed(1))
    for variant in ("paper", "reference"):
        with CFCAM(model, "layer3", variant=variant) as cam:
            exp = cam.explain(images)
        assert exp.maps.shape == (2, 40, 36) and exp.maps.dtype == torch.float32
        _check_defined(exp)
        assert exp.maps.amax(dim=(1, 2)).eq(1).all()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training


def test_bad_arguments_are_rejected() -> None:
    model = tiny_resnet(num_classes=5).eval()
    bad = [
        dict(variant="bilateral"),
        dict(importance_percentile=101),
        dict(eps_percentile=-1),
        dict(eps_floor=0.0),
        dict(sigma=0.0),
        dict(range_sigma=-0.1),
        dict(min_samples_floor=0),
        dict(cluster_backend="faiss"),
        dict(gradient_noise=-1.0),
        dict(gradient_noise=float("nan")),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            CFCAM(model, "layer4", **kwargs)
    with pytest.raises(TypeError):
        CFCAM(model, "layer4", generator="seed")
    acts = torch.rand(1, 8, 3, 3)
    for kwargs in [dict(importance_percentile=150.0), dict(eps_percentile=float("nan")), dict(eps_floor=-1.0)]:
        with pytest.raises(ValueError):
            channel_labels(acts, **kwargs)
    with pytest.raises(ValueError):
        channel_labels(torch.rand(8, 3, 3))
    with pytest.raises(ValueError):
        cluster_filter_weights(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        cluster_filter_weights(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, dtype=torch.long), sigma=-1.0)
    with pytest.raises(ValueError):
        cluster_filter_weights(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, dtype=torch.long), variant="gauss")


def test_exported() -> None:
    assert fastcam.CFCAM is CFCAM
    assert fastcam.methods.CFCAM is CFCAM


def test_clustering_defaults_live_in_one_frozen_options_object() -> None:
    import dataclasses
    import inspect

    from fastcam.methods.cfcam import ClusterOptions

    options = ClusterOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.eps_floor = 1.0  # type: ignore[misc]
    signature = inspect.signature(CFCAM).parameters
    for field in dataclasses.fields(ClusterOptions):  # the constructor's defaults are the object's
        assert signature[field.name].default == getattr(options, field.name), field.name
    cam = CFCAM(tiny_resnet(num_classes=5).eval(), "layer4", eps_percentile=30, cluster_backend="sklearn")
    assert cam.clustering == ClusterOptions(eps_percentile=30.0, cluster_backend="sklearn")
    acts = torch.rand(2, 12, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(channel_labels(acts, cam.clustering), channel_labels(acts, eps_percentile=30, cluster_backend="sklearn"))
    with pytest.raises(TypeError, match="min_samples_floor must be an int, got float"):
        ClusterOptions(min_samples_floor=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cluster_backend must be one of"):
        channel_labels(acts, cluster_backend="faiss")
