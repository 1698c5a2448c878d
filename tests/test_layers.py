"""Properties of the building blocks: RoPE, patch embedding, attention, blocks."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spatialmem.layers import (
    Attention,
    CrossAttention,
    DecoderBlock,
    EncoderBlock,
    PatchEmbed,
    RoPE2D,
    grid_positions,
)


def _tokens(seed: int, b: int, heads: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(b, heads, n, d, generator=torch.Generator().manual_seed(seed))


@given(
    seed=st.integers(0, 2**16),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    half_pairs=st.integers(1, 4),
    base=st.sampled_from([100.0, 10000.0]),
)
def test_rope_preserves_norms(seed: int, h: int, w: int, half_pairs: int, base: float) -> None:
    d = 4 * half_pairs
    x = _tokens(seed, 2, 3, h * w, d)
    pos = grid_positions(2, h, w, torch.device("cpu"))
    y = RoPE2D(base)(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


@given(
    seed=st.integers(0, 2**16),
    r1=st.integers(0, 20),
    c1=st.integers(0, 20),
    r2=st.integers(0, 20),
    c2=st.integers(0, 20),
    shift_r=st.integers(0, 20),
    shift_c=st.integers(0, 20),
)
def test_rope_scores_depend_only_on_position_difference(
    seed: int, r1: int, c1: int, r2: int, c2: int, shift_r: int, shift_c: int
) -> None:
    rope = RoPE2D(100.0)
    q = _tokens(seed, 1, 2, 1, 16)
    k = _tokens(seed + 1, 1, 2, 1, 16)

    def score(pq: tuple[int, int], pk: tuple[int, int]) -> torch.Tensor:
        qp = torch.tensor([[pq]])
        kp = torch.tensor([[pk]])
        return (rope(q, qp) * rope(k, kp)).sum(-1)

    base = score((r1, c1), (r2, c2))
    shifted = score((r1 + shift_r, c1 + shift_c), (r2 + shift_r, c2 + shift_c))
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)


def test_rope_rotates_first_half_by_row_second_by_column() -> None:
    rope = RoPE2D(100.0)
    x = torch.randn(1, 1, 1, 8)
    by_row = rope(x, torch.tensor([[[3, 0]]]))
    by_col = rope(x, torch.tensor([[[0, 3]]]))
    torch.testing.assert_close(by_row[..., 4:], x[..., 4:])  # column half untouched
    torch.testing.assert_close(by_col[..., :4], x[..., :4])  # row half untouched
    # Channel 0 pairs with channel 2 (rotate-half within a 4-wide half), frequency base**0 = 1.
    angle = torch.tensor(3.0)
    want0 = x[..., 0] * angle.cos() - x[..., 2] * angle.sin()
    torch.testing.assert_close(by_row[..., 0], want0)


def test_rope_table_is_cached_and_extent_matches_inferred() -> None:
    rope = RoPE2D()
    x = torch.randn(2, 2, 6, 8)
    pos = grid_positions(2, 2, 3, torch.device("cpu"))
    a = rope(x, pos)
    b = rope(x, pos, extent=10)
    torch.testing.assert_close(a, b)
    cos1, _ = rope.tables(4, 10, x.device, x.dtype)
    cos2, _ = rope.tables(4, 10, x.device, x.dtype)
    assert cos1 is cos2
    assert "base=100" in repr(rope)


@pytest.mark.parametrize(
    ("tokens", "positions", "match"),
    [
        (torch.randn(1, 2, 4, 6), torch.zeros(1, 4, 2, dtype=torch.long), "divisible by 4"),
        (torch.randn(1, 2, 4, 8), torch.zeros(1, 3, 2, dtype=torch.long), "does not match"),
        (torch.randn(1, 2, 4, 8), torch.zeros(1, 4, 2), "integer"),
        (torch.randn(2, 4, 8), torch.zeros(1, 4, 2, dtype=torch.long), "4 dimensions"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_rope_rejects_bad_input(tokens: object, positions: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        RoPE2D()(tokens, positions)  # type: ignore[arg-type]


@pytest.mark.usefixtures("without_typecheck")
def test_rope_gather_and_rotate_reject_bad_input() -> None:
    rope, cpu = RoPE2D(), torch.device("cpu")
    pos = grid_positions(1, 2, 2, cpu)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        rope.gather(pos + 1, 8, 2, cpu, torch.float32)  # a position equal to extent
    with pytest.raises(ValueError, match="multiple of 4"):
        rope.gather(pos, 6, 2, cpu, torch.float32)
    with pytest.raises(ValueError, match="extent"):
        rope.gather(pos, 8, 0, cpu, torch.float32)
    with pytest.raises(TypeError, match="integer"):
        rope.gather(pos.float(), 8, 2, cpu, torch.float32)  # type: ignore[arg-type]
    cos, sin = rope.gather(pos, 8, 2, cpu, torch.float32)
    with pytest.raises(ValueError, match="signed_sin"):
        rope.rotate(torch.randn(1, 3, 4, 8), cos, sin[:, :, :3])
    with pytest.raises(ValueError, match="divisible by 4"):
        rope.rotate(torch.randn(1, 3, 4, 6), cos, sin)
    x = torch.randn(1, 3, 4, 8)
    torch.testing.assert_close(rope.rotate(x, cos, sin), rope(x, pos))


def test_typecheck_hook_is_active_in_the_suite() -> None:
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        RoPE2D()(torch.randn(1, 2, 4, 8), torch.zeros(1, 3, 2, dtype=torch.long))


def test_rope_rejects_bad_base() -> None:
    with pytest.raises(ValueError, match="base"):
        RoPE2D(0.0)


@given(h=st.integers(1, 4), w=st.integers(1, 4), b=st.integers(1, 3))
def test_patch_embed_tokens_and_positions(h: int, w: int, b: int) -> None:
    embed = PatchEmbed(patch_size=4, in_chans=3, embed_dim=8)
    img = torch.randn(b, 3, 4 * h, 4 * w)
    tokens, pos = embed(img)
    assert tokens.shape == (b, h * w, 8)
    assert pos.dtype == torch.int64 and pos.shape == (b, h * w, 2)
    # Row-major: token r*w + c is patch (r, c), and its value is the conv of that patch.
    r, c = h - 1, w - 1
    assert pos[0, r * w + c].tolist() == [r, c]
    patch = img[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
    want = torch.nn.functional.conv2d(patch, embed.proj.weight, embed.proj.bias).flatten(1)
    torch.testing.assert_close(tokens[:, r * w + c], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (torch.randn(1, 3, 10, 8), "multiples of the patch size"),
        (torch.randn(3, 8, 8), "4 dimensions"),
        (torch.randn(1, 4, 8, 8), "size 3 in dimension 1"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating"),
        ([[1.0]], "torch.Tensor"),
    ],
)
@pytest.mark.usefixtures("without_typecheck")
def test_patch_embed_rejects_bad_images(img: object, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        PatchEmbed(patch_size=4, embed_dim=8)(img)  # type: ignore[arg-type]


def test_patch_embed_rejects_nan_unless_disabled() -> None:
    import spatialmem

    img = torch.randn(1, 3, 8, 8)
    img[0, 0, 0, 0] = math.nan
    embed = PatchEmbed(patch_size=4, embed_dim=8)
    with pytest.raises(ValueError, match="NaN/Inf"):
        embed(img)
    with spatialmem.value_checks(False):
        tokens, _ = embed(img)
    assert torch.isnan(tokens).any()


def _naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    return scores.softmax(-1) @ v


def test_self_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = Attention(16, num_heads=2, rope=RoPE2D()).eval()
    x = torch.randn(2, 6, 16)
    pos = grid_positions(2, 2, 3, x.device)
    q, k, v = attn.qkv(x).view(2, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
    q, k = attn.rope(q, pos), attn.rope(k, pos)
    want = attn.proj(_naive_attention(q, k, v).transpose(1, 2).reshape(2, 6, 16))
    torch.testing.assert_close(attn(x, pos), want, atol=1e-5, rtol=1e-5)


def test_cross_attention_uses_each_sides_positions() -> None:
    torch.manual_seed(0)
    attn = CrossAttention(16, num_heads=2, rope=RoPE2D()).eval()
    x, y = torch.randn(1, 4, 16), torch.randn(1, 6, 16)
    px = grid_positions(1, 2, 2, x.device)
    py = grid_positions(1, 2, 3, x.device)

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, 2, 8).transpose(1, 2)

    q = attn.rope(heads(attn.projq(x)), px)
    k = attn.rope(heads(attn.projk(y)), py)
    v = heads(attn.projv(y))
    want = attn.proj(_naive_attention(q, k, v).transpose(1, 2).reshape(1, 4, 16))
    torch.testing.assert_close(attn(x, y, y, px, py), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positions are required"):
        attn(x, y, y)


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=3)


def test_blocks_are_residual_and_shape_preserving() -> None:
    torch.manual_seed(0)
    enc = EncoderBlock(16, 2, rope=RoPE2D()).eval()
    dec = DecoderBlock(16, 2, rope=RoPE2D()).eval()
    x, y = torch.randn(2, 4, 16), torch.randn(2, 6, 16)
    px = grid_positions(2, 2, 2, x.device)
    py = grid_positions(2, 3, 2, x.device)
    assert enc(x, px).shape == x.shape
    assert dec(x, y, px, py).shape == x.shape
    # Zeroing every residual branch's output projection makes the blocks the identity.
    for block in (enc, dec):
        for name, p in block.named_parameters():
            if name.endswith(("proj.weight", "proj.bias", "fc2.weight", "fc2.bias")):
                torch.nn.init.zeros_(p)
    torch.testing.assert_close(enc(x, px), x)
    torch.testing.assert_close(dec(x, y, px, py), x)
    assert isinstance(DecoderBlock(16, 2, norm_other=False).norm_y, torch.nn.Identity)
