"""Building spatialmem models and configurations from the official constructor arguments."""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from spatialmem.heads.postprocess import ConfMode, DepthMode
from spatialmem.interop.checkpoint import load_checkpoint
from spatialmem.memory import MemoryConfig
from spatialmem.models import DUSt3R, DUSt3RConfig, Spann3R, Spann3RConfig

__all__ = [
    "build_official",
    "conf_mode_from_official",
    "depth_mode_from_official",
    "dust3r_config_from_official",
    "memory_config_from_official",
    "spann3r_config_from_official",
]

_ROPE = re.compile(r"^RoPE(\d+(?:\.\d+)?)$")


def _official_bound(name: str, value: Any) -> float:
    """Parse a bound of an official mode list: a number or ``"inf"`` / ``"-inf"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"`{name}` must be a number or 'inf'/'-inf', got {value!r}")
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(f"`{name}` must be a number or 'inf'/'-inf', got {value!r}") from None


def _split_mode(func_name: str, seq: Sequence[Any]) -> tuple[str, float, float]:
    """Split an official ``[kind, vmin, vmax]`` mode list into a kind and two float bounds."""
    if isinstance(seq, str) or not isinstance(seq, Sequence) or len(seq) != 3:
        raise ValueError(
            f"{func_name} expects a 3-element sequence [kind, vmin, vmax], got {seq!r}"
        )
    kind, vmin, vmax = seq
    if not isinstance(kind, str):
        raise TypeError(f"{func_name}: kind must be a string, got {kind!r}")
    return kind, _official_bound("vmin", vmin), _official_bound("vmax", vmax)


def depth_mode_from_official(seq: Sequence[Any]) -> DepthMode:
    """Translate the official ``depth_mode`` list, e.g. ``["exp", "-inf", "inf"]``.

    Args:
        seq: ``[kind, vmin, vmax]``; bounds are numbers or the strings ``"inf"``/``"-inf"``
            (surrounding blanks and any letter case are accepted).

    Returns:
        The equivalent [`DepthMode`][spatialmem.heads.DepthMode].

    Raises:
        ValueError: not a 3-element sequence, an unparsable bound, or values that
            [`DepthMode`][spatialmem.heads.DepthMode] rejects.
        TypeError: a kind that is not a string or a bound that is neither a number nor a string.
    """
    kind, vmin, vmax = _split_mode("depth_mode_from_official", seq)
    return DepthMode(kind, vmin, vmax)  # type: ignore[arg-type]


def conf_mode_from_official(seq: Sequence[Any]) -> ConfMode:
    """Translate the official ``conf_mode`` list, e.g. ``["exp", 1, "inf"]``.

    Args:
        seq: ``[kind, vmin, vmax]``; bounds are numbers or the strings ``"inf"``/``"-inf"``
            (surrounding blanks and any letter case are accepted).

    Returns:
        The equivalent [`ConfMode`][spatialmem.heads.ConfMode].

    Raises:
        ValueError: not a 3-element sequence, an unparsable bound, or values that
            [`ConfMode`][spatialmem.heads.ConfMode] rejects.
        TypeError: a kind that is not a string or a bound that is neither a number nor a string.
    """
    kind, vmin, vmax = _split_mode("conf_mode_from_official", seq)
    return ConfMode(kind, vmin, vmax)  # type: ignore[arg-type]


def memory_config_from_official(
    args: Mapping[str, Any], *, dim: int, norm_eps: float = 1e-5
) -> MemoryConfig:
    """Translate the official ``SpatialMemory`` constructor arguments.

    Args:
        args: official keyword arguments (``long_mem_size``, ``work_mem_size``,
            ``attn_thresh``, ``sim_thresh``, ``top_k``, ``mem_dropout_p``); absent ones keep
            their defaults, unknown keys are ignored. ``mem_dropout_p=None`` (no dropout
            module) means no dropout.
        dim: key/value width.
        norm_eps: epsilon of the read-out LayerNorms.

    Returns:
        The equivalent [`MemoryConfig`][spatialmem.memory.MemoryConfig].
    """
    mapping = {
        "long_mem_size": "long_mem_tokens",
        "work_mem_size": "work_mem_frames",
        "attn_thresh": "attn_clip",
        "sim_thresh": "sim_thresh",
        "top_k": "top_k",
    }
    kw: dict[str, Any] = {ours: args[theirs] for theirs, ours in mapping.items() if theirs in args}
    if "mem_dropout_p" in args:
        p = args["mem_dropout_p"]
        kw["attn_dropout"] = 0.0 if p is None else float(p)
    for name in ("attn_clip", "sim_thresh"):
        if name in kw:
            kw[name] = float(kw[name])
    return MemoryConfig(dim=dim, norm_eps=norm_eps, **kw)


def _kwargs(args: Mapping[str, Any]) -> Mapping[str, Any]:
    # A manifest stores {"class_name": ..., "kwargs": {...}}; fixtures store the kwargs flat.
    if "kwargs" in args and isinstance(args["kwargs"], Mapping):
        return args["kwargs"]
    return args


def dust3r_config_from_official(args: Mapping[str, Any]) -> DUSt3RConfig:
    """Translate ``AsymmetricCroCo3DStereo`` constructor arguments into a
    [`DUSt3RConfig`][spatialmem.models.DUSt3RConfig].

    Accepts the kwargs of a published checkpoint's ``args.model`` string (already parsed), a
    reference manifest's ``constructor`` entry, or a reference fixture's ``config``. Missing
    entries take the official defaults. ``img_size`` (the training resolution) is ignored: the
    model runs at any multiple of the patch size.

    Raises:
        ValueError: an option spatialmem does not implement (e.g. ``output_mode`` other than
            ``pts3d`` or a non-RoPE position embedding).
    """
    kw = _kwargs(args)
    pos_embed = kw.get("pos_embed", "cosine")
    match = _ROPE.match(str(pos_embed))
    if not match:
        raise ValueError(f"unsupported pos_embed {pos_embed!r}: only 'RoPE<base>' is implemented")
    if kw.get("output_mode", "pts3d") != "pts3d":
        raise ValueError(f"unsupported output_mode {kw['output_mode']!r}: only 'pts3d'")
    head = kw.get("head_type", "linear")
    if head not in ("linear", "dpt"):
        raise ValueError(f"unsupported head_type {head!r}")
    n_channels = int(kw.get("dpt_num_channels", 4))
    if n_channels != 4:
        raise ValueError(f"unsupported head output channels {n_channels}: expected 3 + conf")
    patch_size = int(kw.get("patch_size", 16))
    if "linear_proj_out" in kw and int(kw["linear_proj_out"]) != 4 * patch_size**2:
        raise ValueError(f"unsupported linear_proj_out {kw['linear_proj_out']}")
    patch_cls = kw.get("patch_embed_cls", "PatchEmbedDust3R")
    landscape_only = bool(kw.get("landscape_only", True))
    if not landscape_only:
        portrait = "native"
    elif patch_cls == "ManyAR_PatchEmbed":
        portrait = "transpose"
    elif patch_cls == "PatchEmbedDust3R":
        portrait = "legacy_reshape"
    else:
        raise ValueError(f"unsupported patch_embed_cls {patch_cls!r}")
    dec_depth = int(kw.get("dec_depth", 8))
    dpt_extra: dict[str, Any] = {}
    if "dpt_feature_dim" in kw:
        dpt_extra["dpt_feature_dim"] = int(kw["dpt_feature_dim"])
    if "dpt_last_dim" in kw:
        dpt_extra["dpt_last_dim"] = int(kw["dpt_last_dim"])
    if "dpt_layer_dims" in kw:
        dpt_extra["dpt_layer_dims"] = tuple(int(d) for d in kw["dpt_layer_dims"])
    if "dpt_hooks" in kw:
        dpt_extra["dpt_hooks"] = tuple(int(h) for h in kw["dpt_hooks"])
    config = DUSt3RConfig(
        patch_size=patch_size,
        enc_embed_dim=int(kw.get("enc_embed_dim", 768)),
        enc_depth=int(kw.get("enc_depth", 12)),
        enc_num_heads=int(kw.get("enc_num_heads", 12)),
        dec_embed_dim=int(kw.get("dec_embed_dim", 512)),
        dec_depth=dec_depth,
        dec_num_heads=int(kw.get("dec_num_heads", 16)),
        mlp_ratio=float(kw.get("mlp_ratio", 4.0)),
        norm_eps=float(kw.get("norm_layer_eps", 1e-6)),
        rope_base=float(match.group(1)),
        norm_other_in_decoder=bool(kw.get("norm_im2_in_dec", True)),
        head=head,
        depth_mode=depth_mode_from_official(kw.get("depth_mode", ("exp", "-inf", "inf"))),
        conf_mode=conf_mode_from_official(kw.get("conf_mode", ("exp", 1, "inf"))),
        portrait=portrait,
        **dpt_extra,
    )
    if "dpt_dim_tokens" in kw:
        hooks = config.resolved_dpt_hooks
        want = [config.enc_embed_dim if h == 0 else config.dec_embed_dim for h in hooks]
        if [int(d) for d in kw["dpt_dim_tokens"]] != want:
            raise ValueError(f"dpt_dim_tokens {kw['dpt_dim_tokens']} do not match hooks {hooks}")
    return config


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def spann3r_config_from_official(args: Mapping[str, Any]) -> Spann3RConfig:
    """Translate official ``Spann3R`` construction arguments into a
    [`Spann3RConfig`][spatialmem.models.Spann3RConfig].

    Accepts a reference fixture's flat ``config`` (DUSt3R arguments plus ``mem_enc_depth``,
    ``mem_enc_num_heads``, ``memory_dropout``, ``memory_overrides``, ...) or a manifest's
    ``constructor`` (``kwargs``, ``dust3r_kwargs``, ``set_memory_encoder``, ``set_attn_head``).
    Missing entries take the published model's values. Spatial-memory arguments that differ from
    what the official forward passes (``memory_overrides``: ``work_mem_size``, ``long_mem_size``,
    ``sim_thresh``, ``attn_thresh``, ``top_k``) become
    [`MemoryConfig`][spatialmem.memory.MemoryConfig] fields; ``memory_dropout`` becomes its
    training-mode ``attn_dropout``.

    Raises:
        ValueError: an option spatialmem does not implement (``use_feat=True``) or widths that
            contradict each other.
    """
    if "dust3r_kwargs" in args:  # manifest layout
        pair_args = args["dust3r_kwargs"]
        own = {**args.get("kwargs", {})}
        mem = args.get("set_memory_encoder", {})
        head = args.get("set_attn_head", {})
        own.setdefault("mem_enc_depth", mem.get("enc_depth", 6))
        own.setdefault("mem_enc_embed_dim", mem.get("enc_embed_dim"))
        own.setdefault("mem_out_dim", mem.get("out_dim"))
        own.setdefault("mem_enc_num_heads", mem.get("enc_num_heads", 16))
        own.setdefault("mem_mlp_ratio", mem.get("mlp_ratio", 4.0))
        own.setdefault("attn_head_in_dim", head.get("enc_embed_dim"))
        own.setdefault("mem_out_dim", head.get("out_dim"))
    else:
        pair_args, own = args, dict(args)
    dust3r = dust3r_config_from_official(pair_args)
    ce, cd = dust3r.enc_embed_dim, dust3r.dec_embed_dim
    _require(not own.get("use_feat", False), "unsupported use_feat=True: only pointmap values")
    out_dim = own.get("mem_out_dim") or ce
    _require(int(out_dim) == ce, f"mem_out_dim={out_dim} must equal enc_embed_dim={ce}")
    in_dim = own.get("attn_head_in_dim") or ce + cd
    _require(int(in_dim) == ce + cd, f"attn_head_in_dim={in_dim} must be Ce + Cd = {ce + cd}")
    qkv_dim = own.get("norm_qkv_dim") or ce
    _require(int(qkv_dim) == ce, f"norm_qkv_dim={qkv_dim} must equal the memory width {ce}")
    overrides = dict(own.get("memory_overrides") or {})
    overrides["mem_dropout_p"] = float(own.get("memory_dropout", 0.15))
    memory = memory_config_from_official(
        overrides, dim=ce, norm_eps=float(own.get("norm_qkv_eps", 1e-5))
    )
    hidden = own.get("attn_head_hidden_dim")
    return Spann3RConfig(
        dust3r=dust3r,
        mem_enc_depth=int(own.get("mem_enc_depth", 6)),
        mem_enc_embed_dim=int(own.get("mem_enc_embed_dim") or ce),
        mem_enc_num_heads=int(own.get("mem_enc_num_heads", 16)),
        mem_mlp_ratio=float(own.get("mem_mlp_ratio", 4.0)),
        mem_rope=bool(own.get("mem_pos_enc", False)),
        key_hidden_dim=int(hidden) if hidden else None,
        memory=memory,
    )


def build_official(
    kind: str, args: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None
) -> nn.Module:
    """Build the spatialmem equivalent of an official model and load its weights.

    Args:
        kind: ``"dust3r"`` (``AsymmetricCroCo3DStereo``) or ``"spann3r"``.
        args: the official constructor arguments, as stored in a reference fixture's ``config``
            or a manifest's ``constructor``.
        state_dict: weights with official key names; ``None`` leaves the random initialisation.

    Returns:
        The model in eval mode, with the weights loaded (strictly: every key must match).
    """
    if kind == "dust3r":
        model: nn.Module = DUSt3R(dust3r_config_from_official(args))
    elif kind == "spann3r":
        model = Spann3R(spann3r_config_from_official(args))
    else:
        raise ValueError(f"unknown kind {kind!r}: expected 'dust3r' or 'spann3r'")
    if state_dict is not None:
        with torch.no_grad():
            load_checkpoint(model, state_dict, strict=True)
    return model.eval()
