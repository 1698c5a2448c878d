"""Spann3R: a DUSt3R pair model driven frame by frame through a spatial memory (paper Sec. 3).

Data flow of one step ``i`` (view 1 = frame ``i``, view 2 = frame ``i + 1``)::

    frame i   --encoder--> f_i  --(i > 0: memory.read(query_{i-1}))--> fused_i --+
    frame i+1 --encoder--> f_i+1 -----------------------------------------------+--> TwinDecoder
    dec1 --head1--> frame i's points      dec2 --head2--> frame i+1's points (frame 0's coords)
    key_i   = key_head(f_i, dec1[-1])        query_i = query_head(f_i+1, dec2[-1])
    value_i = memory_encoder(frame i's points) + key_i
    memory.update(key_i, value_i)            (eval: similarity gate, working/long-term memory)

Step 0 reads nothing (``fused_0 = f_0``). Frame ``t``'s reconstruction is view 1 of step ``t``,
except the last frame, which is view 2 of the last step.
"""

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from spatialmem._checks import check_images, check_tensor
from spatialmem._typing import Float, Int
from spatialmem.encoders import EncoderOutput
from spatialmem.heads import HeadOutput, TokenMLP
from spatialmem.losses.structures import StepPredictions
from spatialmem.memory import MemoryConfig, MemoryEncoder, MemoryState, SpatialMemory
from spatialmem.models.config import DUSt3RConfig
from spatialmem.models.dust3r import DUSt3R

__all__ = [
    "EncodedFrame",
    "PairStep",
    "SequenceOutput",
    "Spann3R",
    "Spann3RConfig",
    "replace_memory",
]


