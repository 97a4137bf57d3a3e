"""Text encoder of OneFormer's contrastive branch: a small CLIP-style causal transformer trained from scratch.

Used only in training (``MODEL.IS_TRAIN``): the class texts of each image are tokenized to 77 ids
(:class:`oneformer.data.tokenizer.Tokenize`), embedded, passed through pre-LN residual blocks with a causal mask,
and pooled at the end-of-text token. The parameter names match the released checkpoints (``text_encoder.*``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["QuickGELU", "ResidualAttentionBlock", "Transformer", "TextTransformer"]


class QuickGELU(nn.Module):
    """Sigmoid approximation of GELU used by CLIP: ``x * sigmoid(1.702 * x)``. Same shape in and out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _MLP(nn.Module):
    """Position-wise feed-forward ``width -> 4*width -> width`` with QuickGELU (children ``c_fc`` and ``c_proj``)."""

    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    Args:
        width: model dimension.
        heads: number of attention heads (``width`` must be divisible by it).
    Forward takes ``x`` of shape (B, L, width) (batch first) and an optional additive float mask (L, L);
    returns a tensor of the same shape as ``x``.
    """

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = _MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.ln_1(x)
        if attn_mask is not None:
            attn_mask = attn_mask.to(dtype=h.dtype, device=h.device)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    """Stack of :class:`ResidualAttentionBlock` kept in ``resblocks`` (checkpoint names ``resblocks.{i}.*``).

    Forward takes ``x`` (B, L, width) and an optional additive mask (L, L); returns (B, L, width).
    """

    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class TextTransformer(nn.Module):
    """CLIP-style causal text encoder pooled at the end-of-text token.

    Args:
        context_length: number of token positions per text (77).
        width: model dimension (256 in every OneFormer config); heads = ``width // 64``.
        layers: number of residual blocks (6 in every OneFormer config).
        vocab_size: token vocabulary size (49408, CLIP BPE).

    ``forward(text)`` takes a LongTensor of token ids with shape (B, context_length) -- callers with (B, T,
    context_length) texts flatten them first, or pass the 3-D tensor directly -- and returns the features after
    ``ln_final`` at each row's argmax-id position (the EOT token, whose id 49407 is the largest), shape
    (B, width) (or (B, T, width) for a 3-D input). There is no output projection.
    """

    def __init__(self, context_length: int = 77, width: int = 256, layers: int = 6, vocab_size: int = 49408):
        super().__init__()
        if width % 64 != 0:
            raise ValueError(f"TextTransformer width must be a multiple of 64 (heads = width // 64), got {width}")
        self.context_length = int(context_length)
        self.width = int(width)
        self.layers = int(layers)
        self.vocab_size = int(vocab_size)
        heads = self.width // 64

        # Registration order mirrors the released checkpoints' key order.
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, self.width))
        self.transformer = Transformer(self.width, self.layers, heads)
        self.ln_final = nn.LayerNorm(self.width)
        self.token_embedding = nn.Embedding(self.vocab_size, self.width)

        # Causal additive mask: position i may attend to j <= i only. Not part of the state dict.
        self.register_buffer("attn_mask", self.build_attention_mask(self.context_length), persistent=False)

        self.initialize_parameters()

    @staticmethod
    def build_attention_mask(length: int) -> torch.Tensor:
        """Return a (length, length) float mask with ``-inf`` strictly above the diagonal and 0 elsewhere."""
        return torch.full((length, length), float("-inf")).triu_(1)

    def initialize_parameters(self) -> None:
        """CLIP initialization: embeddings N(0, 0.02) / N(0, 0.01); block weights scaled by width and depth."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.width ** -0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        if not isinstance(text, torch.Tensor):
            raise TypeError(f"TextTransformer expects a LongTensor of token ids, got {type(text).__name__}")
        if text.dim() < 2 or text.shape[-1] != self.context_length:
            raise ValueError(
                f"TextTransformer expects token ids of shape (B, {self.context_length}) "
                f"(context_length={self.context_length}), got {tuple(text.shape)}"
            )
        if text.dtype.is_floating_point or text.dtype == torch.bool or text.is_complex():
            raise TypeError(f"TextTransformer expects integer token ids, got dtype {text.dtype}")

        lead_shape = text.shape[:-1]
        ids = text.reshape(-1, self.context_length).long()
        if ids.shape[0] == 0:
            return self.ln_final.weight.new_zeros(*lead_shape, self.width)

        x = self.token_embedding(ids) + self.positional_embedding  # (N, L, width)
        x = self.transformer(x, self.attn_mask)
        x = self.ln_final(x)
        eot_pos = ids.argmax(dim=-1)  # EOT has the largest id
        pooled = x[torch.arange(x.shape[0], device=x.device), eot_pos]  # (N, width)
        return pooled.reshape(*lead_shape, self.width)
