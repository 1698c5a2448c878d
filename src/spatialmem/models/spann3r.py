"""Spann3R: a DUSt3R pair model driven frame by frame through a spatial memory (paper Sec. 3).

Data flow of one step ``i`` (view 1 = frame ``i``, view 2 = frame ``i + 1``):

```text
frame i   --encoder--> f_i  --(i > 0: memory.read(query_{i-1}))--> fused_i --+
frame i+1 --encoder--> f_i+1 -----------------------------------------------+--> TwinDecoder
dec1 --head1--> frame i's points      dec2 --head2--> frame i+1's points (frame 0's coords)
key_i   = key_head(f_i, dec1[-1])        query_i = query_head(f_i+1, dec2[-1])
value_i = memory_encoder(frame i's points) + key_i
memory.update(key_i, value_i)            (eval: similarity gate, working/long-term memory)
```

Step 0 reads nothing (``fused_0 = f_0``). Frame ``t``'s reconstruction is view 1 of step ``t``,
except the last frame, which is view 2 of the last step.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import Tensor, nn

from spatialmem._checks import (
    check_images,
    check_same_batch,
    check_tensor,
    internal_calls,
    match_module,
)
from spatialmem._typing import Float
from spatialmem.encoders import EncodedFrame
from spatialmem.heads import HeadOutput, TokenMLP
from spatialmem.memory import MemoryConfig, MemoryEncoder, MemoryState, SpatialMemory
from spatialmem.models.config import DUSt3RConfig
from spatialmem.models.dust3r import DUSt3R, PairDecoding
from spatialmem.models.outputs import PairStep, SequenceOutput

__all__ = [
    "SequenceDriver",
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


MemoryFactory = type[SpatialMemory] | Callable[[MemoryConfig], SpatialMemory]


class Spann3R(nn.Module):
    """The Spann3R reconstruction model (paper Sec. 3): DUSt3R + memory encoder + spatial memory.

    Parameters: ``dust3r`` (a [`DUSt3R`][spatialmem.models.DUSt3R] pair model),
    ``memory_encoder`` ([`MemoryEncoder`][spatialmem.memory.MemoryEncoder]), ``key_head`` and
    ``query_head`` ([`TokenMLP`][spatialmem.heads.TokenMLP], official
    ``attn_head_1``/``attn_head_2``) and ``memory`` (a
    [`SpatialMemory`][spatialmem.memory.SpatialMemory] holding ``norm_q/k/v``). The per-sequence
    state lives in a [`MemoryState`][spatialmem.memory.MemoryState] created by
    [`forward`][spatialmem.models.Spann3R.forward] (or by the streaming
    [`OnlineReconstructor`][spatialmem.inference.OnlineReconstructor]).

    Modes follow the official model: in ``train()`` mode every frame is inserted, attention is not
    clipped and dropout is applied to it; in ``eval()`` mode the similarity gate, clipping and
    consolidation run.

    Args:
        config: architecture; see [`Spann3RConfig`][spatialmem.models.Spann3RConfig].
        memory: the spatial memory: a [`SpatialMemory`][spatialmem.memory.SpatialMemory] subclass
            (or any callable taking a [`MemoryConfig`][spatialmem.memory.MemoryConfig]), built with
            ``config.memory_config``; or a ready instance of the right width. Default:
            [`SpatialMemory`][spatialmem.memory.SpatialMemory].
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
        return self.dust3r.encode(images)

    def encode_pair(
        self, img1: Float[Tensor, "B 3 H W"], img2: Float[Tensor, "B 3 H W"]
    ) -> tuple[EncodedFrame, EncodedFrame]:
        """Encode two frames in one encoder batch (as the official first step does).

        Raises:
            ValueError: the two batches differ in size.
        """
        check_same_batch(["img1", "img2"], [img1, img2])
        return self.dust3r.encode_pair(img1, img2)

    def fuse(
        self, state: MemoryState, frame: EncodedFrame, query: Float[Tensor, "B P C"] | None
    ) -> tuple[Float[Tensor, "B P Ce"], MemoryState]:
        """View-1 tokens for the decoder: the memory read-out with ``query``, or the encoder
        output itself when there is no query (step 0)."""
        if query is None:
            return frame.tokens, state
        return self.memory.read(state, query)

    def predict_pair(
        self,
        fused: Float[Tensor, "B P Ce"],
        view1: EncodedFrame,
        view2: EncodedFrame,
        *,
        view2_head: bool = True,
    ) -> PairDecoding:
        """Decode view 1 (its tokens replaced by ``fused``) against view 2 and apply the heads.

        Both views' points come out in frame 0's coordinates (the memory carries frame 0's
        frame). Nothing is written to the memory.
        """
        return self.dust3r.predict_pair(view1.replace(tokens=fused), view2, view2_head=view2_head)

    def predict_view2(self, dec2: list[Tensor], view2: EncodedFrame) -> HeadOutput:
        """Head 2 on view 2's decoder tokens: frame ``i + 1``'s points in frame 0's coordinates
        (for a step that ran without it, see [PairStep.dec2][spatialmem.models.PairStep.dec2])."""
        return self.dust3r.predict_view2(dec2, view2)

    def memory_value(
        self, view1: HeadOutput, frame: EncodedFrame, key: Float[Tensor, "B P C"]
    ) -> Float[Tensor, "B P C"]:
        """Memory value of a frame: ``memory_encoder(points) + key``.

        The memory encoder sees the pointmap in the orientation the image encoder saw, so value
        tokens line up with key tokens patch by patch.
        """
        pts = view1.pts3d.transpose(1, 2) if frame.transposed else view1.pts3d
        return self.memory_encoder(pts) + key

    def write_step(
        self,
        state: MemoryState,
        view1: EncodedFrame,
        view2: EncodedFrame,
        fused: Float[Tensor, "B P Ce"],
        decoded: PairDecoding,
        *,
        write: bool = True,
    ) -> tuple[PairStep, MemoryState]:
        """Finish a decoded step: keys, the next query, the value, and the memory update.

        Args:
            state: the memory after this step's read.
            view1: frame ``i`` encoded (its own encoder tokens, not the read-out).
            view2: frame ``i + 1`` encoded.
            fused: the read-out the step decoded with.
            decoded: [predict_pair][spatialmem.models.Spann3R.predict_pair]'s output.
            write: compute the value and insert frame ``i``; ``False`` skips the memory encoder
                and the update (the step's ``value`` is ``None`` and ``state`` is returned as is).

        Returns:
            ``(step, new_state)``.
        """
        key = self.key_head(view1.tokens, decoded.dec1[-1])
        query = self.query_head(view2.tokens, decoded.dec2[-1])
        value = None
        if write:
            value = self.memory_value(decoded.view1, view1, key)
            state = self.memory.update(state, key, value)
        step = PairStep(decoded.view1, decoded.view2, fused, decoded.dec2, key, query, value)
        return step, state

    def step(
        self,
        state: MemoryState,
        view1: EncodedFrame,
        view2: EncodedFrame,
        query: Float[Tensor, "B P C"] | None,
        *,
        predict_view2: bool = True,
    ) -> tuple[PairStep, MemoryState]:
        """One reconstruction step: read, decode, predict, compute keys, write.

        The loop over a sequence is [SequenceDriver][spatialmem.models.SequenceDriver], which
        carries ``state``, view 1 and the query from step to step.

        Args:
            state: the memory before the step.
            view1: frame ``i`` encoded.
            view2: frame ``i + 1`` encoded.
            query: the previous step's [query][spatialmem.models.PairStep.query]; ``None`` at
                step 0.
            predict_view2: run the second head (its output is only needed for the last frame at
                inference, and for the loss in training).

        Returns:
            ``(step, new_state)``.
        """
        fused, state = self.fuse(state, view1, query)
        decoded = self.predict_pair(fused, view1, view2, view2_head=predict_view2)
        return self.write_step(state, view1, view2, fused, decoded)

    def init_state(self, batch_size: int, frame: EncodedFrame) -> MemoryState:
        """An empty memory for ``batch_size`` streams of frames shaped like ``frame``."""
        h, w = frame.grid
        ref = frame.tokens
        return self.memory.init_state(batch_size, h * w, device=ref.device, dtype=ref.dtype)

    # ------------------------------------------------------------------ sequence forward
    def forward(
        self,
        frames: Float[Tensor, "B T 3 H W"],
        return_steps: bool | None = None,
        *,
        return_memory: bool = True,
    ) -> SequenceOutput:
        """Reconstruct every frame of a batch of sequences in frame 0's coordinates.

        Args:
            frames: ``T >= 2`` frames per sequence in [-1, 1] (see
                [`to_model_range`][spatialmem.data.to_model_range]), ``H``/``W`` multiples of the
                patch size, all frames of one size, on the model's device. Any floating dtype is
                accepted and cast to the model's parameter dtype.
            return_steps: also return both views of every step
                ([SequenceOutput.steps][spatialmem.models.SequenceOutput.steps]); default: in
                training mode only. In eval mode without it the second head runs on the last step
                only, since its other outputs are never used.
            return_memory: keep the memory after the last frame
                ([SequenceOutput.memory][spatialmem.models.SequenceOutput.memory]), e.g. to
                continue the stream. ``False`` (what training uses) skips the last frame's write,
                whose memory-encoder pass never reaches a loss, and returns ``memory=None``:
                under ``DistributedDataParallel`` a kept memory would make the memory parts look
                used on 2-frame clips, where they receive no gradient.

        Returns:
            The reconstruction; ``pts3d[:, t]`` is the official ``preds[t]``.

        Raises:
            TypeError: ``frames`` is not a floating tensor.
            ValueError: wrong shape, fewer than 2 frames, ``frames`` on another device than the
                model, NaN/Inf values or values far outside [-1, 1] (the last two are value
                checks, see [`set_value_checks`][spatialmem.set_value_checks]).
        """
        check_tensor("frames", frames, ndim=5, floating=True, dims={2: 3}, expected="B T 3 H W")
        frames = match_module("frames", frames, self)
        t = frames.shape[1]
        if t < 2:
            raise ValueError(
                f"`frames` needs at least 2 frames (T >= 2), got {tuple(frames.shape)}"
            )
        check_images(
            "frames", frames.flatten(0, 1), self.config.dust3r.patch_size, pixel_range=True
        )
        if return_steps is None:
            return_steps = self.training
        with internal_calls():
            driver = SequenceDriver(self)
            view1, view2 = self.encode_pair(frames[:, 0], frames[:, 1])
            driver.start(view1)
            steps = []
            for i in range(1, t):
                if i > 1:
                    view2 = self.encode(frames[:, i])
                last = i == t - 1
                steps.append(
                    driver.advance(
                        view2,
                        predict_view2=return_steps or last,
                        write=return_memory or not last,
                    )
                )
            memory = driver.state if return_memory else None
            return SequenceOutput.from_steps(steps, memory, with_steps=return_steps)

    def extra_repr(self) -> str:
        c = self.config
        return f"mem_dim={c.mem_dim}, mem_enc_depth={c.mem_enc_depth}"


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
    """``config`` with some [`MemoryConfig`][spatialmem.memory.MemoryConfig] fields changed."""
    return dataclasses.replace(
        config, memory=dataclasses.replace(config.memory_config, **memory_overrides)
    )


