"""Structural similarity (SSIM) of Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004), batched in torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: the paper's constants: Gaussian window sigma 1.5 truncated at 3.5 sigma (11 x 11), K1 = 0.01, K2 = 0.03
SIGMA = 1.5
TRUNCATE = 3.5
K1, K2 = 0.01, 0.03


def gaussian_window(sigma: float = SIGMA, truncate: float = TRUNCATE, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """The normalised 1-D Gaussian of radius int(truncate * sigma + 0.5) (scipy's truncation rule)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, sigma: float = SIGMA) -> Tensor:
    r"""Mean SSIM of each pair of single-channel images: (B, H, W), (B, H, W) -> (B,).

    With Gaussian-weighted local statistics (window $w$, sigma 1.5, 11 x 11):
    $\mu_x = w * x$, $\sigma_x^2 = w * x^2 - \mu_x^2$, $\sigma_{xy} = w * (xy) - \mu_x\mu_y$ (population
    moments), $C_1 = (K_1 L)^2$, $C_2 = (K_2 L)^2$ with $K_1 = 0.01$, $K_2 = 0.03$, $L$ = `data_range`:

    $$ \mathrm{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
                                  {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)} $$

    averaged over every window position that lies fully inside the image (no padding). This equals
    `skimage.metrics.structural_similarity(x, y, data_range=L, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`, which filters with padding and then crops the same border.
    Reference: Z. Wang et al., "Image quality assessment: from error visibility to structural similarity",
    IEEE Trans. Image Process. 13(4), 2004.

    Computed in the inputs' dtype (at least float32). Identical images give exactly 1 wherever the local
    variance is representable; images smaller than the window raise ValueError.
    """
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be (B, H, W), got shape {tuple(t.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    window = gaussian_window(sigma, dtype=dtype, device=x.device)
    size = window.numel()
    if x.shape[1] < size or x.shape[2] < size:
        raise ValueError(f"SSIM needs images of at least {size} x {size} pixels (the Gaussian window), "
                         f"got {tuple(x.shape[1:])}")
    x = x.to(dtype).unsqueeze(1)
    y = y.to(dtype).unsqueeze(1)
    # the 2-D window is separable: filter rows then columns, 'valid' (no padding)
    rows, cols = window.view(1, 1, 1, size), window.view(1, 1, size, 1)

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, rows), cols)

    # the five local moments in one batched filter pass
    stats = filt(torch.cat([x, y, x * x, y * y, x * y], dim=1).flatten(0, 1).unsqueeze(1))
    stats = stats.view(x.shape[0], 5, *stats.shape[-2:])
    mu_x, mu_y, xx, yy, xy = stats.unbind(1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return index.mean(dim=(1, 2))


def mse(x: Tensor, y: Tensor) -> Tensor:
    r"""Mean squared error of each pair: (B, ...) , (B, ...) -> (B,), $\frac1N\sum (x - y)^2$."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    diff = x.to(torch.promote_types(x.dtype, torch.float32)) - y.to(torch.promote_types(y.dtype, torch.float32))
    return (diff * diff).flatten(1).mean(dim=1)
