"""The baseline of CF-CAM's speed-up: CF-CAM as the authors' released code computes it, image by image
(github jerryp-hfut/CF-CAM, cfcam.py)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ReleasedCFCAMLoop:
    """CF-CAM as the authors' released code computes it, one image at a time (the benchmark's baseline).

    Follows github jerryp-hfut/CF-CAM `cfcam.py` step for step, with its costs: a forward hook and a full
    backward hook on the target layer; per image, `model.zero_grad()`, a forward and `logits.backward`
    with a one-hot gradient (a full backward that fills every parameter's `.grad`); the activations moved
    to the host; channel L2 norms, "important" channels at or above the 75th percentile; for the others,
    eps = 25th percentile of the off-diagonal pairwise distances from an N x N x D broadcast array
    (floored at 1e-5), scikit-learn DBSCAN with min_samples = max(2, int(0.05 N)); a Python loop over
    important channels (weight = mean gradient) and over clusters (mean gradient filtered by the
    map-sized "bilateral" kernel: spatial Gaussian sigma 5 centred at (h/2, w/2) times the range term
    around the mean gradient, sigma 0.1, normalised, 'same' convolution; every member gets the filtered
    map's mean); softmax over the kept channels' weights, ReLU of the weighted sum, bilinear upsampling,
    division by the max; the map returned as a numpy array.
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module) -> None:
        self.model = model
        self.features: Tensor | None = None
        self.gradients: Tensor | None = None
        self._handles = [
            target_layer.register_forward_hook(self._keep_output),
            target_layer.register_full_backward_hook(self._keep_grad_output),
        ]

    def _keep_output(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self.features = output

    def _keep_grad_output(self, module: nn.Module, grad_input: Any, grad_output: tuple[Tensor, ...]) -> None:
        self.gradients = grad_output[0]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.model.zero_grad(set_to_none=True)

    @staticmethod
    def _eps(points: np.ndarray) -> float:
        distances = np.linalg.norm(points[:, None] - points[None, :], axis=2)   # the N x N x D array
        np.fill_diagonal(distances, np.inf)
        flat = distances.ravel()
        return max(float(np.percentile(flat[flat != np.inf], 25)), 1e-5)

    def _clusters(self, features: Tensor) -> tuple[np.ndarray, int, np.ndarray]:
        from sklearn.cluster import DBSCAN

        channels = features.shape[0]
        matrix = features.reshape(channels, -1).cpu().numpy()
        norms = np.linalg.norm(matrix, ord=2, axis=1)
        important = norms >= np.percentile(norms, 75)
        important_idx, rest_idx = np.where(important)[0], np.where(~important)[0]
        labels = np.full(channels, -2, dtype=int)                               # -2: important channel
        n_clusters = 0
        if len(rest_idx) > 0:
            rest = matrix[rest_idx]
            fitted = DBSCAN(eps=self._eps(rest), min_samples=max(2, int(len(rest_idx) * 0.05))).fit(rest)
            labels[rest_idx] = fitted.labels_
            n_clusters = len(np.unique(fitted.labels_)) - (1 if -1 in fitted.labels_ else 0)
        return labels, n_clusters, important_idx

    @staticmethod
    def _filter(gradient: Tensor, sigma_spatial: float = 5.0, sigma_range: float = 0.1) -> Tensor:
        g = gradient[None, None]
        h, w = g.shape[-2:]
        rows, cols = torch.meshgrid(torch.arange(h, device=g.device), torch.arange(w, device=g.device), indexing="ij")
        spatial = torch.exp(-((rows.float() - h / 2) ** 2 + (cols.float() - w / 2) ** 2) / (2 * sigma_spatial**2))
        kernel = spatial[None, None] * torch.exp(-((g - g.mean()) ** 2) / (2 * sigma_range**2))
        kernel = kernel / (kernel.sum(dim=(-1, -2), keepdim=True) + 1e-6)
        return F.conv2d(g, kernel, padding="same").squeeze()

    def __call__(self, image: Tensor, class_idx: int | None = None) -> np.ndarray:
        self.model.eval()
        self.model.zero_grad()
        logits = self.model(image)
        if class_idx is None:
            class_idx = int(torch.argmax(logits, dim=1).item())
        one_hot = torch.zeros_like(logits)
        one_hot[0, class_idx] = 1
        logits.backward(gradient=one_hot)
        if self.features is None or self.gradients is None:
            raise ValueError("the target layer's activations or gradients were not captured")
        features, gradients = self.features.detach()[0], self.gradients.detach()[0]
        channels = features.shape[0]
        labels, n_clusters, important_idx = self._clusters(features)
        if len(important_idx) == 0 and n_clusters == 0:
            raise ValueError("no important channel and no cluster")
        weights = torch.zeros(channels, device=image.device)
        kept = torch.zeros(channels, dtype=torch.bool, device=image.device)
        kept[np.concatenate([important_idx, np.where(labels != -1)[0]])] = True
        filtered = torch.zeros_like(gradients)
        for c in important_idx:
            filtered[c] = gradients[c]
            weights[c] = torch.mean(gradients[c])
        for cluster in range(n_clusters):
            members = np.where(labels == cluster)[0]
            if len(members) == 0:
                continue
            smooth = self._filter(torch.mean(gradients[members], dim=0))
            for c in members:
                filtered[c] = smooth
                weights[c] = torch.mean(smooth)
        soft = torch.softmax(weights[kept], dim=0).reshape(-1, 1, 1)
        cam = torch.relu(torch.sum(soft * features[kept], dim=0))
        cam = F.interpolate(cam[None, None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False).squeeze()
        peak = torch.max(cam)
        if peak > 0:
            cam = cam / peak
        return cam.cpu().numpy()