class SequenceDriver:
    """The one loop of Spann3R: carries the memory, view 1 and the query from step to step.

    [Spann3R.forward][spatialmem.models.Spann3R.forward], the streaming
    [OnlineReconstructor][spatialmem.inference.OnlineReconstructor] and the offline
    next-best-view search all run their steps through this class (as XMem's ``InferenceCore``
    is the one loop over its network), so a step is computed the same way everywhere:

    ```text
    start(view1)                       empty memory sized for view 1, no query yet
    fused()                            read the memory with the query (once per step; step 0:
                                       view 1's own encoder tokens)
    predict(view2)                     decode + heads against the fused view 1, no write (offline
                                       candidate scoring: a batch of K candidates)
    advance(view2)                     predict, keys, value, memory write; view 2 becomes view 1
    ```

    Example:
        ```python
        import torch
        import spatialmem as sm

        model = sm.create_model("spann3r_tiny").eval()
        frames = torch.rand(1, 4, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            driver = sm.models.SequenceDriver(model)
            view1, view2 = model.encode_pair(frames[:, 0], frames[:, 1])
            driver.start(view1)
            for t in range(1, 4):
                if t > 1:
                    view2 = model.encode(frames[:, t])
                step = driver.advance(view2, predict_view2=t == 3)
        step.view2.pts3d.shape            # the last frame: torch.Size([1, 32, 32, 3])
        ```

    Args:
        model: the model whose steps to run.
    """

    def __init__(self, model: Spann3R) -> None:
        self.model = model
        self.state: MemoryState | None = None
        """The memory after the latest step (``None`` before [start][
        spatialmem.models.SequenceDriver.start])."""
        self.view1: EncodedFrame | None = None
        """View 1 of the next step (the latest view 2)."""
        self.query: Tensor | None = None
        """The query of the next step's read (``None`` at step 0)."""
        self.num_steps = 0
        """Steps completed since [start][spatialmem.models.SequenceDriver.start]."""
        self._fused: Tensor | None = None

    def start(self, view1: EncodedFrame, state: MemoryState | None = None) -> None:
        """Begin a sequence whose first view 1 is ``view1``.

        Args:
            view1: frame 0 encoded.
            state: a memory to continue from; default an empty one sized for ``view1``.
        """
        if state is None:
            state = self.model.init_state(view1.batch_size, view1)
        self.state, self.view1, self.query = state, view1, None
        self.num_steps, self._fused = 0, None

    def resume(
        self,
        state: MemoryState | None,
        view1: EncodedFrame | None,
        query: Tensor | None,
        num_steps: int,
    ) -> None:
        """Continue a sequence from saved pieces (memory, pending view 1, query, step count);
        ``None`` pieces stand for a sequence that has not started its first step yet."""
        self.state, self.view1, self.query = state, view1, query
        self.num_steps, self._fused = num_steps, None

    def fused(self) -> Float[Tensor, "B P Ce"]:
        """View 1's decoder input for the current step: the memory read with the query, done
        once per step (its attention is accumulated once, however many candidates are tried)."""
        if self.state is None or self.view1 is None:
            raise RuntimeError("call start() before running steps")
        if self._fused is None:
            self._fused, self.state = self.model.fuse(self.state, self.view1, self.query)
        return self._fused

    def predict(self, view2: EncodedFrame, *, view2_head: bool = True) -> PairDecoding:
        """Decode ``view2`` against the current step's fused view 1 without writing anything.

        ``view2`` may hold ``K`` candidates for a single stream (``B = 1``): view 1 and its
        read-out are then repeated ``K`` times.
        """
        fused = self.fused()
        view1 = self.view1
        assert view1 is not None
        k = view2.batch_size
        if k != view1.batch_size:
            view1 = view1.apply(lambda t: t.expand(k, *t.shape[1:]))
            fused = fused.expand(k, *fused.shape[1:])
        return self.model.predict_pair(fused, view1, view2, view2_head=view2_head)

    def advance(
        self, view2: EncodedFrame, *, predict_view2: bool = True, write: bool = True
    ) -> PairStep:
        """Run the current step with ``view2`` and move on (``view2`` becomes view 1).

        Args:
            view2: frame ``i + 1`` encoded.
            predict_view2: run the second head.
            write: insert view 1 into the memory (``False``: the last step of a sequence whose
                memory is not kept).

        Returns:
            The step's outputs; the memory is in [state][spatialmem.models.SequenceDriver.state].
        """
        decoded = self.predict(view2, view2_head=predict_view2)
        assert self.state is not None and self.view1 is not None and self._fused is not None
        step, self.state = self.model.write_step(
            self.state, self.view1, view2, self._fused, decoded, write=write
        )
        self.view1, self.query, self._fused = view2, step.query, None
        self.num_steps += 1
        return step
