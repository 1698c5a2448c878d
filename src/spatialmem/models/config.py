"""Frozen configuration dataclasses for the published model families."""

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from spatialmem.heads.postprocess import ConfMode, DepthMode

__all__ = ["DUSt3RConfig", "PortraitMode", "replace_config"]

PortraitMode = Literal["transpose", "native", "legacy_reshape"]
"""How a pair model treats portrait images (``H > W``):

* ``"transpose"``: the image is transposed to landscape before encoding and every output map is
  transposed back, so the network only ever sees landscape images. The 3-D points are those of the
  transposed camera (x and y exchanged), as with the published DUSt3R ``ManyAR_PatchEmbed``.
* ``"native"``: the portrait image is processed as it is (official ``landscape_only=False``).
* ``"legacy_reshape"``: what the official Spann3R loading path (``PatchEmbedDust3R`` with
  ``landscape_only=True``) does: the portrait token grid is read by the heads as if it were the
  transposed (landscape) grid, and the result transposed back. This scrambles portrait
  predictions; it exists only to reproduce official outputs bit for bit.
"""


@dataclass(frozen=True)
class DUSt3RConfig:
    """Architecture of a DUSt3R/CroCo pair model. Widths of every part derive from it."""

    patch_size: int = 16
    """Patch side in pixels; image height and width must be multiples of it."""
    enc_embed_dim: int = 1024
    """Encoder width ``Ce``."""
    enc_depth: int = 24
    """Encoder blocks."""
    enc_num_heads: int = 16
    """Encoder attention heads."""
    dec_embed_dim: int = 768
    """Decoder width ``Cd``."""
    dec_depth: int = 12
    """Decoder layers ``L`` (per decoder)."""
    dec_num_heads: int = 12
    """Decoder attention heads."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of the block width."""
    norm_eps: float = 1e-6
    """Epsilon of every encoder/decoder LayerNorm."""
    rope_base: float | None = 100.0
    """RoPE frequency base (``RoPE100``); ``None`` disables positional encoding."""
    norm_other_in_decoder: bool = True
    """Normalise the other view's tokens in decoder cross-attention (``norm_im2_in_dec``)."""
    head: Literal["dpt", "linear"] = "dpt"
    """Prediction head type."""
    depth_mode: DepthMode = field(default_factory=DepthMode)
    """Mapping of raw xyz to 3-D points."""
    conf_mode: ConfMode = field(default_factory=ConfMode)
    """Mapping of the raw confidence channel."""
    dpt_feature_dim: int = 256
    """DPT fusion width ``F``."""
    dpt_last_dim: int | None = None
    """Width before the DPT output conv; ``None`` means ``dpt_feature_dim // 2``."""
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    """DPT per-level widths after the token reassembly."""
    dpt_hooks: tuple[int, int, int, int] | None = None
    """Decoder-list indices read by the DPT head; ``None`` means ``(0, L*2//4, L*3//4, L)``."""
    portrait: PortraitMode = "transpose"
    """Treatment of portrait images, see [`PortraitMode`][spatialmem.models.config.PortraitMode]."""

    def __post_init__(self) -> None:
        for name in ("patch_size", "enc_embed_dim", "enc_depth", "enc_num_heads"):
            _positive(name, getattr(self, name))
        for name in ("dec_embed_dim", "dec_depth", "dec_num_heads", "dpt_feature_dim"):
            _positive(name, getattr(self, name))
        for dim, heads, what in (
            (self.enc_embed_dim, self.enc_num_heads, "enc"),
            (self.dec_embed_dim, self.dec_num_heads, "dec"),
        ):
            if dim % heads:
                raise ValueError(f"{what}_embed_dim={dim} is not divisible by {what}_num_heads")
            if self.rope_base is not None and (dim // heads) % 4:
                raise ValueError(
                    f"{what} head width {dim // heads} must be divisible by 4 for 2-D RoPE"
                )
        if self.head not in ("dpt", "linear"):
            raise ValueError(f"head must be 'dpt' or 'linear', got {self.head!r}")
        if self.portrait not in ("transpose", "native", "legacy_reshape"):
            raise ValueError(f"unknown portrait mode {self.portrait!r}")
        hooks = self.resolved_dpt_hooks
        if len(hooks) != 4 or not all(0 <= h <= self.dec_depth for h in hooks):
            raise ValueError(f"dpt_hooks must be 4 indices in [0, {self.dec_depth}], got {hooks}")
        if len(self.dpt_layer_dims) != 4:
            raise ValueError(f"dpt_layer_dims must have 4 entries, got {self.dpt_layer_dims}")
        if not math.isfinite(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")

    @property
    def resolved_dpt_hooks(self) -> tuple[int, int, int, int]:
        """The DPT hooks with the default filled in: ``dpt_hooks``, or the official
        ``(0, L*2//4, L*3//4, L)`` for decoder depth ``L`` (entry 0 of the decoder's token list is
        the encoder output, entries ``1..L`` the decoder block outputs)."""
        if self.dpt_hooks is not None:
            return tuple(self.dpt_hooks)  # type: ignore[return-value]
        depth = self.dec_depth
        return (0, depth * 2 // 4, depth * 3 // 4, depth)

    @property
    def resolved_dpt_last_dim(self) -> int:
        """The DPT last width with the default filled in."""
        return self.dpt_last_dim if self.dpt_last_dim is not None else self.dpt_feature_dim // 2


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def replace_config(config: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that names the valid fields when an override is unknown."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for {type(config).__name__}; valid: {sorted(names)}"
        )
    return dataclasses.replace(config, **overrides)
