"""Prediction heads (DPT and linear) and the mapping of their raw output to points/confidences."""

from spatialmem.heads.dpt import DPTHead, FeatureFusionBlock, ResidualConvUnit
from spatialmem.heads.linear import LinearHead
from spatialmem.heads.postprocess import (
    ConfMode,
    DepthMode,
    HeadOutput,
    map_conf,
    map_depth,
    postprocess,
    unmap_conf,
    unmap_depth,
)
from spatialmem.heads.token_mlp import TokenMLP

__all__ = [
    "ConfMode",
    "DPTHead",
    "DepthMode",
    "FeatureFusionBlock",
    "HeadOutput",
    "LinearHead",
    "ResidualConvUnit",
    "TokenMLP",
    "map_conf",
    "map_depth",
    "postprocess",
    "unmap_conf",
    "unmap_depth",
]
