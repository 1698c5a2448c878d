"""Per-token MLP over concatenated encoder and decoder tokens (Spann3R's query/key heads)."""

import torch
from timm.layers import Mlp
from torch import Tensor, nn

from spatialmem._checks import check_same_batch, check_tensor, checks_active
from spatialmem._typing import Float

__all__ = ["TokenMLP"]


class TokenMLP(nn.Module):
    """``fc2(GELU(fc1([enc_tokens, dec_tokens])))``, token by token.

    Spann3R projects each frame to memory keys and queries with two of these (paper Eq. 5-6): the
    input is the concatenation of the frame's encoder tokens and its last decoder tokens, in that
    order (the paper writes the arguments the other way round; the published weights expect
    encoder first).

    Args:
        enc_dim: encoder token width ``Ce``.
        dec_dim: decoder token width ``Cd``.
        out_dim: memory width ``C``.
        hidden_dim: hidden width; ``None`` means ``enc_dim + dec_dim`` (the published model).
    """

    def __init__(
        self, enc_dim: int, dec_dim: int, out_dim: int, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        self.enc_dim, self.dec_dim = enc_dim, dec_dim
        in_dim = enc_dim + dec_dim
        self.mlp = Mlp(in_dim, hidden_dim or in_dim, out_dim, act_layer=nn.GELU)

    def forward(
        self, enc_tokens: Float[Tensor, "B P Ce"], dec_tokens: Float[Tensor, "B P Cd"]
    ) -> Float[Tensor, "B P C"]:
        """Project a frame's tokens.

        Args:
            enc_tokens: encoder output of the frame.
            dec_tokens: last decoder layer's output for the frame.

        Returns:
            ``[B, P, out_dim]``.
        """
        if checks_active():
            self._check_inputs(enc_tokens, dec_tokens)
        return self.mlp(torch.cat((enc_tokens, dec_tokens.to(enc_tokens.dtype)), dim=-1))

    def _check_inputs(self, enc_tokens: Tensor, dec_tokens: Tensor) -> None:
        check_tensor("enc_tokens", enc_tokens, ndim=3, floating=True, dims={2: self.enc_dim},
                     expected=f"B P Ce with Ce={self.enc_dim}")  # fmt: skip
        check_tensor("dec_tokens", dec_tokens, ndim=3, floating=True, dims={2: self.dec_dim},
                     expected=f"B P Cd with Cd={self.dec_dim}")  # fmt: skip
        check_same_batch(("enc_tokens", "dec_tokens"), (enc_tokens, dec_tokens))
        if enc_tokens.shape[1] != dec_tokens.shape[1]:
            raise ValueError(
                f"`enc_tokens` {tuple(enc_tokens.shape)} and `dec_tokens` "
                f"{tuple(dec_tokens.shape)} must have the same number of tokens P"
            )
