"""Batched exact DBSCAN and CF-CAM's pairwise-distance quantile.

>>> from fastcam.cluster import dbscan, pairwise_quantile
>>> eps = pairwise_quantile(points, 0.25)              # (B,) float64
>>> labels = dbscan(points, eps, min_samples=4)        # (B, N) int64, -1 = noise
"""
from fastcam.cluster.dbscan import BACKENDS, dbscan
from fastcam.cluster.quantile import pairwise_quantile

__all__ = ["BACKENDS", "dbscan", "pairwise_quantile"]