@dataclass(frozen=True)
class Spann3RConfig:
    """Architecture of a Spann3R model. Widths of the memory parts derive from ``dust3r``."""

    dust3r: DUSt3RConfig = field(default_factory=DUSt3RConfig)
    """The wrapped pair model (published: ViT-L encoder, ViT-B decoders, DPT heads, 512)."""
    mem_enc_depth: int = 6
    """Blocks of the memory encoder."""
    mem_enc_embed_dim: int | None = None
    """Memory-encoder block width; ``None`` means the image encoder's width."""
    mem_enc_num_heads: int = 16
    """Memory-encoder attention heads."""
    mem_mlp_ratio: float = 4.0
    """Memory-encoder MLP ratio."""
    mem_rope: bool = False
    """RoPE in the memory encoder (official ``mem_pos_enc``; off in the published model)."""
    key_hidden_dim: int | None = None
    """Hidden width of the key/query heads; ``None`` means ``Ce + Cd``."""
    memory: MemoryConfig | None = None
    """Spatial-memory configuration; ``None`` means the paper's defaults. Its ``dim`` must be the
    image encoder's width ``Ce`` (the memory read-out replaces view 1's encoder tokens)."""

    def __post_init__(self) -> None:
        for name in ("mem_enc_depth", "mem_enc_num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Spann3RConfig.{name} must be a positive int, got {value!r}")
        width = self.resolved_mem_enc_embed_dim
        if width % self.mem_enc_num_heads:
            raise ValueError(
                f"memory-encoder width {width} is not divisible by "
                f"mem_enc_num_heads={self.mem_enc_num_heads}"
            )
        if self.mem_rope and (width // self.mem_enc_num_heads) % 4:
            raise ValueError("memory-encoder head width must be divisible by 4 for 2-D RoPE")
        if self.memory is not None and self.memory.dim != self.mem_dim:
            raise ValueError(
                f"Spann3RConfig.memory.dim={self.memory.dim} must equal the encoder width "
                f"{self.mem_dim}: the memory read-out replaces view 1's encoder tokens"
            )

    @property
    def mem_dim(self) -> int:
        """Memory width ``C``: keys, values and queries (= encoder width ``Ce``)."""
        return self.dust3r.enc_embed_dim

    @property
    def resolved_mem_enc_embed_dim(self) -> int:
        """Memory-encoder width with the default filled in."""
        return self.mem_enc_embed_dim or self.dust3r.enc_embed_dim

    @property
    def memory_config(self) -> MemoryConfig:
        """The spatial-memory configuration with the defaults filled in."""
        return self.memory if self.memory is not None else MemoryConfig(dim=self.mem_dim)


@dataclass
class EncodedFrame:
    """A frame batch after the image encoder, with what later stages need to know of it."""

    tokens: Float[Tensor, "B P Ce"]
    """Encoder output."""
    positions: Int[Tensor, "B P 2"]
    """Integer (row, column) patch positions."""
    grid: tuple[int, int]
    """Patch grid ``(h, w)`` as encoded (landscape when the model transposes portraits)."""
    image_hw: tuple[int, int]
    """``(H, W)`` of the input images."""
    image: Float[Tensor, "B 3 H W"]
    """The input images (kept for the head's portrait handling)."""


@dataclass
class PairStep:
    """What one Spann3R step computed."""

    view1: HeadOutput
    """Frame ``i``: ``pts3d [B, H, W, 3]`` in frame 0's coordinates, ``conf [B, H, W]``."""
    view2: HeadOutput | None
    """Frame ``i + 1`` seen from the memory (``None`` when the step was asked not to run the
    second head; :meth:`Spann3R.predict_view2` computes it from ``dec2`` later)."""
    fused: Float[Tensor, "B P Ce"]
    """View-1 tokens the decoder received (memory read-out, or encoder output at step 0)."""
    dec2: list[Tensor]
    """View 2's decoder token list (``L + 1`` entries)."""
    key: Float[Tensor, "B P C"]
    """Memory key of frame ``i`` (inserted at the end of the step)."""
    query: Float[Tensor, "B P C"]
    """Key of frame ``i + 1``: the query of the next step's memory read."""
    value: Float[Tensor, "B P C"] | None = None
    """Memory value written for frame ``i`` (memory-encoder output + key)."""


@dataclass
class SequenceOutput:
    """Reconstruction of a batch of sequences."""

    pts3d: Float[Tensor, "B T H W 3"]
    """Frame ``t``'s points in frame 0's camera frame (official ``preds[t]``)."""
    conf: Float[Tensor, "B T H W"]
    """Confidences ``>= 1`` of those points."""
    steps: StepPredictions | None
    """Per-step pair predictions (both views of every step) for the training loss; present in
    training mode or with ``return_steps=True``."""
    memory: MemoryState
    """The memory after the last step."""

    @classmethod
    def from_steps(
        cls, steps: Sequence[PairStep], memory: MemoryState, *, with_steps: bool = False
    ) -> "SequenceOutput":
        """Stack the steps of one pass: frame ``t`` is view 1 of step ``t``, the last frame view 2
        of the last step (which must therefore have run its second head).

        Args:
            steps: the ``T - 1`` steps in order.
            memory: the memory after the last step.
            with_steps: also fill :attr:`steps` (every step needs its view 2).
        """
        final = steps[-1].view2
        if final is None or (with_steps and any(s.view2 is None for s in steps)):
            raise ValueError("the last step (every step with `with_steps`) must predict view 2")
        pts3d = torch.stack([s.view1.pts3d for s in steps] + [final.pts3d], dim=1)
        conf = torch.stack([s.view1.conf for s in steps] + [final.conf], dim=1)
        predictions = None
        if with_steps:
            seconds = [s.view2 for s in steps if s.view2 is not None]
            predictions = StepPredictions(
                pts_left=pts3d[:, :-1],
                conf_left=conf[:, :-1],
                pts_right=torch.stack([r.pts3d for r in seconds], dim=1),
                conf_right=torch.stack([r.conf for r in seconds], dim=1),
            )
        return cls(pts3d=pts3d, conf=conf, steps=predictions, memory=memory)


MemoryFactory = type[SpatialMemory] | Callable[[MemoryConfig], SpatialMemory]


class Spann3R(nn.Module):
    """The Spann3R reconstruction model (paper Sec. 3): DUSt3R + memory encoder + spatial memory.

    Parameters: ``dust3r`` (a :class:`~spatialmem.models.DUSt3R` pair model),
    ``memory_encoder`` (:class:`~spatialmem.memory.MemoryEncoder`), ``key_head`` and
    ``query_head`` (:class:`~spatialmem.heads.TokenMLP`, official ``attn_head_1``/``attn_head_2``)
    and ``memory`` (a :class:`~spatialmem.memory.SpatialMemory` holding ``norm_q/k/v``). The
    per-sequence state lives in a :class:`~spatialmem.memory.MemoryState` created by
    :meth:`forward` (or by the streaming
    :class:`~spatialmem.inference.OnlineReconstructor`).

    Modes follow the official model: in ``train()`` mode every frame is inserted, attention is not
    clipped and dropout is applied to it; in ``eval()`` mode the similarity gate, clipping and
    consolidation run.

    Args:
        config: architecture; see :class:`Spann3RConfig`.
        memory: the spatial memory: a :class:`~spatialmem.memory.SpatialMemory` subclass (or any
            callable taking a :class:`~spatialmem.memory.MemoryConfig`), built with
            ``config.memory_config``; or a ready instance of the right width. Default:
            :class:`~spatialmem.memory.SpatialMemory`.
    """

    def __init__(
        self,
        config: Spann3RConfig | None = None,
        memory: SpatialMemory | MemoryFactory | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or Spann3RConfig()
        d = config.dust3r
        self.dust3r = DUSt3R(d)
        self.memory_encoder = MemoryEncoder(
            embed_dim=config.resolved_mem_enc_embed_dim,
            out_dim=config.mem_dim,
            depth=config.mem_enc_depth,
            num_heads=config.mem_enc_num_heads,
            mlp_ratio=config.mem_mlp_ratio,
            patch_size=d.patch_size,
            rope_base=d.rope_base if config.mem_rope else None,
            norm_layer=partial(nn.LayerNorm, eps=d.norm_eps),
        )
        self.key_head = TokenMLP(
            d.enc_embed_dim, d.dec_embed_dim, config.mem_dim, config.key_hidden_dim
        )
        self.query_head = TokenMLP(
            d.enc_embed_dim, d.dec_embed_dim, config.mem_dim, config.key_hidden_dim
        )
        self.memory = _build_memory(memory, config.memory_config)

    # ------------------------------------------------------------------ building blocks
    def encode(self, images: Float[Tensor, "B 3 H W"]) -> EncodedFrame:
        """Encode one frame per sequence (portrait handling as the wrapped pair model)."""
        out = self.dust3r.encode(images)
        return _encoded(out, images)

    def encode_pair(
        self, img1: Float[Tensor, "B 3 H W"], img2: Float[Tensor, "B 3 H W"]
    ) -> tuple[EncodedFrame, EncodedFrame]:
        """Encode two frames in one encoder batch (as the official first step does)."""
        first, second = self.dust3r.encode_pair(img1, img2)
        return _encoded(first, img1), _encoded(second, img2)

    def fuse(
        self, state: MemoryState, frame: EncodedFrame, query: Float[Tensor, "B P C"] | None
    ) -> tuple[Float[Tensor, "B P Ce"], MemoryState]:
        """View-1 tokens for the decoder: the memory read-out with ``query``, or the encoder
        output itself when there is no query (step 0)."""
        if query is None:
            return frame.tokens, state
        return self.memory.read(state, query)

    def decode(
        self, fused: Float[Tensor, "B P Ce"], view1: EncodedFrame, view2: EncodedFrame
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run the twin decoders; entry 0 of each list is its input (``fused`` / view 2's
        encoder tokens), entry ``L`` the normed last layer."""
        extent = max(*view1.grid, *view2.grid)
        return self.dust3r.decoder(fused, view2.tokens, view1.positions, view2.positions, extent)

    def predict_view1(self, dec1: list[Tensor], frame: EncodedFrame) -> HeadOutput:
        """Head 1 on view 1's decoder tokens: frame ``i``'s points in frame 0's coordinates."""
        return self.dust3r.predict(self.dust3r.head1, dec1, frame.image)

    def predict_view2(self, dec2: list[Tensor], frame: EncodedFrame) -> HeadOutput:
        """Head 2 on view 2's decoder tokens: frame ``i + 1``'s points in frame 0's coordinates."""
        return self.dust3r.predict(self.dust3r.head2, dec2, frame.image)

    def memory_value(
        self, view1: HeadOutput, frame: EncodedFrame, key: Float[Tensor, "B P C"]
    ) -> Float[Tensor, "B P C"]:
        """Memory value of a frame: ``memory_encoder(points) + key``.

        The memory encoder sees the pointmap in the orientation the image encoder saw, so value
        tokens line up with key tokens patch by patch.
        """
        pts = view1.pts3d
        if self._encoded_transposed(frame):
            pts = pts.transpose(1, 2)
        return self.memory_encoder(pts) + key

    def step(
        self,
        state: MemoryState,
        view1: EncodedFrame,
        view2: EncodedFrame,
        query: Float[Tensor, "B P C"] | None,
        *,
        predict_view2: bool = True,
        fused: Float[Tensor, "B P Ce"] | None = None,
    ) -> tuple[PairStep, MemoryState]:
        """One reconstruction step: read, decode, predict, compute keys, write.

        Args:
            state: the memory before the step (after the read, when ``fused`` is given).
            view1: frame ``i`` encoded.
            view2: frame ``i + 1`` encoded.
            query: the previous step's :attr:`PairStep.query`; ``None`` at step 0.
            predict_view2: run the second head (its output is only needed for the last frame at
                inference, and for the loss in training).
            fused: view-1 tokens already read from the memory with ``query`` by :meth:`fuse`,
                whose returned state is then ``state``; skips the read (offline ordering reads
                once per step before trying candidates).

        Returns:
            ``(step, new_state)``.
        """
        if fused is None:
            fused, state = self.fuse(state, view1, query)
        dec1, dec2 = self.decode(fused, view1, view2)
        key = self.key_head(view1.tokens, dec1[-1])
        next_query = self.query_head(view2.tokens, dec2[-1])
        res1 = self.predict_view1(dec1, view1)
        res2 = self.predict_view2(dec2, view2) if predict_view2 else None
        value = self.memory_value(res1, view1, key)
        state = self.memory.update(state, key, value)
        return PairStep(res1, res2, fused, dec2, key, next_query, value), state

    def init_state(self, batch_size: int, frame: EncodedFrame) -> MemoryState:
        """An empty memory for ``batch_size`` streams of frames shaped like ``frame``."""
        h, w = frame.grid
        ref = frame.tokens
        return self.memory.init_state(batch_size, h * w, device=ref.device, dtype=ref.dtype)

    # ------------------------------------------------------------------ sequence forward
    def forward(
        self, frames: Float[Tensor, "B T 3 H W"], return_steps: bool | None = None
    ) -> SequenceOutput:
        """Reconstruct every frame of a batch of sequences in frame 0's coordinates.

        Args:
            frames: ``T >= 2`` frames per sequence in [-1, 1], ``H``/``W`` multiples of the patch
                size, all frames of one size.
            return_steps: also return both views of every step (:attr:`SequenceOutput.steps`);
                default: in training mode only. In eval mode without it the second head runs
                on the last step only, since its other outputs are never used.

        Returns:
            :class:`SequenceOutput`; ``pts3d[:, t]`` is the official ``preds[t]``.
        """
        check_tensor("frames", frames, ndim=5, floating=True, dims={2: 3}, expected="B T 3 H W")
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(
                f"`frames` needs at least 2 frames (T >= 2), got {tuple(frames.shape)}"
            )
        check_images("frames", frames.flatten(0, 1), self.config.dust3r.patch_size)
        if return_steps is None:
            return_steps = self.training
        view1, view2 = self.encode_pair(frames[:, 0], frames[:, 1])
        state = self.init_state(b, view1)
        query: Tensor | None = None
        steps: list[PairStep] = []
        for i in range(t - 1):
            if i > 0:
                view1, view2 = view2, self.encode(frames[:, i + 1])
            last = i == t - 2
            out, state = self.step(
                state, view1, view2, query, predict_view2=return_steps or last
            )
            query = out.query
            steps.append(out)
        return SequenceOutput.from_steps(steps, state, with_steps=return_steps)

    # ------------------------------------------------------------------ helpers
    def _encoded_transposed(self, frame: EncodedFrame) -> bool:
        h, w = frame.image_hw
        return h > w and self.config.dust3r.portrait == "transpose"

    def extra_repr(self) -> str:
        c = self.config
        return f"mem_dim={c.mem_dim}, mem_enc_depth={c.mem_enc_depth}"


def _encoded(out: EncoderOutput, images: Tensor) -> EncodedFrame:
    hw = (int(images.shape[-2]), int(images.shape[-1]))
    return EncodedFrame(out.tokens, out.positions, out.grid, hw, images)


def _build_memory(
    memory: SpatialMemory | MemoryFactory | None, config: MemoryConfig
) -> SpatialMemory:
    if memory is None:
        return SpatialMemory(config)
    if isinstance(memory, SpatialMemory):
        if memory.config.dim != config.dim:
            raise ValueError(
                f"the given memory has width {memory.config.dim}; this model needs {config.dim}"
            )
        return memory
    if not callable(memory):
        raise TypeError(
            "`memory` must be a SpatialMemory, a SpatialMemory subclass or a factory taking a "
            f"MemoryConfig, got {type(memory).__name__}"
        )
    built = memory(config)
    if not isinstance(built, SpatialMemory):
        raise TypeError(f"the memory factory returned {type(built).__name__}, not a SpatialMemory")
    return built


def replace_memory(config: Spann3RConfig, **memory_overrides: Any) -> Spann3RConfig:
    """``config`` with some :class:`~spatialmem.memory.MemoryConfig` fields changed."""
    return dataclasses.replace(
        config, memory=dataclasses.replace(config.memory_config, **memory_overrides)
    )
