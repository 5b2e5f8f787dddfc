"""Bootstrap confidence intervals of means: the error bars of `fastcam eval`'s tables and plots.

Percentile bootstrap (Efron & Tibshirani 1993): resample the images with replacement `resamples` times,
take the mean of each resample, report the (1 - level)/2 and (1 + level)/2 quantiles of those means.
A resample is a row of multinomial counts, so the resampled means of a whole curve (n images x T steps)
are one matrix product per chunk of resamples; seeded, so the same values give the same interval.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_mean_ci(values: np.ndarray | list[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the `level` percentile-bootstrap interval of the mean over axis 0.

    `values` is (n,) (scalars per image: returns numpy scalars) or (n, T) (a curve per image: returns (T,)
    arrays, pointwise intervals). One value gives a zero-width interval at it; none gives NaN.
    """
    a = np.asarray(values, dtype=np.float64)
    scalar = a.ndim == 1
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if a.shape[0] == 0:
        nan = np.full(a.shape[1:] or (1,), np.nan)
        return (nan[0], nan[0]) if scalar else (nan, nan.copy())
    a = a.reshape(a.shape[0], -1)
    n = a.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, a.shape[1]))
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))  # bounded memory: chunk x n counts at a time
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size)    # (size, n) images drawn per resample
        means[start:start + size] = counts @ a / n
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return (low[0], high[0]) if scalar else (low, high)
