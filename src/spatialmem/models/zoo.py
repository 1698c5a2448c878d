"""Registry entry points of the published architectures and tiny test presets."""

from typing import Any

from spatialmem.heads.postprocess import ConfMode, DepthMode
from spatialmem.models.config import DUSt3RConfig, replace_config
from spatialmem.models.dust3r import DUSt3R
from spatialmem.models.registry import register_model

__all__ = [
    "dust3r_tiny_dpt",
    "dust3r_tiny_linear",
    "dust3r_vitl_224_linear",
    "dust3r_vitl_512_dpt",
]

_VITL_BASE = DUSt3RConfig(
    enc_embed_dim=1024,
    enc_depth=24,
    enc_num_heads=16,
    dec_embed_dim=768,
    dec_depth=12,
    dec_num_heads=12,
    depth_mode=DepthMode("exp"),
    conf_mode=ConfMode("exp", 1.0),
)

_TINY = DUSt3RConfig(
    enc_embed_dim=64,
    enc_depth=2,
    enc_num_heads=4,
    dec_embed_dim=48,
    dec_depth=4,
    dec_num_heads=4,
    dpt_feature_dim=16,
    dpt_layer_dims=(4, 8, 16, 32),
    img_size=(64, 64),
)


def _build(base: DUSt3RConfig, overrides: dict[str, Any]) -> DUSt3R:
    return DUSt3R(replace_config(base, **overrides))


@register_model
def dust3r_vitl_224_linear(**overrides: Any) -> DUSt3R:
    """DUSt3R ViT-Large encoder, ViT-Base decoders, linear heads, trained at 224x224."""
    return _build(replace_config(_VITL_BASE, head="linear", img_size=(224, 224)), overrides)


@register_model
def dust3r_vitl_512_dpt(**overrides: Any) -> DUSt3R:
    """DUSt3R ViT-Large encoder, ViT-Base decoders, DPT heads, trained at 512 (landscape)."""
    return _build(replace_config(_VITL_BASE, head="dpt", img_size=(512, 512)), overrides)


@register_model
def dust3r_tiny_dpt(**overrides: Any) -> DUSt3R:
    """Tiny DPT pair model (width 64/48, depth 2/4) for tests and examples."""
    return _build(replace_config(_TINY, head="dpt"), overrides)


@register_model
def dust3r_tiny_linear(**overrides: Any) -> DUSt3R:
    """Tiny linear-head pair model for tests and examples."""
    return _build(replace_config(_TINY, head="linear"), overrides)
