"""Registry entry points of the published architectures and tiny test presets."""

from typing import Any

from spatialmem.heads.postprocess import ConfMode, DepthMode
from spatialmem.memory import MemoryConfig, SpatialMemory
from spatialmem.models.config import DUSt3RConfig, replace_config
from spatialmem.models.dust3r import DUSt3R
from spatialmem.models.registry import register_model
from spatialmem.models.spann3r import MemoryFactory, Spann3R, Spann3RConfig

__all__ = [
    "dust3r_tiny_dpt",
    "dust3r_tiny_linear",
    "dust3r_vitl_224_linear",
    "dust3r_vitl_512_dpt",
    "spann3r_small_synthetic",
    "spann3r_tiny",
    "spann3r_vitl_dpt512",
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
)


def _build(base: DUSt3RConfig, overrides: dict[str, Any]) -> DUSt3R:
    return DUSt3R(replace_config(base, **overrides))


@register_model
def dust3r_vitl_224_linear(**overrides: Any) -> DUSt3R:
    """DUSt3R ViT-Large encoder, ViT-Base decoders, linear heads, trained at 224x224."""
    return _build(replace_config(_VITL_BASE, head="linear"), overrides)


@register_model
def dust3r_vitl_512_dpt(**overrides: Any) -> DUSt3R:
    """DUSt3R ViT-Large encoder, ViT-Base decoders, DPT heads, trained at 512 (landscape)."""
    return _build(replace_config(_VITL_BASE, head="dpt"), overrides)


@register_model
def dust3r_tiny_dpt(**overrides: Any) -> DUSt3R:
    """Tiny DPT pair model (width 64/48, depth 2/4) for tests and examples."""
    return _build(replace_config(_TINY, head="dpt"), overrides)


@register_model
def dust3r_tiny_linear(**overrides: Any) -> DUSt3R:
    """Tiny linear-head pair model for tests and examples."""
    return _build(replace_config(_TINY, head="linear"), overrides)


_SPANN3R_FIELDS = {f for f in Spann3RConfig.__dataclass_fields__ if f != "dust3r"}


def _build_spann3r(
    base: Spann3RConfig,
    memory: SpatialMemory | MemoryFactory | None,
    overrides: dict[str, Any],
) -> Spann3R:
    """Split ``overrides`` into Spann3R fields and fields of the wrapped DUSt3R config."""
    pair_fields = set(DUSt3RConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - _SPANN3R_FIELDS - pair_fields - {"dust3r"})
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for a Spann3R model; valid: the Spann3RConfig fields "
            f"{sorted(_SPANN3R_FIELDS | {'dust3r'})} and the DUSt3RConfig fields "
            f"{sorted(pair_fields)}"
        )
    own = {k: v for k, v in overrides.items() if k in _SPANN3R_FIELDS}
    pair = {k: v for k, v in overrides.items() if k not in _SPANN3R_FIELDS}
    dust3r = replace_config(own.pop("dust3r", base.dust3r), **pair)
    return Spann3R(replace_config(base, dust3r=dust3r, **own), memory=memory)


@register_model
def spann3r_vitl_dpt512(
    memory: SpatialMemory | MemoryFactory | None = None, **overrides: Any
) -> Spann3R:
    """Spann3R as published: the 512 DPT DUSt3R, a 6-block memory encoder of width 1024.

    Args:
        memory: a [`SpatialMemory`][spatialmem.memory.SpatialMemory] subclass, factory or instance.
        **overrides: fields of [`Spann3RConfig`][spatialmem.models.Spann3RConfig] or of its
            ``dust3r`` [`DUSt3RConfig`][spatialmem.models.DUSt3RConfig] (e.g.
            ``portrait="native"``).
    """
    base = Spann3RConfig(
        dust3r=replace_config(_VITL_BASE, head="dpt"),
        mem_enc_depth=6,
        mem_enc_num_heads=16,
    )
    return _build_spann3r(base, memory, overrides)


@register_model
def spann3r_tiny(memory: SpatialMemory | MemoryFactory | None = None, **overrides: Any) -> Spann3R:
    """Tiny Spann3R (the reference fixtures' widths: 64/48, memory encoder 2 x 64) for tests."""
    base = Spann3RConfig(
        dust3r=replace_config(_TINY, dpt_last_dim=8),
        mem_enc_depth=2,
        mem_enc_num_heads=4,
    )
    return _build_spann3r(base, memory, overrides)


_SMALL_SYNTHETIC = Spann3RConfig(
    dust3r=DUSt3RConfig(
        patch_size=8,
        enc_embed_dim=192,
        enc_depth=6,
        enc_num_heads=3,
        dec_embed_dim=128,
        dec_depth=4,
        dec_num_heads=4,
        head="linear",
        depth_mode=DepthMode("exp"),
        conf_mode=ConfMode("exp", 1.0),
    ),
    mem_enc_depth=2,
    mem_enc_num_heads=3,
    # 96 tokens per 64x96 frame: 2000 tokens hold ~20 frames before consolidation, the same
    # number of frames as the published 4000 tokens at 196 tokens per 224x224 frame.
    memory=MemoryConfig(dim=192, long_mem_tokens=2000),
)


@register_model
def spann3r_small_synthetic(
    memory: SpatialMemory | MemoryFactory | None = None, **overrides: Any
) -> Spann3R:
    """Small Spann3R for 64x96 images (patch 8, encoder 6 x 192, decoders 4 x 128, linear
    heads, 6.2M parameters), trained on the synthetic rooms of
    [`spatialmem.data.rooms`][spatialmem.data.rooms]: the package's default model.

    Args:
        memory: a [`SpatialMemory`][spatialmem.memory.SpatialMemory] subclass, factory or instance.
        **overrides: fields of [`Spann3RConfig`][spatialmem.models.Spann3RConfig] or of its
            ``dust3r`` [`DUSt3RConfig`][spatialmem.models.DUSt3RConfig].
    """
    return _build_spann3r(_SMALL_SYNTHETIC, memory, overrides)
