"""Inference fast paths: [`optimize_for_inference`][spatialmem.optimize.optimize_for_inference]
turns a trained model into its fastest form on this machine (oneDNN linears with weights laid
out once on CPU, chosen by measurement; bf16/fp16 autocast; ``torch.compile``; CUDA graphs; an
int8 approximate tier), and [`cpu_features`][spatialmem.optimize.cpu_features] says what the CPU
can do. The guide is the *Performance* page of the documentation.
"""

from spatialmem.optimize.convs import choose_conv_layout
from spatialmem.optimize.core import (
    BACKENDS,
    InferencePlan,
    LayerChoice,
    clear_decisions,
    optimize_for_inference,
)
from spatialmem.optimize.cpu import BF16_SLOWDOWN_NOTE, CpuFeatures, cpu_features
from spatialmem.optimize.linear import InferenceLinear, choose_linear_impl, onednn_linear_available
from spatialmem.optimize.wrappers import GraphedCall

__all__ = [
    "BACKENDS",
    "BF16_SLOWDOWN_NOTE",
    "CpuFeatures",
    "GraphedCall",
    "InferenceLinear",
    "InferencePlan",
    "LayerChoice",
    "choose_conv_layout",
    "choose_linear_impl",
    "clear_decisions",
    "cpu_features",
    "onednn_linear_available",
    "optimize_for_inference",
]
