"""Batched exact DBSCAN and CF-CAM's pairwise-distance quantile.

>>> from fastcam.cluster import dbscan, pairwise_quantile, quantile_dbscan
>>> eps = pairwise_quantile(points, 0.25)              # (B,) float64, bit for bit numpy's quantile
>>> labels = dbscan(points, eps, min_samples=4)        # (B, N) int64, -1 = noise, scikit-learn's labels
>>> labels, eps = quantile_dbscan(points, 0.25, 4)     # both from one distance computation
"""
from fastcam.cluster.dbscan import BACKENDS, dbscan, quantile_dbscan
from fastcam.cluster.quantile import pairwise_quantile

__all__ = ["BACKENDS", "dbscan", "pairwise_quantile", "quantile_dbscan"]
