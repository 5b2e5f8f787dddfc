"""The pure-torch reference of every fused operation: the oracle the Triton kernels are tested against,
and a product backend in its own right (CPU, 3-D volumes, exported graphs).

Floors: `fastcam.kernels` imports only this package (and Triton); the methods import both through the
one dispatcher `fastcam._backend.op`.
"""
from fastcam.ops._checks import (
    FLOAT_DTYPES,
    POOLS,
    check_activations,
    check_channel_labels,
    check_choice,
    check_int,
    check_real,
    check_size,
)
from fastcam.ops.cfcam import (
    DEFAULT_SIGMA,
    IMPORTANT,
    NOISE,
    REFERENCE_NORM_EPS,
    REFERENCE_RANGE_SIGMA,
    VARIANTS,
    cluster_filter_weights,
    gaussian_coverage,
    gaussian_coverage_nd,
    masked_softmax,
    reference_filtered_mean,
)
from fastcam.ops.combine import accumulation, combine, max_normalize, upsample, upsample_normalize, weighted_sum_relu
from fastcam.ops.eigen import channel_map, first_component
from fastcam.ops.softcam import DEFAULT_TEMPERATURE, evidence_head, pool_evidence, softcam_maps

__all__ = [
    "DEFAULT_SIGMA", "DEFAULT_TEMPERATURE", "FLOAT_DTYPES", "IMPORTANT", "NOISE", "POOLS", "REFERENCE_NORM_EPS",
    "REFERENCE_RANGE_SIGMA", "VARIANTS", "accumulation", "check_activations", "check_channel_labels", "check_choice",
    "check_int", "check_real", "check_size",
    "channel_map", "cluster_filter_weights", "combine", "evidence_head", "first_component", "gaussian_coverage",
    "gaussian_coverage_nd", "masked_softmax", "max_normalize", "pool_evidence", "reference_filtered_mean",
    "softcam_maps", "upsample", "upsample_normalize", "weighted_sum_relu",
]
